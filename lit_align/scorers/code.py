"""Code scorers for CDPG's code tasks (Korbak et al. 2022, arXiv:2112.00791): compilability and PEP8.

The context is a function's signature (and docstring); the sample continues it. The
program that is scored is assembled by :func:`assemble_program`:

1. if the sample holds a Markdown code block (chat models answer that way), only the
   block's contents are kept (an unclosed block runs to the end);
2. if that code itself starts a top-level ``def``/``class``/``import``/decorator (a chat
   model repeated the whole function), it is the program;
3. otherwise the sample is the body: it is cut at its first non-empty line that is not
   indented (the function ended there; the paper keeps indented lines only), and appended
   to the signature taken from the context (from its first line starting with ``def``,
   ``async def`` or ``@``; instructions before it are ignored). An empty body (nothing
   but blank lines) gives no program: otherwise a prompt with a docstring would compile
   with no code written at all.

``Compilable``: ``b = 1`` iff ``codeop.compile_command(program, symbol="exec")`` returns a
code object (an incomplete but valid prefix counts 0 unless ``partial``). ``PEP8``:
``b = 1`` iff the program is not empty and pycodestyle reports at most ``max_errors`` violations; ``PEP8Errors`` is the
count itself (a metric, not binary).
"""

from __future__ import annotations

import codeop
import re
import warnings
from typing import Sequence

from lit_align.contexts import source_of
from lit_align.scorers.base import Scorer

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_TOPLEVEL = re.compile(r"^(?:async\s+def|def|class|import|from|@)\b", re.MULTILINE)


def code_prefix(context: str) -> str:
    """The code part of a context: from its first ``def``/``async def``/``@`` line on (fences removed)."""

    text = source_of(context)
    m = re.search(r"^(?:async\s+def|def|@)", text, re.MULTILINE)
    code = text[m.start():] if m else text
    code = re.sub(r"^```.*$\n?", "", code, flags=re.MULTILINE)
    return code if code.endswith("\n") else code + "\n"


def assemble_program(text: str, context: str | None) -> str:
    """The program a sample stands for (see the module docstring)."""
    fenced = _FENCE.search(text)
    code = fenced.group(1) if fenced else text
    if _TOPLEVEL.match(code.lstrip("\n")) and not code.startswith((" ", "\t")):
        program = code.lstrip("\n")
    else:
        kept = []
        for line in code.split("\n"):
            if line.strip() and not line[:1].isspace():
                break
            kept.append(line)
        body = "\n".join(kept).rstrip()
        if not body.strip():
            return ""
        program = (code_prefix(context) if context is not None else "") + body
    return program.rstrip() + "\n"


def compiles(program: str, partial: bool = False) -> bool:
    """Whether ``program`` compiles (``codeop``; None = incomplete, counted as ``partial``; empty: False)."""
    if not program.strip():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes and the like
        try:
            code = codeop.compile_command(program, "<sample>", "exec")
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
            return False
    return code is not None or partial


