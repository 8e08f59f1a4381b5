"""Pretraining corpora as streams of documents split into segments (as in Korbak et al. 2023,
arXiv:2302.08582): the standard library's source, shipped resources, local files or a hub
dataset; the segments of a document concatenate back to it exactly.
"""

from __future__ import annotations

import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


from lit_align.data.records import RESOURCES, DatasetLoadError
from lit_align.data.stdlib_code import _STDLIB_SKIP
from lit_align.data.validate import iter_jsonl, iter_text_lines

SEGMENTATIONS = ("sentences", "lines", "document")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")



@dataclass
class Document:
    index: int
    segments: list[str]
    scores: list[float] | None = None



# ------------------------------------------------------------------ documents
def segment(text: str, mode: str = "sentences") -> list[str]:
    """Split ``text`` into segments whose concatenation is ``text``."""
    if mode == "lines":
        return text.splitlines(keepends=True)
    if mode == "document":
        return [text] if text else []
    if mode != "sentences":
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {mode!r}")
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def stdlib_files(root: str | None = None) -> Iterator[Path]:
    """The standard library's ``.py`` files in a fixed order (tests and GUI packages skipped)."""
    root = root or sysconfig.get_paths()["stdlib"]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP)
        for name in sorted(f for f in filenames if f.endswith(".py")):
            yield Path(dirpath) / name


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def resolve_corpus(corpus: str) -> Path | str:
    """A local path for ``resource:NAME`` / existing paths; ``"stdlib"`` or a hub name unchanged."""
    if corpus == "stdlib":
        return corpus
    if corpus.startswith("resource:"):
        path = RESOURCES / corpus[len("resource:"):]
        if not path.exists():
            raise FileNotFoundError(f"corpus {corpus!r}: no such resource in {RESOURCES}")
        return path
    path = Path(corpus).expanduser()
    if path.exists():
        return path.resolve()
    if path.suffix in (".jsonl", ".json", ".parquet", ".csv", ".txt") or corpus.startswith((".", "/", "~")):
        raise FileNotFoundError(f"corpus file {corpus!r} does not exist")
    return corpus


def iter_records(corpus: str, split: str = "train", glob: str = "**/*.py", config_name: str | None = None) -> Iterator:
    """Records (``str`` texts or ``dict`` rows) of a corpus, streamed."""
    where = resolve_corpus(corpus)
    if where == "stdlib":
        for path in stdlib_files():
            text = _read_text(path)
            if text:
                yield text
        return
    if isinstance(where, Path):
        if where.is_dir():
            for path in sorted(where.glob(glob)):
                text = _read_text(path) if path.is_file() else None
                if text:
                    yield text
        elif where.suffix == ".jsonl":
            yield from iter_jsonl(where)  # streamed; a bad line is a DataFileError naming file and line
        elif where.suffix == ".txt":
            yield from iter_text_lines(where)
        else:
            import datasets

            builder = {".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(where.suffix)
            if builder is None:
                raise ValueError(f"corpus {corpus!r}: unsupported file type {where.suffix!r} "
                                 "(use .jsonl, .json, .parquet, .csv, .txt or a folder)")
            yield from datasets.load_dataset(builder, data_files=str(where), split="train", streaming=True)
        return
    yield from _hub_records(where, split, config_name)


def _hub_records(name: str, split: str, config_name: str | None) -> Iterator[dict]:
    import datasets

    from lit_align.models.loading import hub_reachable

    hint = ("Offline, set `corpus:` to a local .jsonl/.parquet/.txt file or folder, `resource:phf_prose.jsonl`, "
            "or `stdlib` (Python code).")
    if not hub_reachable():
        raise DatasetLoadError(f"corpus {name!r} is not a local file and the Hugging Face hub is not reachable. {hint}")
    try:
        stream = datasets.load_dataset(name, config_name, split=split, streaming=True)
    except Exception as err:  # the hub's errors are many; all mean the same to the user
        raise DatasetLoadError(f"could not stream corpus {name!r} (split {split!r}) from the hub: {err}. {hint}") from err
    yield from stream


def iter_documents(corpus: str, segmentation: str = "sentences", text_field: str = "text", split: str = "train",
                   glob: str = "**/*.py", config_name: str | None = None, use_dataset_scores: bool = False,
                   max_documents: int | None = None) -> Iterator[Document]:
    """Segmented documents of a corpus, numbered in stream order."""
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    for i, rec in enumerate(iter_records(corpus, split, glob, config_name)):
        if max_documents is not None and i >= max_documents:
            return
        scores = None
        if isinstance(rec, str):
            segs = segment(rec, segmentation)
        elif "texts" in rec and text_field not in rec:
            segs = [str(t) for t in rec["texts"]]
            if use_dataset_scores:
                if "scores" not in rec:
                    raise ValueError(f"corpus {corpus!r} record {i} has `texts` but no `scores`; set a `scorer:`")
                scores = [float(s) for s in rec["scores"]]
        elif text_field in rec:
            segs = segment(str(rec[text_field]), segmentation)
        else:
            raise ValueError(f"corpus {corpus!r} record {i} has no field {text_field!r} (fields: {sorted(rec)}); "
                             "set `text_field:`")
        if use_dataset_scores and scores is None:
            raise ValueError(f"corpus {corpus!r} record {i} carries no `texts`/`scores`; set a `scorer:`")
        yield Document(i, segs, scores)
