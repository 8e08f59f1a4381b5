"""What to do about a config error: the valid choices for an unknown class_path or option.

jsonargparse says *what* is wrong ("module 'lit_align.methods' has no attribute 'DGP'",
"Option 'n_sampels' is not accepted"); :func:`hint` adds the valid choices and the closest
match, and :class:`HintingParser` appends it to every parser error of the CLI.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser

_NO_ATTR = re.compile(r"class_path '([\w.]+)'.*?module '([\w.]+)' has no attribute '(\w+)'", re.S)
_NO_OPTION = re.compile(r"class_path '([\w.]+)'.*?Option '(\w+)' is not accepted", re.S)
_REQUIRED = re.compile(r"arguments are required: .*\b(model|data)\b")
_NO_MODULE = re.compile(r"class_path '([\w.]+)'.*?No module named '([\w.]+)'", re.S)


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def public_classes(module_name: str) -> list[str]:
    """The classes a module exports (its ``__all__``, else its public class attributes)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    return sorted(n for n in names if inspect.isclass(getattr(module, n, None)))


def accepted_options(cls) -> list[str]:
    """Keyword arguments of ``cls`` (following ``**kwargs`` up the class hierarchy)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return sorted(dict.fromkeys(names))


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _module_hint(class_path: str, module: str) -> str:
    return (f"\nhint: no module {module!r} for class_path {class_path!r}; lit_align's classes are in "
            "lit_align.methods, lit_align.data, lit_align.scorers, lit_align.targets, lit_align.callbacks")


def hint(message: str) -> str:
    """Extra lines for a parser error message ('' when there is nothing to add)."""
    try:
        if m := _NO_ATTR.search(message):
            class_path, module, name = m.groups()
            choices = public_classes(module)
            if choices:
                return (f"\nhint: {module} has no class {name!r}.{_closest(name, choices)} "
                        f"Valid choices: {', '.join(choices)}")
            return _module_hint(class_path, f"{module}.{name}")
        if m := _NO_OPTION.search(message):
            class_path, option = m.groups()
            choices = accepted_options(_import(class_path))
            return (f"\nhint: {class_path} has no option {option!r}.{_closest(option, choices)} "
                    f"Its options: {', '.join(choices)}")
        if m := _NO_MODULE.search(message):
            return _module_hint(*m.groups())
        if _REQUIRED.search(message):
            return ("\nhint: give a config with --config: a file, or a shipped config such as dpg_toy "
                    "(lit_align.cli.shipped_configs() lists them)")
    except Exception:  # a hint must never hide the original error
        return ""
    return ""


class HintingParser(LightningArgumentParser):
    """The CLI's parser: an error is one paragraph (the key, its class, the reason; see
    :func:`lit_align.cli_errors.parser_paragraph`) ending with the valid choices (:func:`hint`),
    exit status 2; with ``LIT_ALIGN_DEBUG=1`` jsonargparse's full message and usage."""

    def error(self, message: str, ex: Exception | None = None):
        from lit_align.cli_errors import parser_paragraph
        from lit_align.errors import EXIT_STATUS, debug_enabled

        extra = hint(message)
        if not self.exit_on_error or debug_enabled():
            return super().error(message + extra, ex)
        prog = self.prog.replace(" [options]", "")
        command = prog if prog.startswith("python") else " ".join(["python -m lit_align", *prog.split()[1:]])
        text = parser_paragraph(message) + extra.replace("\nhint: ", ". Hint: ")
        sys.stderr.write(f"error: {text} (`{command} --help` lists every option)\n")
        raise SystemExit(EXIT_STATUS)


def check_config_file(path: str) -> None:
    """Refuse a config file that is not UTF-8, not YAML (naming the file, line and column),
    empty or not a mapping."""
    import yaml

    from lit_align.errors import UserError

    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"config {path!r} is not UTF-8 text (line {line}, byte {err.start}); "
                        "save it as UTF-8") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UserError(f"config {path!r} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        raise UserError(f"config {path!r} is empty; it needs at least model: and data: (start from a shipped "
                        "config: python -m lit_align fit --config dpg_toy --print_config > my.yaml)")
    if not isinstance(loaded, dict):
        raise UserError(f"config {path!r} must be a YAML mapping (model:, data:, trainer:, ...), "
                        f"not a {type(loaded).__name__}")
