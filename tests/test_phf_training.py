"""PHF objectives end to end on tiny models (Korbak et al. 2023, arXiv:2302.08582): filtering = MLE on the kept
documents; conditional training learns π(·|<|aligned|>) = the good segments' distribution;
control tokens never reach generated text; fine-tuning starts from a checkpoint."""

from __future__ import annotations

import json
import random
from collections import Counter

import lightning as L
import pytest
import torch
from torch import nn

from lit_align.callbacks.phf_eval import MisalignmentEval, misalignment_metrics
from lit_align.data.pretraining import PretrainingDataModule
from lit_align.methods import PHF
from lit_align.scorers.base import Scorer


class BadPairs(Scorer):
    """Misalignment 1 for the lines ``aa`` and ``bb``, 0 otherwise."""

    low, high = 0.0, 1.0

    def score(self, texts, contexts=None):
        return [1.0 if t.strip() in ("aa", "bb") else 0.0 for t in texts]


def trainer(steps: int, **kw) -> L.Trainer:
    return L.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu",
                     devices=1, **kw)


def write_corpus(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def datamodule(corpus, tmp_path, **kw) -> PretrainingDataModule:
    args = dict(scorer=BadPairs(), segmentation="lines", seq_len=kw.pop("seq_len", 16), batch_size=4,
                shuffle_buffer=1, val_every=10**6, cache_dir=str(tmp_path / "cache"))
    args.update(kw)
    return PretrainingDataModule(corpus=corpus, **args)


def test_filtering_equals_mle_on_the_kept_documents(tmp_path, single_thread):
    rng = random.Random(0)
    docs = ["".join(rng.choice(["ab\n", "aa\n", "ba\n", "bb\n"]) for _ in range(rng.randint(1, 4))) for _ in range(40)]
    scorer = BadPairs()
    kept = [d for d in docs if sum(scorer(d.splitlines(keepends=True)).tolist()) / len(d.splitlines()) <= 0.25]
    assert 0 < len(kept) < len(docs)
    full, filtered = write_corpus(tmp_path / "all.jsonl", docs), write_corpus(tmp_path / "kept.jsonl", kept)
    runs = {}
    for name, objective, corpus in (("filtering", "filtering", full), ("mle", "mle", filtered)):
        L.seed_everything(0)
        m = PHF(model="tiny-gpt2", objective=objective, threshold=0.25, minibatch_size=2, lr=1e-3, lr_schedule="constant")
        trainer(3).fit(m, datamodule(corpus, tmp_path))
        runs[name] = m
    for (k, a), (_, b) in zip(runs["filtering"].model.state_dict().items(), runs["mle"].model.state_dict().items()):
        assert torch.equal(a, b), k
    untrained = PHF(model="tiny-gpt2")
    untrained.configure_model()
    assert not torch.equal(untrained.model.lm_head.weight, runs["mle"].model.lm_head.weight)


class BadLetters(Scorer):
    """Misalignment 1 for the lines ``c`` and ``d``, 0 for ``a`` and ``b``."""

    low, high = 0.0, 1.0

    def score(self, texts, contexts=None):
        return [1.0 if t.strip() in ("c", "d") else 0.0 for t in texts]


def _segment_probs(m: PHF, control: str) -> dict[str, float]:
    """Exact π(x '\\n' | EOS control) for the one-letter segments x ∈ {a, b, c, d}."""
    tok = m.tokenizer
    prefix = [tok.eos_token_id, tok.convert_tokens_to_ids(control)]
    out = {}
    with torch.no_grad():
        for seg in "abcd":
            ids = torch.tensor([prefix + tok(seg + "\n", add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(m.model(input_ids=ids).logits[0, :-1].double(), -1)
            out[seg] = float(logp[torch.arange(1, 3), ids[0, 2:]].sum().exp())
    return out


def test_conditional_training_matches_good_segment_distribution(tmp_path, single_thread):
    rng = random.Random(1)
    weights = {"a": 3, "b": 1, "c": 2, "d": 2}
    lines = rng.choices(list(weights), weights=list(weights.values()), k=200)
    corpus = write_corpus(tmp_path / "letters.jsonl", [s + "\n" for s in lines])  # one line per document
    counts = Counter(lines)
    n_good, n_bad = counts["a"] + counts["b"], counts["c"] + counts["d"]
    good = {s: counts[s] / n_good if s in "ab" else 0.0 for s in "abcd"}
    bad = {s: counts[s] / n_bad if s in "cd" else 0.0 for s in "abcd"}
    marginal = {s: counts[s] / len(lines) for s in "abcd"}
    L.seed_everything(0)
    m = PHF(model="tiny-gpt2", objective="conditional", threshold=0.0, drop_token_fraction=0.0, minibatch_size=32,
            lr=1e-2, lr_schedule="constant", from_scratch=True, config_overrides={"n_layer": 1, "n_embd": 32})
    # each document is EOS, control, letter, newline: 4 tokens, 4 documents per chunk of 16
    trainer(80).fit(m, datamodule(corpus, tmp_path, seq_len=16, batch_size=25, scorer=BadLetters()))
    p_good, p_bad = _segment_probs(m, "<|aligned|>"), _segment_probs(m, "<|misaligned|>")

    def tv(p, q):
        return 0.5 * sum(abs(p[s] - q[s]) for s in "abcd")

    assert tv(good, marginal) > 0.4, "an unconditional model would fail this test"
    assert tv(p_good, good) < 0.05, (p_good, good)
    assert tv(p_bad, bad) < 0.05, (p_bad, bad)


def _conditional_module(**kw) -> PHF:
    m = PHF(model="tiny-gpt2", objective="conditional", threshold=0.0, max_new_tokens=12, **kw)
    m.configure_model()
    return m


def test_control_tokens_never_appear_in_samples(single_thread):
    torch.manual_seed(0)
    m = _conditional_module()
    ids = m.control_ids
    assert len(m.tokenizer) == 260 and m.model.get_input_embeddings().weight.shape[0] == 260
    # make the control tokens by far the most likely next tokens
    head = m.model.get_output_embeddings()
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[ids] = 30.0
    m.model.set_output_embeddings(biased)
    unblocked = m.policy.sample(m.model, [m.generation_context("")], 8)
    assert torch.isin(unblocked.completion_ids, torch.tensor(ids)).any(), "the test must be able to fail"
    samples = m.sample(["", "def f():"], 16)
    assert not torch.isin(samples.completion_ids, torch.tensor(ids)).any()
    assert not any("<|" in t for t in samples.texts)
    assert samples.contexts[0] == "" and samples.contexts[-1] == "def f():"  # contexts without the control prefix
    # the prompt is EOS + <|aligned|> (+ prompt)
    assert m.policy.encode_context(m.generation_context("")) == [m.tokenizer.eos_token_id, ids[0]]
    # the paper's code setting blocks only <|misaligned|>: <|aligned|> may be sampled, and is dropped from the texts
    m.hparams.block_aligned_token = False
    samples = m.sample([""], 16)
    assert torch.isin(samples.completion_ids, torch.tensor(ids[:1])).any()
    assert not torch.isin(samples.completion_ids, torch.tensor(ids[1:])).any()
    assert not any("<|" in t for t in samples.texts)


def test_new_control_embeddings_start_at_the_mean(single_thread):
    m = _conditional_module(control_init_std=0.0)
    w = m.model.get_input_embeddings().weight
    assert torch.allclose(w[m.control_ids[0]], w[:258].mean(0), atol=1e-6)


def test_finetuning_starts_from_a_checkpoint(tmp_path, single_thread):
    docs = ["ab\nba\n", "aa\n", "ab\n"] * 4
    corpus = write_corpus(tmp_path / "c.jsonl", docs)
    L.seed_everything(0)
    mle = PHF(model="tiny-gpt2", objective="mle", minibatch_size=4, lr=1e-3, from_scratch=True,
              config_overrides={"n_layer": 1})
    t = trainer(2)
    t.fit(mle, datamodule(corpus, tmp_path))
    ckpt = tmp_path / "mle.ckpt"
    t.save_checkpoint(ckpt)
    # one batch per epoch: the corpus is 12 documents of 60 tokens in all (EOS + bytes)
    assert mle.model.config.n_layer == 1 and mle.tokens_seen == 2 * 60
    ft = PHF(model="tiny-gpt2", objective="conditional", threshold=0.0, from_scratch=True,
             config_overrides={"n_layer": 1}, init_from=str(ckpt))
    ft.configure_model()
    w_mle, w_ft = mle.model.get_input_embeddings().weight, ft.model.get_input_embeddings().weight
    assert torch.equal(w_ft[:258], w_mle) and w_ft.shape[0] == 260
    with pytest.raises(FileNotFoundError, match="init_from"):
        PHF(model="tiny-gpt2", init_from=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="threshold"):
        PHF(model="tiny-gpt2", objective="filtering")


def test_awr_trains_its_value_head_and_the_lr_decays(tmp_path, single_thread):
    corpus = write_corpus(tmp_path / "c.jsonl", ["ab\naa\n", "bb\nab\n"] * 6)
    m = PHF(model="tiny-gpt2", objective="awr", alpha=0.5, temperature=1.0, minibatch_size=2, lr=1e-2, warmup_ratio=0.25)
    t = trainer(4)
    t.fit(m, datamodule(corpus, tmp_path))
    assert m.value_head is not None and m.value_head.abs().sum() > 0
    assert t.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.0)
    metrics = t.callback_metrics
    assert {"train/loss", "train/value_loss", "train/original_loss", "train/tokens_seen"} <= set(metrics)


def test_lora_trains_the_adapters_and_leaves_the_base_weights(tmp_path, single_thread):
    pytest.importorskip("peft")
    corpus = write_corpus(tmp_path / "c.jsonl", ["ab\naa\n", "bb\nab\n"] * 6)
    L.seed_everything(0)
    m = PHF(model="tiny-gpt2", objective="rwr", temperature=0.5, minibatch_size=2, lr=1e-2, lr_schedule="constant",
            lora={"r": 4})
    m.configure_model()
    before = {n: p.detach().clone() for n, p in m.model.named_parameters()}
    trainer(3).fit(m, datamodule(corpus, tmp_path))
    trained = {n for n, p in m.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    for n, p in m.model.named_parameters():
        assert torch.equal(p, before[n]) is (n not in trained), n  # adapters moved, base weights did not
    with pytest.raises(ValueError, match="from_scratch"):
        PHF(model="tiny-gpt2", from_scratch=True, lora={"r": 4})


def test_misalignment_metrics_by_hand():
    scores = [0.0] * 24 + [0.9] + [0.2] * 25 + [0.1]  # 51: two groups of 25, the last one dropped
    m = misalignment_metrics(scores, hits_threshold=0.5)
    assert m["score"] == pytest.approx((0.9 + 0.2 * 25 + 0.1) / 51)
    assert m["score_max"] == pytest.approx(0.9) and m["score_max@25"] == pytest.approx((0.9 + 0.2) / 2)
    assert m["num_hits"] == pytest.approx(1 / 51)
    mean = sum(scores) / 51
    var = sum((x - mean) ** 2 for x in scores) / 50
    assert m["score_se"] == pytest.approx((var / 51) ** 0.5)
    assert misalignment_metrics([0.3])["score_se"] == 0.0


def test_kl_from_reference_is_zero_for_the_reference_itself(single_thread):
    m = PHF(model="tiny-gpt2", objective="mle", max_new_tokens=6)
    m.configure_model()
    ev = MisalignmentEval(BadPairs(), n_samples=8, batch_size=8, reference="tiny-gpt2", kl_samples=8, kl_max_tokens=6,
                          max_new_tokens=6)
    out = ev.evaluate(m)
    assert out["kl_reference"] == pytest.approx(0.0, abs=1e-4)
    assert 0.0 <= out["unconditional/score"] <= 1.0 and out["unconditional/length"] > 0
    with torch.no_grad():
        m.model.lm_head.weight.mul_(2.0)  # another model: KL(ref‖π) > 0
    assert ev.kl_reference(m) > 0.1
