"""Preference data: TRL formats, tokenisation, cached reference log-probs, synthetic preferences."""

from __future__ import annotations

import json
import math

import pytest
import torch
from toy_exact import base_log_probs

from lit_align.data import PreferenceDataModule, SyntheticPreferenceDataModule
from lit_align.data import preference_pairs as pref_data
from lit_align.data.preference import collate_pairs, pad_samples, split_record
from lit_align.data.synthetic_preferences import synthesize_preferences
from lit_align.methods import DPO, PMLE
from lit_align.models.toy import ToySpace
from lit_align.preference import bt_probability

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


ROWS = [{"prompt": f"Q{i}: ", "chosen": f"good answer {i}", "rejected": f"bad {i}"} for i in range(6)]


# ------------------------------------------------------------------------- formats
def test_standard_and_implicit_prompt_formats():
    assert split_record({"prompt": "Hi", "chosen": " yes", "rejected": " no"}, "prompt", "chosen", "rejected", "x") == \
        ("Hi", " yes", " no")
    # implicit prompt (e.g. Anthropic HH): the common prefix
    rec = {"chosen": "Human: hi\nAssistant: hello there", "rejected": "Human: hi\nAssistant: go away"}
    assert split_record(rec, None, "chosen", "rejected", "x") == ("Human: hi\nAssistant: ", "hello there", "go away")


def test_conversational_formats():
    user = [{"role": "user", "content": "hi"}]
    rec = {"prompt": user, "chosen": [{"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "assistant", "content": "bye"}]}
    assert split_record(rec, "prompt", "chosen", "rejected", "x") == (user, "hello", "bye")
    implicit = {"chosen": user + [{"role": "assistant", "content": "hello"}],
                "rejected": user + [{"role": "assistant", "content": "bye"}]}
    assert split_record(implicit, None, "chosen", "rejected", "x") == (user, "hello", "bye")


def test_bad_records_name_the_columns():
    with pytest.raises(ValueError, match="no column 'prompt'.*prompt_column"):
        split_record({"chosen": "a", "rejected": "b"}, "prompt", "chosen", "rejected", "dataset 'x'")
    with pytest.raises(ValueError, match="both be strings or both be message lists"):
        split_record({"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]},
                     "prompt", "chosen", "rejected", "x")


# ------------------------------------------------------------------ tokenisation
def test_pairs_mask_the_prompt_and_end_with_eos(tmp_path, cache):
    module = DPO(model="tiny-gpt2", n_samples=2, minibatch_size=4, max_new_tokens=4)
    dm = PreferenceDataModule(dataset=write_jsonl(tmp_path / "p.jsonl", ROWS), batch_size=3, val_fraction=0.0)
    module.prepare_pairs(dm)
    tok = module.tokenizer
    p = dm.train_pairs[0]
    assert p.prompt_ids == module.policy.encode_context(p.context)
    assert p.chosen_ids == tok(p.chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = collate_pairs(dm.train_pairs[:3], module.policy.pad_id)
    # log-probs of the batch equal those of each completion scored alone (padding is masked)
    lp = module.policy.log_prob(module.model, batch.samples).detach()
    for i, pair in enumerate(dm.train_pairs[:3]):
        alone = pad_samples([pair.prompt_ids], [pair.rejected_ids], module.policy.pad_id, [""], [""])
        assert float(lp[3 + i]) == pytest.approx(float(module.policy.log_prob(module.model, alone)[0].detach()), abs=1e-4)
    # only completion tokens are scored (EOS included), never the prompt
    assert batch.samples.completion_mask.sum(-1).tolist() == [len(p.chosen_ids) for p in dm.train_pairs[:3]] + \
        [len(p.rejected_ids) for p in dm.train_pairs[:3]]


def test_cached_reference_log_probs_equal_fresh_ones(tmp_path, cache, monkeypatch):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    module = DPO(model="tiny-gpt2", n_samples=2, minibatch_size=4, max_new_tokens=4)
    dm = PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0)
    module.prepare_pairs(dm)
    files = list((cache / "reference_log_probs").glob("*.pt"))
    assert len(files) == 1
    fresh = [module.policy.log_prob(module.engine.base, pad_samples([p.prompt_ids], [p.chosen_ids], module.policy.pad_id,
                                                                   [""], [""]))[0] for p in dm.train_pairs]
    cached = [p.ref_chosen for p in dm.train_pairs]
    assert cached == pytest.approx([float(f) for f in fresh], abs=1e-4)

    # a second run reads the cache and computes nothing
    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(pref_data, "compute_reference_log_probs", boom)
    again = PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0)
    DPO(model="tiny-gpt2", n_samples=2, minibatch_size=4, max_new_tokens=4).prepare_pairs(again)
    assert [p.ref_chosen for p in again.train_pairs] == cached
    # another reference model (different seed) is another key
    other = PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0)
    with pytest.raises(AssertionError, match="recomputed"):
        DPO(model="tiny-gpt2", model_seed=1, n_samples=2, minibatch_size=4, max_new_tokens=4).prepare_pairs(other)


def test_reference_is_released_when_nothing_else_needs_it(tmp_path, cache):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    module = DPO(model="tiny-gpt2", track_kl=False, n_samples=2, minibatch_size=4, max_new_tokens=4)
    module.prepare_pairs(PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0))
    assert module.engine.base is None  # one model held during training
    kept = DPO(model="tiny-gpt2", n_samples=2, minibatch_size=4, max_new_tokens=4)
    kept.prepare_pairs(PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0))
    assert kept.engine.base is not None
    # PMLE uses no cached reference log-probs: none are computed
    pm = PMLE(model="tiny-gpt2", n_samples=2, minibatch_size=4, max_new_tokens=4)
    dm = PreferenceDataModule(dataset=path, batch_size=3, val_fraction=0.0)
    pm.prepare_pairs(dm)
    assert math.isnan(dm.train_pairs[0].ref_chosen)


