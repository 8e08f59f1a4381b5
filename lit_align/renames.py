"""Names that changed: shipped config files and method parameters.

An old name must not silently mean nothing (or something else): a renamed config file given to
``--config``, or a renamed parameter given in a config file or on the command line, is refused
with a message that names the new one. The CLI calls :func:`check_arguments` on its argument
list before parsing it; :func:`upgrade_hparams` maps the hyperparameters of an older checkpoint.

A bottom floor (it imports only :mod:`lit_align.errors`): the CLI and the methods may use it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lit_align.errors import UserError

RENAMED_IN = "0.2"

#: old shipped config file -> new one (``<method>_<task>[_<variant>].yaml``)
CONFIG_RENAMES: dict[str, str] = {
    "toy_dpg.yaml": "dpg_toy.yaml",
    "toy_fdpg.yaml": "fdpg_toy.yaml",
    "gdc_single.yaml": "dpg_bio_single.yaml",
    "gdc_multiple.yaml": "dpg_bio_multiple.yaml",
    "gdc_multiple_equal.yaml": "dpg_bio_multiple_equal.yaml",
    "gdc_hybrid.yaml": "dpg_bio_hybrid.yaml",
    "qrs_female.yaml": "qrs_bio_single.yaml",
}

#: (class name, old parameter, new parameter): one meaning per name across methods
PARAMETER_RENAMES: tuple[tuple[str, str, str], ...] = (
    ("RLKL", "beta", "kl_coef"),
    ("RLOO", "beta", "kl_coef"),
    ("DPO", "beta", "kl_coef"),  # τ of IPO (loss_type: ipo) is `tau`, see renamed_parameter
    ("PMLE", "beta", "kl_coef"),
    ("PreferenceDistillation", "beta", "kl_coef"),
    ("PHF", "beta", "temperature"),
    ("RewardTilt", "beta", "temperature"),
)


class RenamedError(UserError):
    """A config file or parameter given under the name it had before lit_align ``RENAMED_IN``."""


def renamed_config(value: str) -> str | None:
    """The new name of a shipped config given by its old name (``toy_dpg``, ``configs/toy_dpg.yaml``)."""
    name = Path(value).name
    return CONFIG_RENAMES.get(name) or CONFIG_RENAMES.get(f"{name}.yaml")


def check_config_name(value: str) -> None:
    """Refuse an old shipped config name (call it only when ``value`` is not an existing file)."""
    new = renamed_config(value)
    if new is not None:
        raise RenamedError(f"config {value!r} was renamed {new} in lit_align {RENAMED_IN}; "
                           f"use --config {new}")


def _accepts(class_path: str, name: str) -> bool:
    """Whether the class still takes a keyword ``name`` (following ``**kwargs`` up its bases);
    False when it cannot be imported (the table then has the last word)."""
    module, _, cls_name = class_path.rpartition(".")
    found = []
    for candidate in [module] if module else ["lit_align.methods", "lit_align.targets"]:
        try:
            found.append(getattr(importlib.import_module(candidate), cls_name))
        except (ImportError, AttributeError, ValueError):
            continue
    if not found:
        return False
    cls = found[0]
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if name in params:
            return True
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return False
    return False


def renamed_parameter(class_path: str, old: str, init_args: Mapping | None = None) -> str | None:
    """The new name of parameter ``old`` of class ``class_path`` (full path or bare name), or None
    (also while the class still accepts ``old``: a rename takes effect with the class's own)."""
    cls = class_path.rpartition(".")[2]
    for klass, was, new in PARAMETER_RENAMES:
        if klass == cls and was == old and not _accepts(class_path, old):
            if cls == "DPO" and str((init_args or {}).get("loss_type", "")) == "ipo":
                return "tau"
            return new
    return None


def _message(where: str, new: str, class_path: str, source: str = "") -> str:
    cls = class_path.rpartition(".")[2]
    return (f"{where}{source} was renamed {new} in lit_align {RENAMED_IN} ({cls}); "
            f"write {where.rpartition('.')[0]}.{new}")


def _walk(node: Any, where: str) -> Iterator[tuple[str, str, Mapping]]:
    """(dotted path, class_path, init_args) of every ``class_path`` / ``init_args`` mapping."""
    if isinstance(node, Mapping):
        if isinstance(node.get("class_path"), str) and isinstance(node.get("init_args"), Mapping):
            yield where, node["class_path"], node["init_args"]
        for key, value in node.items():
            yield from _walk(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def check_config(config: Mapping, source: str = "") -> None:
    """Refuse a parsed config (a YAML mapping) that gives a renamed parameter under its old name."""
    for where, class_path, init_args in _walk(config, ""):
        for key in init_args:
            new = renamed_parameter(class_path, str(key), init_args)
            if new is not None:
                raise RenamedError(_message(f"{where}.init_args.{key}", new, class_path, source))


def _model_class(argv: list[str], configs: list[Mapping]) -> tuple[str | None, dict]:
    """The model's class_path and init_args as the config files (in order) then flags give them."""
    class_path, init_args = None, {}
    for config in configs:
        model = config.get("model")
        if isinstance(model, Mapping) and isinstance(model.get("class_path"), str):
            class_path, init_args = model["class_path"], dict(model.get("init_args") or {})
        elif isinstance(model, Mapping) and isinstance(model.get("init_args"), Mapping):
            init_args.update(model["init_args"])  # a later file overriding options of the same class
        elif isinstance(model, str):
            class_path = model
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--model", "--model.class_path"):
            class_path = value or (argv[i + 1] if i + 1 < len(argv) else None)
        elif flag == "--model.init_args.loss_type":
            init_args["loss_type"] = value or (argv[i + 1] if i + 1 < len(argv) else "")
    return class_path, init_args


def check_arguments(argv: list[str]) -> None:
    """Refuse renamed parameters in the ``--config`` files of ``argv`` and in its ``--model.*`` flags.

    Run on the argument list after config names were resolved, before the CLI parses it.
    """
    import yaml

    configs: list[Mapping] = []
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("--config", "-c") and i + 1 < len(argv) else None
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is None or not Path(value).is_file():
            continue
        try:
            config = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the CLI reports unreadable files itself
        if isinstance(config, Mapping):
            check_config(config, f" (in {value})")
            configs.append(config)
    class_path, init_args = _model_class(argv, configs)
    if class_path is None:
        return
    for arg in argv:
        flag = arg.partition("=")[0]
        for prefix in ("--model.init_args.", "--model."):
            key = flag[len(prefix):] if flag.startswith(prefix) else ""
            new = renamed_parameter(class_path, key, init_args) if key and "." not in key else None
            if new is not None:
                raise RenamedError(_message(flag, new, class_path, " (command line)"))


def stale_hparams(method: str, hparams: Mapping) -> list[str]:
    """The saved hyperparameters of a checkpoint that method ``method`` (a class name) no longer
    takes, each as ``old`` or ``old (now new)``: a checkpoint written before lit_align
    ``RENAMED_IN`` (a renamed parameter; sampling settings the offline methods dropped)."""
    try:
        getattr(importlib.import_module("lit_align.methods"), method)
    except AttributeError:  # a user's own method class: nothing to say about its parameters
        return []
    out = []
    for key in hparams:
        if key.startswith("_") or _accepts(method, key):
            continue
        new = renamed_parameter(method, key, hparams)
        out.append(f"{key} (now {new})" if new else key)
    return out


def upgrade_hparams(class_path: str, hparams: Mapping) -> dict:
    """``hparams`` of a checkpoint written before the renames, with the new parameter names."""
    out = dict(hparams)
    for key in list(out):
        new = renamed_parameter(class_path, key, hparams)
        if new is not None and new not in out:
            out[new] = out.pop(key)
    return out
