"""The PHF data pipeline (Korbak et al. 2023, arXiv:2302.08582): segmenting, scoring, caching, packing, sharding, resuming."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from lit_align.data.pretraining import (ControlTokens, PackingConfig, PretrainingDataModule, ScoredChunks, segment,
                                        stdlib_files)
from lit_align.models.loading import byte_tokenizer
from lit_align.scorers.base import Scorer

DOCS = [
    "Hello there. This is fine! Is it? yes.",
    "xx marks the spot. Nothing else here.",
    "One sentence only",
    "A clean one. Then xxxx bad x one. Then fine.",
    "x",
    "Another document. With two sentences.",
    "Last one here. The end.",
]


class XRate(Scorer):
    """Fraction of ``x`` characters; counts how many texts it scored."""

    low, high = 0.0, 1.0

    def __init__(self, name: str = "xrate") -> None:
        super().__init__(name)
        self.calls = 0

    def settings(self) -> dict:
        return {"char": "x"}

    def score(self, texts, contexts=None):
        self.calls += len(texts)
        return [t.count("x") / len(t) if t else 0.0 for t in texts]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    return path


def make(corpus, tmp_path, scorer=None, split="all", **kw):
    tok = byte_tokenizer()
    packing = PackingConfig(seq_len=kw.pop("seq_len", 16), eos_id=tok.eos_token_id,
                            filter_threshold=kw.pop("filter_threshold", None), control=kw.pop("control", None))
    return ScoredChunks(str(corpus), tok, scorer or XRate(), packing, split=split, cache_dir=tmp_path / "cache", **kw)


def expected_stream(scorer=XRate()):
    tok = byte_tokenizer()
    ids, scores = [], []
    for d in DOCS:
        segs = segment(d, "sentences")
        s = scorer(segs).tolist()
        ids.append(tok.eos_token_id)
        scores.append(s[0])
        for seg, si in zip(segs, s):
            t = tok(seg, add_special_tokens=False)["input_ids"]
            ids += t
            scores += [si] * len(t)
    return ids, scores


def flatten(chunks):
    ids, scores = [], []
    for c in chunks:
        m = c["attention_mask"].bool()
        ids += c["input_ids"][m].tolist()
        scores += c["token_scores"][m].tolist()
    return ids, scores


@pytest.mark.parametrize("mode", ["sentences", "lines", "document"])
def test_segments_join_back_to_the_document(mode):
    text = "First line. Second sentence!\n  indented line\n\nNew para? yes\nlast"
    segs = segment(text, mode)
    assert "".join(segs) == text
    assert len(segs) == {"sentences": 5, "lines": 5, "document": 1}[mode]


def test_chunking_preserves_every_token_and_score(corpus, tmp_path):
    chunks = list(make(corpus, tmp_path))
    assert all(c["input_ids"].shape == (16,) for c in chunks)
    assert all(c["attention_mask"].all() for c in chunks[:-1])
    ids, scores = flatten(chunks)
    exp_ids, exp_scores = expected_stream()
    assert ids == exp_ids
    assert scores == pytest.approx(exp_scores)
    assert len(ids) % 16 != 0 and chunks[-1]["attention_mask"].sum() == len(ids) % 16  # the last chunk is padded
    # the document-level score is the mean of its segments' scores, on each of its tokens
    first_doc = chunks[0]["doc_scores"][0].item()
    assert first_doc == pytest.approx(sum(XRate()(segment(DOCS[0])).tolist()) / 4)


def test_score_cache_is_hit_on_the_second_run(corpus, tmp_path):
    s1 = XRate()
    first = make(corpus, tmp_path, s1)
    chunks1 = list(first)
    assert s1.calls == sum(len(segment(d)) for d in DOCS) and first.cache.misses == len(DOCS)
    s2 = XRate()
    second = make(corpus, tmp_path, s2)
    chunks2 = list(second)
    assert s2.calls == 0, "the second run must not rescore"
    assert second.cache.hits == len(DOCS) and second.cache.misses == 0
    assert all(torch.equal(a["token_scores"], b["token_scores"]) for a, b in zip(chunks1, chunks2))
    # other scorer settings → another cache
    other = XRate(name="other")
    list(make(corpus, tmp_path, other))
    assert other.calls > 0


def test_shuffle_buffer_permutes_chunks(corpus, tmp_path):
    plain = [tuple(c["input_ids"].tolist()) for c in make(corpus, tmp_path, split="train", val_every=1000)]
    shuffled = [tuple(c["input_ids"].tolist()) for c in make(corpus, tmp_path, split="train", val_every=1000,
                                                             shuffle_buffer=4)]
    assert Counter(plain) == Counter(shuffled) and plain != shuffled


def test_filtering_drops_documents_above_the_threshold(corpus, tmp_path):
    ids, _ = flatten(make(corpus, tmp_path, filter_threshold=0.0))
    tok = byte_tokenizer()
    kept = [d for d in DOCS if "x" not in d]
    expected = []
    for d in kept:
        expected += [tok.eos_token_id] + sum((tok(s, add_special_tokens=False)["input_ids"] for s in segment(d)), [])
    assert ids == expected


def test_an_empty_training_stream_is_an_error_not_an_endless_loop(corpus, tmp_path):
    """Filtering that keeps no document: every epoch is empty, and with max_epochs -1 the run
    would loop over empty epochs forever; the training stream says so instead."""
    from lit_align.data.validate import DataFileError

    with pytest.raises(DataFileError, match="training stream is empty.*filtering"):
        list(make(corpus, tmp_path, filter_threshold=-1.0, split="train", val_every=0))
    assert list(make(corpus, tmp_path, filter_threshold=-1.0, split="val")) == []  # an empty val split is allowed


def test_control_tokens_prefix_each_segment(corpus, tmp_path):
    control = ControlTokens(aligned_id=1000, misaligned_id=1001, threshold=0.0, drop_fraction=0.0)
    ids, scores = flatten(make(corpus, tmp_path, control=control, seq_len=1000))
    n_segments = sum(len(segment(d)) for d in DOCS)
    assert ids.count(1000) + ids.count(1001) == n_segments
    bad_segments = sum(1 for d in DOCS for s in segment(d) if "x" in s)
    assert ids.count(1001) == bad_segments
    # each control token carries the score of its segment
    assert all(scores[i] > 0 for i, t in enumerate(ids) if t == 1001)
    everything_dropped = ControlTokens(1000, 1001, 0.0, drop_fraction=1.0)
    ids_dropped, _ = flatten(make(corpus, tmp_path, control=everything_dropped, seq_len=1000))
    assert ids_dropped == expected_stream()[0]


def test_shards_partition_documents_and_val_split_is_disjoint(corpus, tmp_path):
    ds = make(corpus, tmp_path, split="train", val_every=3)
    train = [d.index for d in ds.scored_documents()]
    val = [d.index for d in make(corpus, tmp_path, split="val", val_every=3).scored_documents()]
    assert val == [2, 5] and train == [0, 1, 3, 4, 6]
    halves = [[d.index for d in ds.scored_documents(k, 2)] for k in range(2)]
    assert sorted(halves[0] + halves[1]) == train and not set(halves[0]) & set(halves[1])


def test_resume_skips_consumed_chunks(corpus, tmp_path):
    full = [c["input_ids"] for c in make(corpus, tmp_path, split="train", val_every=1000, shuffle_buffer=3, seq_len=8)]
    resumed = [c["input_ids"] for c in make(corpus, tmp_path, split="train", val_every=1000, shuffle_buffer=3,
                                            seq_len=8, skip_chunks=4)]
    assert len(resumed) == len(full) - 4
    assert all(torch.equal(a, b) for a, b in zip(full[4:], resumed))


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_skip_tokens_continues_the_stream_across_epochs(corpus, tmp_path, num_workers):
    """``skip_tokens`` starts where an earlier run stopped in the uninterrupted stream epoch +
    epoch + … (the same shuffled order each epoch): in shuffled order, wrapping past the end of
    a tiny corpus, in the first epoch only. (It used to skip unshuffled chunks, in every epoch,
    and left an empty stream when the skip was longer than an epoch.)"""
    kw = dict(split="train", val_every=1000, shuffle_buffer=3, seq_len=8)
    epoch = [c["input_ids"] for c in make(corpus, tmp_path, **kw)]
    n = len(epoch)
    assert n > 4
    endless = epoch * 4
    for consumed in (3, n, n + 3, 2 * n + 5):
        ds = make(corpus, tmp_path, skip_tokens=consumed * 8, **kw)
        first, second = [c["input_ids"] for c in ds], [c["input_ids"] for c in ds]
        assert len(first) == n - consumed % n and len(second) == n
        assert same(first + second, endless[consumed:consumed + len(first) + n])
    # through the data module's loader, iterated again each epoch as Lightning does
    dm = PretrainingDataModule(corpus=str(corpus), scorer=XRate(), tokenizer=byte_tokenizer(), seq_len=8,
                               batch_size=1, shuffle_buffer=3, cache_dir=str(tmp_path / "cache"), val_every=1000,
                               skip_tokens=(n + 3) * 8, num_workers=num_workers)
    loader = dm.train_dataloader()
    passes = [[b["input_ids"][0] for b in loader] for _ in range(2)]
    assert same(passes[0] + passes[1], endless[n + 3:2 * n + n])


def test_prescored_corpus_needs_no_scorer(tmp_path):
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps({"texts": ["ab ", "cd"], "scores": [0.25, 0.5], "avg_score": 0.375}) + "\n")
    tok = byte_tokenizer()
    ds = ScoredChunks(str(path), tok, None, PackingConfig(seq_len=8, eos_id=tok.eos_token_id), split="all")
    (chunk,) = list(ds)
    assert chunk["token_scores"][:6].tolist() == [0.25, 0.25, 0.25, 0.25, 0.5, 0.5]
    assert chunk["doc_scores"][0].item() == pytest.approx(0.375)


def test_datamodule_errors_and_state(tmp_path, corpus):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PretrainingDataModule(corpus=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="segmentation"):
        PretrainingDataModule(corpus=str(corpus), segmentation="paragraphs")
    dm = PretrainingDataModule(corpus=str(corpus), scorer=XRate(), tokenizer=byte_tokenizer(), seq_len=8,
                               batch_size=2, shuffle_buffer=1, cache_dir=str(tmp_path / "c"), val_every=1000)
    dm.load_state_dict({"chunks_consumed": 4})
    resumed = list(dm.train_dataloader())
    fresh = list(dm.train_dataloader())  # a later epoch starts from the beginning
    assert len(fresh) - len(resumed) == 2


def test_stdlib_corpus_is_found():
    files = list(zip(range(3), stdlib_files()))
    assert len(files) == 3 and all(p.suffix == ".py" for _, p in files)
