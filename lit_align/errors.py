"""User errors: the bottom floor every layer may raise from (imports nothing of lit_align).

A :class:`UserError` is a problem the user can fix: a config value, a file, a scorer, the
machine. Its message names the field / file (and line) / scorer and says what to do. From the
command line it prints as one paragraph (:func:`paragraph`), exit status 2, no traceback unless
``LIT_ALIGN_DEBUG=1``. It subclasses ``ValueError``, so ``except ValueError`` still catches it.
"""

from __future__ import annotations

import os
import re

DEBUG_ENV = "LIT_ALIGN_DEBUG"
EXIT_STATUS = 2


class UserError(ValueError):
    """A bad input, named with what to do about it (one paragraph, no traceback from the CLI)."""


def debug_enabled() -> bool:
    """True when ``LIT_ALIGN_DEBUG`` is set (to anything but '' or '0'): tracebacks are shown."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def shorten(text: object, width: int = 60) -> str:
    """``repr`` of ``text`` cut to about ``width`` characters (for quoting a sample in a message)."""
    text = str(text)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return repr(text)


def one_paragraph(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def paragraph(err: BaseException) -> str:
    """``error: [Name: ]message notes`` on one line; the class name is left out for a plain
    ``UserError``/``ValueError`` (the message says it all) and kept for named kinds
    (``CheckpointError``, ``DataFileError``, ...)."""
    notes = " ".join(getattr(err, "__notes__", ()))  # e.g. where last.ckpt was saved
    message = one_paragraph(f"{err} {notes}") or type(err).__name__
    name = type(err).__name__
    prefix = "" if type(err) in (UserError, ValueError) else f"{name}: "
    return f"error: {prefix}{message}"


def debug_hint() -> str:
    return f"(set {DEBUG_ENV}=1 to see the traceback)"


def chain(err: BaseException):
    """``err``, then its causes / contexts, outermost first (each once)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
