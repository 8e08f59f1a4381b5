"""Segment scores of a corpus, cached on disk (SQLite) by corpus, scorer and its settings, and
segmentation, each document by its content hash: a second run does not rescore.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Sequence


from lit_align.scorers.base import Scorer

# --------------------------------------------------------------------- scores
def scorer_key(scorer: Scorer) -> dict:
    settings = scorer.settings() if hasattr(scorer, "settings") else {}
    return {"class": f"{type(scorer).__module__}.{type(scorer).__qualname__}", "name": scorer.name, "settings": settings}


def score_document(scorer: Scorer, segments: Sequence[str]) -> list[float]:
    """Misalignment scores of one document's segments, each checked to lie in [0, 1]."""
    if not segments:
        return []
    if hasattr(scorer, "score_segments"):
        scores = [float(s) for s in scorer.score_segments(list(segments))]
    else:
        scores = scorer(list(segments)).tolist()
    if len(scores) != len(segments) or any(not 0.0 <= s <= 1.0 for s in scores):
        raise ValueError(f"scorer {scorer.name!r} must return one misalignment score in [0, 1] per segment")
    return scores


class ScoreCache:
    """Per-segment scores on disk: one SQLite file per (corpus, scorer, settings), documents by content hash.

    Safe for several processes (ranks, dataloader workers) writing at once. ``hits``/``misses``
    count look-ups of this process.
    """

    def __init__(self, folder: str | os.PathLike, key: dict) -> None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"scores-{digest}.sqlite"
        (self.folder / f"scores-{digest}.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=str))
        self.hits = self.misses = 0
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (doc TEXT PRIMARY KEY, scores TEXT)")
        return self._db

    @staticmethod
    def doc_hash(segments: Sequence[str]) -> str:
        h = hashlib.sha256()
        for s in segments:
            h.update(len(s).to_bytes(8, "little"))
            h.update(s.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def get_many(self, hashes: Sequence[str]) -> dict[str, list[float]]:
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        rows = self.db.execute(f"SELECT doc, scores FROM scores WHERE doc IN ({marks})", list(hashes)).fetchall()
        found = {doc: json.loads(s) for doc, s in rows}
        self.hits += len(found)
        self.misses += len(set(hashes) - set(found))
        return found

    def put_many(self, items: dict[str, list[float]]) -> None:
        if items:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)",
                                    [(k, json.dumps(v)) for k, v in items.items()])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict:  # a connection does not cross process boundaries
        state = dict(self.__dict__)
        state["_db"] = None
        return state
