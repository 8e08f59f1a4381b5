"""Records of a dataset as plain dicts: a local json/jsonl/csv/parquet file, a ``resource:``
sample shipped with lit_align, or a hub dataset (failing at once, with what to do, when it
cannot be reached); nested columns with dots.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence



RESOURCES = Path(__file__).resolve().parent.parent / "resources"
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetLoadError(RuntimeError):
    """A dataset name that cannot be resolved; the message says what to do instead."""


# ---------------------------------------------------------------------------- records
def _column(record: dict, path: str, where: str):
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def _check_columns(columns: Sequence[str], needed: Sequence[str | None], where: str, first: dict | None) -> None:
    for col in needed:
        if col is None:
            continue
        top = col.split(".")[0]
        if top not in columns:
            raise ValueError(
                f"{where}: no column {col!r} (it has columns {sorted(columns)}); "
                f"set source_column / reference_column to the right names"
            )
        if first is not None and "." in col:
            try:
                _column(first, col, where)
            except KeyError:
                raise ValueError(f"{where}: column {top!r} has no field {col!r} (first record: {first[top]!r:.200})") from None


def resolve_local(name: str) -> Path | None:
    """The file a dataset name points to (``resource:NAME`` or a path), or None for a hub name."""
    if name.startswith("resource:"):
        res = name[len("resource:"):]
        path = RESOURCES / res
        if not path.suffix:
            path = path.with_suffix(".jsonl")
        if not path.is_file():
            shipped = sorted(p.name for p in RESOURCES.glob("*.*") if p.suffix in _BUILDERS)
            raise FileNotFoundError(f"no shipped resource {res!r}; shipped: {shipped}")
        return path
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir():
            raise ValueError(f"dataset {name!r} is a folder: give a .json/.jsonl/.csv/.parquet file")
        return path
    if path.suffix.lower() in _BUILDERS or os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    return None


def load_records(name: str, split: str = "train", config_name: str | None = None,
                 offline_hint: str = "") -> list[dict] | None:
    """Records of a local file (all rows) or of one split of a hub dataset (None if the split is missing)."""
    import datasets

    path = resolve_local(name)
    if path is not None:
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"data file {str(path)!r}: unsupported type {path.suffix!r}; use one of {sorted(_BUILDERS)}")
        from lit_align.data.validate import DataFileError, check_data_file

        check_data_file(path)  # UTF-8, one JSON object per line, not empty: errors name the file and line
        try:
            ds = datasets.load_dataset(builder, data_files={"train": str(path)}, split="train")
        except Exception as err:  # e.g. a column whose type changes between records (Arrow)
            raise DataFileError(f"data file {str(path)!r} could not be read as a table: {type(err).__name__}: "
                                f"{str(err)[:300]}. Every record needs the same columns with the same types.") from err
        return [dict(r) for r in ds]
    from lit_align.models.loading import hub_reachable

    if not hub_reachable():
        raise DatasetLoadError(
            f"dataset {name!r} is not a local file and the Hugging Face hub is not reachable. {offline_hint}"
            "Or point `data.init_args.dataset` at a local .jsonl/.csv/.parquet file (and `model.init_args.model` "
            "at a local folder or `smollm2`)."
        )
    try:
        ds = datasets.load_dataset(name, config_name, split=split)
    except ValueError as err:
        if "split" in str(err).lower() and split != "train":
            return None
        raise DatasetLoadError(f"could not load dataset {name!r} (config {config_name!r}, split {split!r}): {err}") from err
    except (OSError, ConnectionError) as err:
        raise DatasetLoadError(f"could not load dataset {name!r} from the hub: {err}. {offline_hint}") from err
    return [dict(r) for r in ds]
