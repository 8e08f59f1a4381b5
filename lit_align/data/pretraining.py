"""Scored pretraining corpora for pretraining with human feedback (methods.md §5.1).

The pipeline, streamed document by document (the corpus is never held in memory):

1. **documents** from ``corpus``: ``stdlib`` (the Python standard library's own ``.py``
   files, one document each: the offline PEP8 corpus), ``resource:NAME`` (a file shipped in
   ``lit_align/resources``), a local ``.jsonl`` (one record per line, read as a stream),
   ``.json``/``.parquet``/``.csv`` (``datasets`` streaming), ``.txt`` (one document per
   non-empty line), a folder (every file matching ``glob``), or a Hugging Face hub dataset
   (streamed). A record holds its text in ``text_field``, or is already segmented: a list
   ``texts`` (and, with ``scorer: null``, its ``scores``: the paper's released datasets);
2. **segments**: sentences (prose), lines (code) or the whole document; joined back they
   give the document exactly;
3. **scores**: a misalignment score in [0, 1] per segment from ``scorer`` (a scorer with a
   ``score_segments`` method, like :class:`~lit_align.scorers.PEP8PerChar`, sees the whole
   document). Scores are cached on disk (SQLite, keyed by corpus, scorer and its settings,
   and segmentation; a document's entry by its content hash), so a second run does not
   rescore;
4. **tokens**: EOS before each document, then each segment tokenized on its own; every
   token carries its segment's score and its document's ``avg_score`` (mean segment score).
   Filtering drops documents with ``avg_score > threshold``; conditional training puts a
   control token before each segment (with probability ``1 − drop_fraction``);
5. **chunks** of ``seq_len`` tokens (the last one padded, ``attention_mask`` 0), through a
   shuffle buffer. Documents are sharded across ranks and dataloader workers.

A training run's data position (chunks consumed) is saved in the checkpoint; a resumed run
replays the stream (scores come from the cache) and skips what was consumed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import sqlite3
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lit_align.data.conditional import _STDLIB_SKIP, RESOURCES, DatasetLoadError
from lit_align.data.validate import iter_jsonl, iter_text_lines
from lit_align.scorers.base import Scorer

SEGMENTATIONS = ("sentences", "lines", "document")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*\n")


@dataclass(frozen=True)
class ControlTokens:
    """Conditional training's control tokens (methods.md §5.2): ``aligned_id`` before a
    segment with ``score ≤ threshold``, else ``misaligned_id``; none with probability ``drop_fraction``."""

    aligned_id: int
    misaligned_id: int
    threshold: float
    drop_fraction: float = 0.0


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


class PassCountingLoader(DataLoader):
    """A DataLoader that tells its :class:`ScoredChunks` (copied into each worker process) that
    its first pass has started, so a resumed or continued run skips consumed chunks in its first
    epoch only (Lightning iterates the same loader every epoch)."""

    def __iter__(self):
        it = super().__iter__()  # the single-process fetcher and the workers take the dataset now
        if isinstance(self.dataset, ScoredChunks):
            self.dataset.first_pass = False
        return it


class ScoredChunks(IterableDataset):
    """The packed, scored token stream of one split of a corpus (see the module docstring).

    ``split="val"`` takes every ``val_every``-th document (none if 0), the training split the others.
    ``skip_tokens`` (an earlier run's tokens, all ranks) and ``skip_chunks`` (this rank's, on
    resuming) set where the first pass starts in the endless stream epoch + epoch + … (every
    epoch has the same shuffled order), so that training continues exactly where the earlier
    run stopped, also past the end of an epoch; later passes are whole epochs.
    """

    def __init__(self, corpus: str, tokenizer, scorer: Scorer | None, packing: PackingConfig,
                 segmentation: str = "sentences", text_field: str = "text", hub_split: str = "train",
                 glob: str = "**/*.py", config_name: str | None = None, split: str = "train", val_every: int = 100,
                 max_documents: int | None = None, max_chunks: int | None = None, shuffle_buffer: int = 0,
                 skip_chunks: int = 0, skip_tokens: int = 0, batch_size: int = 1,
                 cache_dir: str | os.PathLike | None = None, score_batch: int = 32) -> None:
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if packing.seq_len < 2:
            raise ValueError(f"seq_len must be ≥ 2, got {packing.seq_len}")
        self.corpus, self.tokenizer, self.scorer, self.packing = corpus, tokenizer, scorer, packing
        self.segmentation, self.text_field, self.hub_split, self.glob = segmentation, text_field, hub_split, glob
        self.config_name, self.split, self.val_every = config_name, split, max(int(val_every), 0)
        self.max_documents, self.max_chunks, self.shuffle_buffer = max_documents, max_chunks, shuffle_buffer
        self.skip_chunks, self.skip_tokens, self.batch_size, self.score_batch = skip_chunks, skip_tokens, batch_size, score_batch
        self.first_pass = True  # skips apply to the first pass only (PassCountingLoader clears it)
        self.cache = None
        if scorer is not None:
            from lit_align.models.loading import cache_dir as default_cache

            key = {"corpus": str(resolve_corpus(corpus)), "hub_split": hub_split, "config_name": config_name,
                   "text_field": text_field, "segmentation": segmentation, "glob": glob, "scorer": scorer_key(scorer)}
            self.cache = ScoreCache(cache_dir or default_cache() / "phf_scores", key)

    # sharding: documents go round-robin to (rank, worker) shards
    def _shard(self) -> tuple[int, int, int, int]:
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers, worker, workers

    def _in_split(self, index: int) -> bool:
        if self.split == "all":
            return True
        held_out = self.val_every > 0 and (index + 1) % self.val_every == 0
        return held_out == (self.split == "val")

    def scored_documents(self, shard: int = 0, n_shards: int = 1) -> Iterator[Document]:
        """This shard's documents of the split, with scores (from the cache when there)."""
        docs = iter_documents(self.corpus, self.segmentation, self.text_field, self.hub_split, self.glob,
                              self.config_name, use_dataset_scores=self.scorer is None,
                              max_documents=self.max_documents)
        mine = (d for d in docs if self._in_split(d.index) and d.index % n_shards == shard)
        block: list[Document] = []
        for doc in mine:
            block.append(doc)
            if len(block) >= self.score_batch:
                yield from self._score_block(block)
                block = []
        yield from self._score_block(block)

    def _score_block(self, block: list[Document]) -> list[Document]:
        if self.scorer is None or not block:
            return block
        hashes = [ScoreCache.doc_hash(d.segments) for d in block]
        found = self.cache.get_many(hashes)
        new = {}
        for d, h in zip(block, hashes):
            if h in found:
                d.scores = found[h]
            else:
                d.scores = new[h] = score_document(self.scorer, d.segments)
        self.cache.put_many(new)
        return block

    def token_stream(self, shard: int = 0, n_shards: int = 1) -> Iterator[tuple[list[int], list[float], float]]:
        cfg = self.packing
        for doc in self.scored_documents(shard, n_shards):
            if not doc.segments:
                continue
            avg = sum(doc.scores) / len(doc.scores)
            if cfg.filter_threshold is not None and self.split != "val" and avg > cfg.filter_threshold:
                continue
            tokenized = self.tokenizer(list(doc.segments), add_special_tokens=False)["input_ids"]
            ids, scores = document_tokens(doc, tokenized, cfg)
            yield ids, scores, avg

    def epoch_chunks(self, shard: int = 0, n_shards: int = 1) -> Iterator[dict]:
        """One pass (epoch) over this shard's chunks, in training order (shuffled for ``train``)."""
        chunks = pack(self.token_stream(shard, n_shards), self.packing)
        if self.split == "train":
            chunks = shuffled(chunks, self.shuffle_buffer, random.Random(f"{self.packing.seed}:shuffle:{shard}"))
        return chunks

    def chunks_to_skip(self, worker: int = 0, workers: int = 1, world: int = 1) -> int:
        """Chunks of this (rank, worker) shard that earlier training consumed: ``skip_tokens``
        (of the whole earlier run, all ranks) plus ``skip_chunks`` (this rank's, on resuming)."""
        consumed = self.skip_tokens // (self.packing.seq_len * max(world, 1)) + self.skip_chunks
        if workers <= 1:
            return consumed
        # batch j of this rank came from worker j % workers (DataLoader round robin)
        batches_done = -(-consumed // max(self.batch_size, 1))
        return max(0, -(-(batches_done - worker) // workers)) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        # not a generator: the position is read when the pass starts, not at its first chunk
        shard, n_shards, worker, workers = self._shard()
        skip = self.chunks_to_skip(worker, workers, n_shards // workers) if self.first_pass else 0
        if get_worker_info() is None:
            self.first_pass = False  # (in workers, PassCountingLoader does it in the main process)
        return self._iterate(shard, n_shards, skip)

    def _iterate(self, shard: int, n_shards: int, skip: int) -> Iterator[dict]:
        chunks = skip_wrapping(lambda: self.epoch_chunks(shard, n_shards), skip)
        for i, chunk in enumerate(chunks):
            if self.max_chunks is not None and i >= self.max_chunks:
                break
            yield chunk


# --------------------------------------------------------------- data module
class PretrainingDataModule(L.LightningDataModule):
    """Batches of scored chunks for PHF (:class:`~lit_align.methods.PHF`): ``input_ids``,
    ``attention_mask``, ``token_scores`` and ``doc_scores``, each (batch_size, seq_len).

    Args:
        corpus: see the module docstring (``stdlib``, ``resource:NAME``, a file/folder, a hub name).
        scorer: the misalignment scorer; ``null`` uses the corpus's own ``texts``/``scores``.
        segmentation: ``sentences`` (prose), ``lines`` (code) or ``document``.
        seq_len: tokens per chunk (the paper: 1024).
        batch_size: chunks per training step (the effective batch; the method's
            ``minibatch_size`` sets the chunks per forward pass).
        shuffle_buffer: chunks in the shuffle buffer (the paper: 20,000).
        val_every: every ``val_every``-th document is held out for the LM loss (0: none).
        max_val_chunks: chunks of held-out text per validation.
        tokenizer: defaults to the trained module's tokenizer (with its control tokens).
        filter_threshold / control: normally set by the method (``PHF.pretraining_options``).
        skip_tokens: start the training stream after this many tokens of an earlier run
            (all ranks; ``steps × batch_size × seq_len × ranks``), wrapping around epochs like
            the uninterrupted stream: fine-tuning continues where the pretraining stopped
            (methods.md §5.3). Exact when the earlier run had the same stream (objective,
            seq_len, shuffle_buffer, seed); with another objective it is the same number of
            chunks into that objective's stream (control tokens lengthen it, filtering shortens it).
        cache_dir: where score caches live (default ``$LIT_ALIGN_CACHE/phf_scores``).
    """

    def __init__(self, corpus: str = "stdlib", scorer: Scorer | None = None, segmentation: str = "sentences",
                 text_field: str = "text", hub_split: str = "train", config_name: str | None = None,
                 glob: str = "**/*.py", seq_len: int = 1024, batch_size: int = 64, val_batch_size: int | None = None,
                 shuffle_buffer: int = 20000, seed: int = 42, val_every: int = 100, max_val_chunks: int = 64,
                 max_documents: int | None = None, skip_tokens: int = 0, num_workers: int = 0,
                 cache_dir: str | None = None, tokenizer=None, filter_threshold: float | None = None,
                 control: ControlTokens | None = None) -> None:
        super().__init__()
        if segmentation not in SEGMENTATIONS:
            raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
        for name, v in (("seq_len", seq_len), ("batch_size", batch_size)):
            if v < 1:
                raise ValueError(f"{name} must be ≥ 1, got {v}")
        if val_every < 0:
            raise ValueError(f"val_every must be ≥ 0 (0: no held-out documents), got {val_every}")
        resolve_corpus(corpus)  # a missing local file fails here, before any model is loaded
        self.corpus, self.scorer, self.segmentation, self.text_field = corpus, scorer, segmentation, text_field
        self.hub_split, self.config_name, self.glob = hub_split, config_name, glob
        self.seq_len, self.batch_size, self.val_batch_size = seq_len, batch_size, val_batch_size or batch_size
        self.shuffle_buffer, self.seed, self.val_every, self.max_val_chunks = shuffle_buffer, seed, val_every, max_val_chunks
        self.max_documents, self.skip_tokens, self.num_workers = max_documents, skip_tokens, num_workers
        self.cache_dir, self.tokenizer, self.filter_threshold, self.control = cache_dir, tokenizer, filter_threshold, control
        self.resume_chunks = 0

    def _options(self) -> tuple[object, float | None, ControlTokens | None]:
        module = self.trainer.lightning_module if self.trainer is not None else None
        tok, threshold, control = self.tokenizer, self.filter_threshold, self.control
        if module is not None and hasattr(module, "pretraining_options"):
            opts = module.pretraining_options()
            tok = tok or opts.get("tokenizer")
            threshold = threshold if threshold is not None else opts.get("filter_threshold")
            control = control or opts.get("control")
        if tok is None:
            raise ValueError("PretrainingDataModule needs a tokenizer: pass `tokenizer=` or train a PHF module")
        return tok, threshold, control

    def dataset(self, split: str = "train") -> ScoredChunks:
        tok, threshold, control = self._options()
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
        packing = PackingConfig(self.seq_len, eos, threshold, control, self.seed)
        train = split == "train"
        return ScoredChunks(
            self.corpus, tok, self.scorer, packing, self.segmentation, self.text_field, self.hub_split, self.glob,
            self.config_name, split, self.val_every, self.max_documents,
            max_chunks=None if train else self.max_val_chunks, shuffle_buffer=self.shuffle_buffer if train else 0,
            skip_chunks=self.resume_chunks if train else 0, skip_tokens=self.skip_tokens if train else 0,
            batch_size=self.batch_size, cache_dir=self.cache_dir)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        self.resume_chunks = 0  # a later epoch starts from the beginning
        return PassCountingLoader(ds, batch_size=self.batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.val_batch_size)

    def state_dict(self) -> dict:
        """The data position: chunks consumed by this rank (one batch per training step)."""
        step = self.trainer.global_step if self.trainer is not None else 0
        return {"chunks_consumed": int(step) * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.resume_chunks = int(state.get("chunks_consumed", 0))
