"""Token streams of scored documents packed into fixed-length chunks with per-token scores,
through a shuffle buffer, and a stream skip that wraps around epochs like the uninterrupted run.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from lit_align.data.corpus import Document

@dataclass(frozen=True)
class ControlTokens:
    """Conditional training's control tokens (Korbak et al. 2023, arXiv:2302.08582): ``aligned_id`` before a
    segment with ``score ≤ threshold``, else ``misaligned_id``; none with probability ``drop_fraction``."""

    aligned_id: int
    misaligned_id: int
    threshold: float
    drop_fraction: float = 0.0



# ------------------------------------------------------------------- packing
@dataclass
class PackingConfig:
    """What turns scored documents into chunks (see the module docstring)."""

    seq_len: int = 1024
    eos_id: int | None = None
    filter_threshold: float | None = None
    control: ControlTokens | None = None
    seed: int = 42
    drop_last: bool = False


def document_tokens(doc: Document, tokenized: list[list[int]], cfg: PackingConfig) -> tuple[list[int], list[float]]:
    """Token ids and per-token scores of one scored document (EOS first, control tokens if any)."""
    ids: list[int] = []
    scores: list[float] = []
    if cfg.eos_id is not None and doc.segments:
        ids.append(cfg.eos_id)
        scores.append(doc.scores[0])
    rng = random.Random(f"{cfg.seed}:{doc.index}") if cfg.control is not None else None
    for seg_ids, s in zip(tokenized, doc.scores):
        if cfg.control is not None and rng.random() >= cfg.control.drop_fraction:
            ids.append(cfg.control.aligned_id if s <= cfg.control.threshold else cfg.control.misaligned_id)
            scores.append(s)
        ids.extend(seg_ids)
        scores.extend([s] * len(seg_ids))
    return ids, scores


def pack(stream: Iterator[tuple[list[int], list[float], float]], cfg: PackingConfig) -> Iterator[dict]:
    """Cut a stream of documents ``(ids, scores, avg_score)`` into ``seq_len`` chunks."""
    n = cfg.seq_len
    buf_ids: list[int] = []
    buf_scores: list[float] = []
    buf_docs: list[float] = []
    for ids, scores, avg in stream:
        buf_ids += ids
        buf_scores += scores
        buf_docs += [avg] * len(ids)
        while len(buf_ids) >= n:
            yield _chunk(buf_ids[:n], buf_scores[:n], buf_docs[:n], n)
            del buf_ids[:n], buf_scores[:n], buf_docs[:n]
    if buf_ids and not cfg.drop_last:
        yield _chunk(buf_ids, buf_scores, buf_docs, n)


def _chunk(ids: list[int], scores: list[float], docs: list[float], n: int) -> dict:
    k = len(ids)
    pad = n - k
    return {
        "input_ids": torch.tensor(ids + [0] * pad, dtype=torch.long),
        "attention_mask": torch.tensor([1] * k + [0] * pad, dtype=torch.long),
        "token_scores": torch.tensor(scores + [0.0] * pad, dtype=torch.float32),
        "doc_scores": torch.tensor(docs + [0.0] * pad, dtype=torch.float32),
    }


def shuffled(items: Iterator, buffer_size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer: yields a random element of the last ``buffer_size`` seen."""
    if buffer_size <= 1:
        yield from items
        return
    buf: list = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        j = rng.randrange(buffer_size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


_END = object()


def skip_wrapping(make: Callable[[], Iterator], n: int) -> Iterator:
    """The items of ``make()`` from position ``n`` of the endless stream ``make() + make() + …``
    to the end of the pass holding that position (``n`` past an epoch wraps around it)."""
    items = make()
    done = 0
    while True:
        item = next(items, _END)
        if item is _END:
            if done == 0:
                return iter(())  # an empty epoch: nothing to continue
            items, n, done = make(), n % done, 0  # done = the epoch's length
            continue
        if done == n:
            return itertools.chain([item], items)
        done += 1
