"""Checking a local data file before anything expensive reads it.

:func:`check_data_file` reads a ``.json`` / ``.jsonl`` / ``.csv`` file once and refuses, with
the file name and line number and what to do, what ``datasets`` would otherwise report as an
Arrow error deep in a traceback (or accept silently): bytes that are not UTF-8, a malformed
JSON line, a line that is not a JSON object, a file with no records. ``.parquet`` files are
binary and are left to ``datasets``. See docs/bad_inputs.md.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

__all__ = ["DataFileError", "check_data_file", "read_jsonl", "read_utf8"]
_JSON_SPACE = " \t\r\n"  # whitespace to JSON (str.strip would also drop \x1c, U+2028, ...)


class DataFileError(ValueError):
    """A local data file that cannot be read as records; the message names the file (and line)."""


def read_utf8(path: str | Path) -> str:
    """The file's text; refuses bytes that are not UTF-8, naming the line and byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataFileError(f"data file {str(path)!r} cannot be read: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFileError(
            f"data file {str(path)!r} is not UTF-8 text: line {line}, byte {err.start} "
            f"({data[err.start:err.start + 4]!r}); re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _parse_line(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"data file {str(path)!r}, line {number}: malformed JSON ({err.msg}, column {err.colno}): "
            f"{line.strip()[:80]!r}"
        ) from None
    except RecursionError:
        raise DataFileError(f"data file {str(path)!r}, line {number}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise DataFileError(
            f"data file {str(path)!r}, line {number}: expected a JSON object ({{\"column\": value, ...}}), "
            f"got {type(record).__name__}"
        )
    return record


def read_jsonl(path: str | Path, text: str | None = None) -> list[dict]:
    """The records of a JSON-lines file (blank lines skipped), with file and line in every error."""
    path = Path(path)
    text = read_utf8(path) if text is None else text
    # split on "\n" only (as datasets does): str.splitlines would also split inside strings at
    # U+2028, \x0b, \x1c, ... which JSON allows unescaped
    return [_parse_line(path, i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip(_JSON_SPACE)]


def _read_json(path: Path, text: str) -> list[dict]:
    """A ``.json`` file: one array of objects, or JSON lines (as ``datasets`` accepts both)."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as err:
        lines = [ln for ln in text.split("\n") if ln.strip(_JSON_SPACE)]
        if len(lines) > 1 and lines[0].lstrip().startswith("{"):
            return read_jsonl(path, text)  # JSON lines in a .json file: report the bad line
        raise DataFileError(
            f"data file {str(path)!r}: malformed JSON at line {err.lineno}, column {err.colno} ({err.msg})"
        ) from None
    except RecursionError:
        raise DataFileError(f"data file {str(path)!r}: JSON nested too deeply") from None
    if isinstance(whole, dict):
        return [whole]
    if isinstance(whole, list):
        for i, record in enumerate(whole):
            if not isinstance(record, dict):
                raise DataFileError(f"data file {str(path)!r}: item {i} of the array is a {type(record).__name__}, "
                                    "not a JSON object ({\"column\": value, ...})")
        return whole
    raise DataFileError(f"data file {str(path)!r}: expected an array of JSON objects or JSON lines, "
                        f"got a {type(whole).__name__}")


def check_data_file(path: str | Path) -> int:
    """Validate a local data file; return its number of records (raise DataFileError otherwise)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return -1  # binary: datasets reports its own errors
    text = read_utf8(path)
    if suffix == ".jsonl":
        records = read_jsonl(path, text)
    elif suffix == ".json":
        records = _read_json(path, text)
    elif suffix == ".csv":
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as err:
            raise DataFileError(f"data file {str(path)!r}: malformed CSV ({err})") from None
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        if rows and len(set(rows[0])) != len(rows[0]):
            raise DataFileError(f"data file {str(path)!r}: the CSV header {rows[0]} repeats a column name")
        records = rows[1:]
    else:
        return -1
    if not records:
        header_only = " (only a header)" if suffix == ".csv" else ""
        raise DataFileError(f"data file {str(path)!r} has no records{header_only}")
    return len(records)


def _stream_lines(path: Path):
    """``(number, text)`` of each line, read in binary and decoded one line at a time (large files stream)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFileError(
                    f"data file {str(path)!r} is not UTF-8 text: line {number}, byte {err.start} of the line "
                    f"({raw[err.start:err.start + 4]!r}); re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None


def iter_jsonl(path: str | Path):
    """Stream the records of a JSON-lines file (errors name the file and line, as :func:`read_jsonl`)."""
    path = Path(path)
    for number, line in _stream_lines(path):
        if line.strip(_JSON_SPACE):
            yield _parse_line(path, number, line)


def iter_text_lines(path: str | Path):
    """Stream the non-blank lines of a UTF-8 text file (without their newline)."""
    for _, line in _stream_lines(Path(path)):
        if line.strip():
            yield line.rstrip("\r\n")