def test_hub_name_offline_fails_fast_with_a_hint():
    from lit_align.data.conditional import DatasetLoadError

    dm = PreferenceDataModule(dataset="someone/not-a-local-file")
    with pytest.raises(DatasetLoadError, match="resource:preference_tldr_sample"):
        dm.load_split_records()


# ---------------------------------------------------------------- synthetic data
def test_synthetic_labels_follow_bradley_terry_of_the_target_lm():
    """Pairs from μ = toy(seed 0), labels from π* = toy(seed 1) with γ: every stored probability is
    σ(γ ln π*(chosen)/π*(rejected)), and the mean stored probability matches its exact expectation
    E_{a,b~μ}[P(a≻b)² + P(b≻a)²] within 4 standard errors."""
    from lit_align.models import load
    from lit_align.models.policy import Policy

    gamma, n = 0.5, 3000
    space = ToySpace(4, 4)
    mu, tok = load("toy", seed=0)
    star, _ = load("toy", seed=1)
    policy = Policy(tok, 4)
    records = synthesize_preferences(policy, mu, [""], n, target_model=star, gamma=gamma, seed=5, chunk=1000)
    log_mu, log_star = base_log_probs(space, 0), base_log_probs(space, 1)
    idx_c, idx_r = space.index([r["chosen"] for r in records]), space.index([r["rejected"] for r in records])
    stored = torch.tensor([r["chosen_probability"] for r in records], dtype=torch.float64)
    assert torch.allclose(stored, bt_probability(log_star[idx_c], log_star[idx_r], gamma), atol=1e-6)
    p = bt_probability(log_star[:, None], log_star[None, :], gamma)
    mu_p = log_mu.exp()
    exact = float((mu_p[:, None] * mu_p[None, :] * (p**2 + (1 - p) ** 2)).sum())
    se = float(stored.std()) / math.sqrt(n)
    assert abs(float(stored.mean()) - exact) < 4 * se


def test_toy_logit_std_scales_the_table_and_the_synthetic_target():
    """``toy:std=0.1`` is the seed's N(0, 1) table times 0.1 (Yun et al.'s logit std), for the
    policy's base and for a synthetic data module's π*."""
    from lit_align.models import load

    for seed in (0, 1):
        unit, _ = load("toy", seed=seed)
        small, _ = load("toy:std=0.1", seed=seed)
        assert torch.allclose(small.table, 0.1 * unit.table, rtol=0, atol=1e-7)
    dm = SyntheticPreferenceDataModule(target_model="toy:std=0.1", target_seed=1, n_pairs=4, n_val_pairs=0)
    star = dm._load(dm.target_name, dm.target_seed, "cpu")
    assert torch.allclose(star.table, 0.1 * load("toy", seed=1)[0].table, rtol=0, atol=1e-7)


def test_synthetic_data_module_round_trips_through_jsonl(tmp_path, cache):
    out = tmp_path / "syn.jsonl"
    module = PMLE(model="toy", n_samples=2, minibatch_size=8, max_new_tokens=4)
    dm = SyntheticPreferenceDataModule(n_pairs=20, n_val_pairs=4, target_model="toy", target_seed=1,
                                       output=str(out), batch_size=5)
    module.prepare_pairs(dm)
    assert len(dm.train_pairs) == 20 and len(dm.val_pairs) == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["chosen"] for r in rows] == [p.chosen for p in dm.train_pairs]
    assert [r["chosen_probability"] for r in rows] == [p.soft_label for p in dm.train_pairs]
    # a second module with the same settings reads the written file instead of sampling again
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:7]))  # marks a re-read
    dm2 = SyntheticPreferenceDataModule(n_pairs=20, n_val_pairs=4, target_model="toy", target_seed=1,
                                        output=str(out), batch_size=5)
    PMLE(model="toy", n_samples=2, minibatch_size=8, max_new_tokens=4).prepare_pairs(dm2)
    assert [p.chosen for p in dm2.train_pairs] == [p.chosen for p in dm.train_pairs][:7]
    # other settings (more pairs) are not served the stale file: generated again, and written
    dm3 = SyntheticPreferenceDataModule(n_pairs=30, n_val_pairs=4, target_model="toy", target_seed=1,
                                        output=str(out), batch_size=5)
    with pytest.warns(UserWarning, match="n_pairs"):
        PMLE(model="toy", n_samples=2, minibatch_size=8, max_new_tokens=4).prepare_pairs(dm3)
    assert len(dm3.train_pairs) == 30 and len(out.read_text().splitlines()) == 30
    # KL(π*‖π) by sampling π*: positive for π = π0 ≠ π*
    assert dm.kl_target_policy(module.policy, module.model, [""], 256) > 0.1
