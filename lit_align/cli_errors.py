"""Which errors are the user's to fix, and how they read: one paragraph, no traceback.

- :func:`user_error_of`: given what the CLI caught, the exception to show (or None for a bug,
  which keeps its traceback). jsonargparse wraps an error raised in a class's ``__init__``
  ("n_samples must be an integer ≥ 1") in a union dump; the original is its cause, found here.
- :func:`parser_paragraph`: jsonargparse's many-line parser message reduced to the key that
  is wrong, the class it belongs to and the innermost reason.
"""

from __future__ import annotations

import re
import traceback

from lit_align.errors import UserError, chain, one_paragraph

# file-system errors are about the user's paths; a MisconfigurationException is Lightning's word
# for a bad Trainer argument
_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _library_errors() -> tuple[type[BaseException], ...]:
    """lit_align's named error kinds that are not ValueErrors (imported late: the CLI's floor)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lit_align.data.conditional import DatasetLoadError
    from lit_align.models.loading import ModelLoadError
    from lit_align.moment_matching import MomentMatchingError

    return (ModelLoadError, DatasetLoadError, MomentMatchingError, MisconfigurationException)


def user_kinds() -> tuple[type[BaseException], ...]:
    """Exception classes shown as one paragraph: ``UserError``/``ValueError`` (the project's
    convention for bad input), the library's load errors, and file-system errors."""
    from lit_align.callbacks.task_metrics import MissingMetricPackage
    from lit_align.distributed import UnsupportedStrategyError

    import torch

    return (UserError, ValueError, *_OS_ERRORS, MissingMetricPackage, UnsupportedStrategyError, torch.OutOfMemoryError,
            *_library_errors())


OOM_ADVICE = ("the model, its samples and their gradients do not fit in the device's memory: lower "
              "model.init_args.minibatch_size (samples per forward/backward; the step is unchanged) or n_samples, "
              "shorten max_new_tokens, or use trainer.precision: bf16-mixed, gradient_checkpointing: true or LoRA")


def advice(err: BaseException) -> str:
    """What to do, for errors whose own message does not say (an out-of-memory error)."""
    import torch

    return f" ({OOM_ADVICE})" if isinstance(err, torch.OutOfMemoryError) else ""


def _raised_in_jsonargparse(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and "jsonargparse" in frames[-1].filename


def user_error_of(err: BaseException) -> BaseException | None:
    """The user-facing error in ``err``'s chain (innermost non-jsonargparse one first), else None."""
    kinds = user_kinds()
    found = [e for e in chain(err) if isinstance(e, kinds)]
    own = [e for e in found if not _raised_in_jsonargparse(e)]
    if own:
        return next((e for e in own if isinstance(e, UserError)), own[0])
    return found[0] if found and isinstance(err, kinds) else None


_NOISE = re.compile(r"^\s*(Subtypes:|Errors:|Given value type:|Given value:|Does not validate against any of the Union"
                    r"|- Expected a <class 'NoneType'>|tip: )")
_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")


def parser_paragraph(message: str) -> str:
    """jsonargparse's error ``message`` as one line: ``KEY (CLASS): REASON``.

    The key path is rebuilt from the nested 'Parser key' / 'class_path' lines (``init_args``
    between a class and its option); the reason is the innermost line left once the union
    boilerplate (subtypes, the None alternative, the given value) is removed; sibling
    'Expected a …' alternatives are joined with 'or', and the given value is named."""
    given = re.search(r"^\s*Given value: (.{1,80})$", message, re.M)
    lines = [ln for ln in message.splitlines() if ln.strip() and not _NOISE.match(ln)]
    keys: list[str] = []
    classes: list[str] = []
    reasons: list[tuple[int, str]] = []  # (indent, text)
    for ln in lines:
        indent = len(ln) - len(ln.lstrip())
        text = ln.strip().lstrip("- ").strip()
        m = _KEY.search(text) or _CLASS.search(text)
        if m:
            keys.append(m.group(1) if m.re is _KEY else "init_args")
            if m.re is _CLASS:
                classes.append(m.group(1))
            text = text[m.end():].lstrip(": ").strip()
        if text:
            reasons.append((indent, text))
    while keys and keys[-1] == "init_args":
        keys.pop()
    reason = _innermost(reasons) if reasons else one_paragraph(message)
    if given and "Got value" not in reason and "Expected" in reason:
        reason += f". Got value: {given.group(1)}"
    where = ".".join(keys)
    owner = f" ({classes[-1]})" if classes else ""
    return one_paragraph(f"{where}{owner}: {reason}" if where else reason)


def _innermost(reasons: list[tuple[int, str]]) -> str:
    """The last reason, or the last run of sibling 'Expected a …' alternatives joined by 'or'."""
    indent, last = reasons[-1]
    run = [last]
    for ind, text in reversed(reasons[:-1]):
        if ind != indent or not text.startswith("Expected a") or not last.startswith("Expected a"):
            break
        run.insert(0, text)
    if len(run) == 1:
        return last
    return "Expected a " + ", or ".join(t[len("Expected a "):] for t in run)
