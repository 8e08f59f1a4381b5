"""Scored pretraining corpora for pretraining with human feedback (Korbak et al. 2023,
arXiv:2302.08582).

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

import os
import random
from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lit_align.data.corpus import (  # noqa: F401 - re-exported
    SEGMENTATIONS,
    Document,
    iter_documents,
    iter_records,
    resolve_corpus,
    segment,
    stdlib_files,
)
from lit_align.data.packing import (  # noqa: F401 - re-exported
    ControlTokens,
    PackingConfig,
    document_tokens,
    pack,
    shuffled,
    skip_wrapping,
)
from lit_align.data.score_cache import ScoreCache, score_document, scorer_key  # noqa: F401
from lit_align.data.validate import DataFileError
from lit_align.scorers.base import Scorer


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
        i = -1
        for i, chunk in enumerate(chunks):
            if self.max_chunks is not None and i >= self.max_chunks:
                break
            yield chunk
        if i < 0 and self.split == "train":
            # an empty epoch would otherwise repeat forever (max_epochs: -1, max_steps never reached)
            raise DataFileError(
                f"corpus {self.corpus!r}: the training stream is empty"
                + (f" for data shard {shard} of {n_shards}" if n_shards > 1 else "")
                + f" ({self.max_documents or 'all'} documents, every {self.val_every}th held out; filtering keeps "
                "documents scoring ≤ its threshold). Use more documents (max_documents), a higher filtering "
                "threshold, or check that the corpus path/glob matches files."
            )


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
        tokenizer: defaults to the one the method connects (with its control tokens).
        filter_threshold / control: normally set by the method through :meth:`connect`.
        skip_tokens: start the training stream after this many tokens of an earlier run
            (all ranks; ``steps × batch_size × seq_len × ranks``), wrapping around epochs like
            the uninterrupted stream: fine-tuning continues where the pretraining stopped
            (as in the fine-tuning experiments of Korbak et al. 2023). Exact when the earlier run
            had the same stream (objective, seq_len, shuffle_buffer, seed); with another objective it is the same number of
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
        self._given = (tokenizer, filter_threshold, control)
        self.resume_chunks = 0

    def connect(self, tokenizer, filter_threshold: float | None = None, control: ControlTokens | None = None) -> None:
        """Set what the objective decides (the method calls this once its tokenizer exists): the
        tokenizer (with its control tokens), the document filter and the control tokens.
        Values given to the constructor win."""
        given_tok, given_threshold, given_control = self._given
        self.tokenizer = given_tok or tokenizer
        self.filter_threshold = given_threshold if given_threshold is not None else filter_threshold
        self.control = given_control or control

    def _options(self) -> tuple[object, float | None, ControlTokens | None]:
        if self.tokenizer is None:
            raise ValueError("PretrainingDataModule needs a tokenizer: pass `tokenizer=` or train a PHF module "
                             "(it connects the data module to its tokenizer)")
        return self.tokenizer, self.filter_threshold, self.control

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