class Compilable(Scorer):
    """1 iff signature + sampled body compiles (``codeop``, as in the CDPG code)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, partial: bool = False, name: str | None = "compilable") -> None:
        super().__init__(name)
        self.partial = partial

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        ctxs = contexts if contexts is not None else [None] * len(texts)
        return [float(compiles(assemble_program(t, c), self.partial)) for t, c in zip(texts, ctxs)]


def pep8_error_count(program: str, ignore: Sequence[str] = (), max_line_length: int = 79) -> int:
    """Number of pycodestyle violations of ``program`` (raises ImportError without pycodestyle)."""
    import pycodestyle

    style = pycodestyle.StyleGuide(quiet=True, ignore=list(ignore) or None, max_line_length=max_line_length)
    lines = program.splitlines(keepends=True)
    checker = pycodestyle.Checker(lines=lines, options=style.options)
    checker.report.start()
    return int(checker.check_all())


def _require_pycodestyle(what: str) -> None:
    try:
        import pycodestyle  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{what} needs pycodestyle: pip install pycodestyle (or lit-align[code])") from err


class PEP8Errors(Scorer):
    """The number of PEP8 violations (pycodestyle) of signature + sampled body."""

    low = 0.0

    def __init__(self, ignore: Sequence[str] = (), max_line_length: int = 79, name: str | None = "pep8_errors") -> None:
        super().__init__(name)
        _require_pycodestyle(type(self).__name__)
        self.ignore, self.max_line_length = list(ignore), max_line_length

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        ctxs = contexts if contexts is not None else [None] * len(texts)
        return [float(pep8_error_count(assemble_program(t, c), self.ignore, self.max_line_length))
                for t, c in zip(texts, ctxs)]


class PEP8(PEP8Errors):
    """1 iff pycodestyle reports at most ``max_errors`` violations (the paper: 0)."""

    binary = True
    low, high = 0.0, 1.0

    def __init__(self, max_errors: int = 0, ignore: Sequence[str] = (), max_line_length: int = 79,
                 name: str | None = "pep8") -> None:
        super().__init__(ignore, max_line_length, name)
        self.max_errors = max_errors

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        ctxs = contexts if contexts is not None else [None] * len(texts)
        programs = [assemble_program(t, c) for t, c in zip(texts, ctxs)]
        # an empty body is no program: it is not counted as clean code
        return [float(bool(p.strip()) and pep8_error_count(p, self.ignore, self.max_line_length) <= self.max_errors)
                for p in programs]


def pep8_error_lines(program: str, ignore: Sequence[str] = (), max_line_length: int = 79) -> list[int]:
    """The 1-based line number of every pycodestyle violation of ``program`` (one entry per violation)."""
    import pycodestyle

    lines_hit: list[int] = []

    class _Report(pycodestyle.BaseReport):
        def error(self, line_number, offset, text, check):  # noqa: ANN001 - pycodestyle's signature
            code = super().error(line_number, offset, text, check)
            if code is not None:
                lines_hit.append(int(line_number))
            return code

    style = pycodestyle.StyleGuide(quiet=True, ignore=list(ignore) or None, max_line_length=max_line_length)
    checker = pycodestyle.Checker(lines=program.splitlines(keepends=True), options=style.options, report=_Report(style.options))
    try:
        checker.check_all()
    except IndexError:
        # pycodestyle 2.15 crashes on some malformed programs (samples of small models): its E402
        # check indexes past a one-letter logical line `u`/`b`/`r`, its continued-indentation check
        # (E12x, E13x) past a string token that ends beyond the logical line. Check again without
        # the check that may have crashed; if even that fails, every non-blank line counts as one
        # violation (code pycodestyle cannot read is not clean code).
        for skip in (["E402"], ["E12", "E13"]):
            if not set(skip) <= set(ignore):
                return pep8_error_lines(program, sorted({*ignore, *skip}), max_line_length)
        return [i for i, line in enumerate(program.splitlines(), 1) if line.strip()]
    return lines_hit


class PEP8PerChar(Scorer):
    """PEP8 misalignment score of pretraining with feedback (Korbak et al. 2023,
    arXiv:2302.08582): pycodestyle violations per character, in [0, 1] (clipped).

    On whole texts (``__call__``) each text is checked as one program. On a document's lines
    (:meth:`score_segments`) the document is checked as a whole and each line gets the
    violations reported on it divided by its length (empty segments: 0), so context-dependent
    checks (indentation, blank lines between definitions) are judged in context.
    """

    low, high = 0.0, 1.0

    def __init__(self, ignore: Sequence[str] = (), max_line_length: int = 79, name: str | None = "pep8_per_char") -> None:
        super().__init__(name)
        _require_pycodestyle(type(self).__name__)
        self.ignore, self.max_line_length = list(ignore), max_line_length

    def settings(self) -> dict:
        return {"ignore": self.ignore, "max_line_length": self.max_line_length}

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> list[float]:
        out = []
        for t in texts:
            n = len(pep8_error_lines(t if t.endswith("\n") or not t else t + "\n", self.ignore, self.max_line_length))
            out.append(min(1.0, n / len(t)) if t else 0.0)
        return out

    def score_segments(self, segments: Sequence[str]) -> list[float]:
        """Per-line scores of one document split into lines (``splitlines(keepends=True)``)."""
        doc = "".join(segments)
        counts = [0] * len(segments)
        # a segment may hold several physical lines (or none, when it is empty): map line numbers
        starts, line = [], 1
        for seg in segments:
            starts.append(line)
            line += seg.count("\n")
        import bisect

        for ln in pep8_error_lines(doc, self.ignore, self.max_line_length):
            counts[max(0, bisect.bisect_right(starts, ln) - 1)] += 1
        return [min(1.0, c / len(s)) if s else 0.0 for c, s in zip(counts, segments)]
