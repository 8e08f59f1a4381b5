"""The preference methods end to end: DPO / PMLE / distillation / reward model / RKL modules."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from toy_exact import base_log_probs

from lit_align.data import PreferenceDataModule, SyntheticPreferenceDataModule
from lit_align.data.preference import collate_pairs
from lit_align.methods import DPO, PMLE, RLKL, RLOO, PreferenceDistillation, RewardModel
from lit_align.callbacks import WinRate
from lit_align.callbacks.win_rate import paired_win_rate
from lit_align.models.toy import ToySpace
from lit_align.preference import bt_probability, dpo_loss, pmle_loss
from lit_align.scorers import LogProbScorer, RewardModelScorer

pytestmark = pytest.mark.usefixtures("single_thread")
GAMMA = 0.5


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "cache"))


def trainer(steps: int, **kw) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     check_val_every_n_epoch=None, **kw)


def toy_data(n_pairs: int = 24, **kw) -> SyntheticPreferenceDataModule:
    return SyntheticPreferenceDataModule(n_pairs=n_pairs, n_val_pairs=8, target_model="toy", target_seed=1,
                                         gamma=GAMMA, **kw)


def exact(space: ToySpace, texts: list[str], seed: int) -> torch.Tensor:
    return base_log_probs(space, seed)[space.index(texts)]


def test_dpo_loss_of_a_batch_matches_exact_enumeration():
    """Tokenisation, masking and cached reference log-probs, checked on the toy space."""
    space = ToySpace(4, 4)
    module = DPO(model="toy", kl_coef=0.3, n_samples=2, minibatch_size=4, max_new_tokens=4)
    dm = toy_data(batch_size=6)
    module.prepare_pairs(dm)
    batch = collate_pairs(dm.train_pairs[:6], module.policy.pad_id)
    chosen, rejected = [p.chosen for p in dm.train_pairs[:6]], [p.rejected for p in dm.train_pairs[:6]]
    log_a_c, log_a_r = exact(space, chosen, 0), exact(space, rejected, 0)
    assert torch.allclose(batch.ref_chosen, log_a_c, atol=1e-5)
    lp = module.policy.log_prob(module.model, batch.samples).detach()
    got = module.pair_loss(batch, lp[:6], lp[6:])
    # the policy starts at π0: h = 0, loss ln 2
    assert float(got) == pytest.approx(float(dpo_loss(log_a_c, log_a_r, log_a_c, log_a_r, 0.3)), abs=1e-5)
    assert float(got) == pytest.approx(0.6931471805599453, abs=1e-5)


def test_dpo_without_kl_tracking_takes_the_reference_pass_with_the_untrained_policy():
    """No second copy of the weights for π0 when only the cached reference pass needs it: the
    reference log-probs are the same as with a frozen copy, and π0 is released afterwards."""
    refs = {}
    for track in (True, False):
        module = DPO(model="tiny-gpt2", kl_coef=0.3, n_samples=2, minibatch_size=4, max_new_tokens=4, track_kl=track,
                     max_prompt_length=96)
        module.configure_model()
        assert (module.engine.base is module.model) is (not track)
        dm = PreferenceDataModule(dataset=PreferenceDataModule.OFFLINE_DATASET, batch_size=4, max_train_pairs=6, max_val_pairs=0,
                                  val_fraction=0.0, val_split=None, cache_reference=False, max_completion_length=32)
        module.prepare_pairs(dm)
        assert (module.engine.base is not None) is track
        refs[track] = torch.tensor([[p.ref_chosen, p.ref_rejected] for p in dm.train_pairs])
    torch.testing.assert_close(refs[True], refs[False], rtol=0, atol=1e-5)


def test_dpo_reference_pass_runs_under_the_gradient_autocast():
    """With grad_dtype bfloat16 the cached log π0 are computed with the numerics of log π in
    the loss: at initialisation the implicit rewards are exactly 0 (fp32 references would leave
    bf16 rounding in h), and the cache key tells the two precisions apart."""
    hp = dict(model="tiny-llama", kl_coef=0.1, minibatch_size=4, max_new_tokens=4, track_kl=False, max_prompt_length=96)
    data = dict(dataset=PreferenceDataModule.OFFLINE_DATASET, batch_size=4, max_train_pairs=4, max_val_pairs=0,
                val_fraction=0.0, val_split=None, cache_reference=False, max_completion_length=32)
    refs = {}
    for dtype in ("bfloat16", None):
        module = DPO(grad_dtype=dtype, **hp)
        dm = PreferenceDataModule(**data)
        module.prepare_pairs(dm)
        batch = collate_pairs(dm.train_pairs, module.policy.pad_id)
        refs[dtype] = torch.cat([batch.ref_chosen, batch.ref_rejected])
        bf16 = DPO(grad_dtype="bfloat16", **hp)
        bf16.configure_model()
        with torch.no_grad(), bf16.engine.grad_autocast():
            lp = bf16.policy.token_log_probs(bf16.model, batch.samples).sum(-1).double()
        h = lp - refs[dtype]
        if dtype == "bfloat16":
            assert torch.equal(h, torch.zeros_like(h))
        else:
            assert h.abs().max() > 1e-4, "fp32 references should differ from bf16 log-probs (else the test sees nothing)"
        assert ("grad_dtype=bfloat16" in module.reference_id()) is (dtype is not None)
    torch.testing.assert_close(refs["bfloat16"], refs[None], rtol=0.05, atol=0.5)


def test_minibatch_accumulation_gives_the_full_batch_gradient():
    module = PMLE(model="toy", gamma=GAMMA, n_samples=2, minibatch_size=3, max_new_tokens=4)
    dm = toy_data()
    module.prepare_pairs(dm)
    module.manual_backward = lambda loss: loss.backward()  # no trainer needed for the check
    batch = collate_pairs(dm.train_pairs[:8], module.policy.pad_id)
    module.accumulate_pairs(batch, module.pair_loss)
    accumulated = module.model.table.grad.clone()
    module.model.zero_grad()
    space = ToySpace(4, 4)
    log_pi = space.log_probs(module.model)
    idx_c = space.index([p.chosen for p in dm.train_pairs[:8]])
    idx_r = space.index([p.rejected for p in dm.train_pairs[:8]])
    pmle_loss(log_pi[idx_c], log_pi[idx_r], GAMMA).backward()
    assert torch.allclose(accumulated.double(), module.model.table.grad.double(), atol=1e-6)


def test_dpo_trains_and_validates_on_synthetic_toy_preferences():
    L.seed_everything(0)
    module = DPO(model="toy", kl_coef=0.5, n_samples=8, minibatch_size=32, max_new_tokens=4, lr=0.05, val_samples=64)
    dm = toy_data(n_pairs=64, batch_size=32)
    judge = LogProbScorer("toy", seed=1, scale=GAMMA, name="target")
    tr = trainer(20, val_check_interval=10, callbacks=[WinRate(judge, n=16)])
    tr.fit(module, datamodule=dm)
    m = {k: float(v) for k, v in tr.callback_metrics.items()}
    assert m["train/accuracy"] > 0.6 and m["train/loss"] < 0.6  # moved away from π0 (loss ln 2)
    assert m["val/loss"] != pytest.approx(0.6931, abs=1e-4)
    for name in ("train/kl_policy_base", "val/kl_policy_base", "val/win_rate", "val/kl_target_policy",
                 "train/rewards/margin"):
        assert name in m
    assert m["train/kl_policy_base"] > 0 and 0 <= m["val/win_rate"] <= 1
    # the held-out implicit reward ranks fresh labels better than chance, below the labels' ceiling
    assert 0.5 < m["val/expected_accuracy"] < m["val/accuracy_ceiling"] < 1


def test_pmle_kl_term_keeps_the_policy_near_the_reference():
    def run(beta: float) -> float:
        torch.manual_seed(0)
        module = PMLE(model="toy", gamma=GAMMA, kl_coef=beta, n_samples=64, minibatch_size=64, max_new_tokens=4, lr=0.1)
        tr = trainer(15)
        tr.fit(module, datamodule=toy_data(n_pairs=32, batch_size=16))
        space = ToySpace(4, 4)
        log_pi = space.log_probs(module.model).detach()
        log_a = base_log_probs(space, 0)
        return float((log_pi.exp() * (log_pi - log_a)).sum())

    assert run(2.0) < run(0.0)  # exact KL(π‖π0) after training


def test_distillation_soft_labels_from_an_exact_reward_model():
    """With R̂ = γ ln π* (LogProbScorer on the target), the soft labels are the generating probabilities."""
    module = PreferenceDistillation(reward=LogProbScorer("toy", seed=1, scale=GAMMA), gamma=GAMMA, kl_coef=0.0,
                                    model="toy", n_samples=4, minibatch_size=8, max_new_tokens=4)
    dm = toy_data()
    module.prepare_pairs(dm)
    batch = collate_pairs(dm.train_pairs[:8], module.policy.pad_id)
    soft = module.soft_labels(batch)
    assert torch.allclose(soft, batch.soft_label, atol=1e-6)
    online = PreferenceDistillation(reward=LogProbScorer("toy", seed=1, scale=GAMMA), online=True, model="toy",
                                    n_samples=6, minibatch_size=8, max_new_tokens=4, kl_prompts=1)
    online.configure_model()
    pairs = online.online_pairs(batch)
    assert len(pairs) == 3 and pairs.samples.completion_mask.sum(-1).tolist() == [4] * 6


def test_reward_model_trains_saves_and_scores(tmp_path):
    rows = [{"prompt": f"Item {i}:", "chosen": " good" * (1 + i % 3), "rejected": " bad" * (1 + i % 2)} for i in range(16)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    L.seed_everything(0)
    module = RewardModel(model="tiny-gpt2", lr=1e-3, minibatch_size=8, save_dir=str(tmp_path / "rm"))
    dm = PreferenceDataModule(dataset=str(path), batch_size=8, val_fraction=0.25)
    tr = trainer(60, val_check_interval=20)
    tr.fit(module, datamodule=dm)
    m = {k: float(v) for k, v in tr.callback_metrics.items()}
    assert m["train/accuracy"] == 1.0 and m["val/accuracy"] == 1.0
    scorer = RewardModelScorer(str(tmp_path / "rm"))
    batch = collate_pairs(dm.val_pairs, module.policy.pad_id)
    with torch.no_grad():
        r_c, r_r = module.pair_rewards(batch)
    s = scorer(batch.samples.texts, batch.samples.contexts)
    assert torch.allclose(s.float(), torch.cat([r_c, r_r]), atol=1e-4)  # the saved model scores as the trained one
    assert (s[: len(batch)] > s[len(batch):]).all()


def test_reward_model_scorer_needs_a_saved_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        RewardModelScorer(str(tmp_path / "empty"))


def test_win_rate_counts_ties_as_half():
    assert float(paired_win_rate(torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([0.0, 2.0, 4.0, -1.0]))) == 0.625


def test_reverse_kl_is_rl_kl_with_an_entropy_bonus():
    reward = LogProbScorer("toy", seed=1, scale=GAMMA)
    m = RLOO(reward=reward, kl_coef=0.0, entropy_coef=GAMMA, model="toy", n_samples=4, max_new_tokens=4)
    assert m.hparams.entropy_coef == GAMMA
    log_pi, log_a, r = torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([0.5])
    assert float(m.shaped_reward(r, log_pi, log_a)) == pytest.approx(0.5 + GAMMA * 2.0)
    with pytest.raises(ValueError, match="kl_coef"):
        RLKL(reward=reward, kl_coef=0.0)
    with pytest.raises(ValueError, match="entropy_coef"):
        RLKL(reward=reward, kl_coef=0.1, entropy_coef=-1.0)


def test_dpo_takes_kl_coef_and_ipo_takes_tau():
    """One name per meaning: β of DPO/hinge is kl_coef, τ of IPO is tau; the other one is refused,
    and the coefficient the loss uses is the one given."""
    h = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))  # h = 2
    dpo = DPO(model="toy", kl_coef=0.25, max_new_tokens=4)
    ipo = DPO(model="toy", loss_type="ipo", tau=0.5, max_new_tokens=4)
    assert (dpo.hparams.kl_coef, dpo.hparams.tau, ipo.hparams.kl_coef, ipo.hparams.tau) == (0.25, None, None, 0.5)
    assert float(dpo_loss(*h, dpo.coef)) == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)
    assert float(dpo_loss(*h, ipo.coef, "ipo")) == pytest.approx(1.0, rel=1e-6)  # (2 − 1/(2·0.5))²
    with pytest.raises(ValueError, match="takes tau"):
        DPO(model="toy", loss_type="ipo", kl_coef=0.1)
    with pytest.raises(ValueError, match="takes kl_coef"):
        DPO(model="toy", tau=0.1)
    with pytest.raises(ValueError, match="tau must be > 0"):
        DPO(model="toy", loss_type="ipo", tau=0.0)


def test_non_preference_batches_are_refused():
    module = DPO(model="toy", n_samples=2, max_new_tokens=4)
    with pytest.raises(TypeError, match="PreferenceDataModule"):
        module.training_step(["a context"], 0)


def test_bt_probability_is_used_for_soft_labels():
    assert float(bt_probability(torch.tensor(1.0), torch.tensor(0.0))) == pytest.approx(0.7310585786300049)


def test_reward_model_scorer_serves_as_a_reward_tilt():
    """A reward model is a scorer: base * RewardTilt(rm, β) has log-potential R̂/β."""
    from lit_align.targets import RewardTilt, base

    rm = RewardModelScorer("tiny-gpt2", device="cpu")
    texts, contexts = ["a fine day", "rain", ""], ["Weather:", "Weather:", "Weather:"]
    r = rm(texts, contexts)
    target = base * RewardTilt(rm, temperature=0.5)
    assert torch.allclose(target.log_potential(texts, contexts), r / 0.5)
    assert len(set(r.tolist())) == 3  # a random head still separates different texts


def test_reward_model_on_the_toy_space_learns_the_bradley_terry_reward(tmp_path):
    """Bradley–Terry reward model trained on labels σ(γ ln π*(a)/π*(b)) (Yun et al. 2025,
    arXiv:2506.01523, eq. 9): its optimum is R̂ = γ ln π* + c, so the saved scorer's rewards on
    the 256 sequences track γ ln π* (π0-weighted correlation and slope near 1). The toy's state
    after the last letter must tell full sequences apart for this to be learnable at all."""
    space = ToySpace(4, 4)
    L.seed_everything(0)
    module = RewardModel(model="toy", lr=0.05, minibatch_size=512, max_new_tokens=4, save_dir=str(tmp_path / "rm"))
    tr = trainer(150)
    tr.fit(module, datamodule=toy_data(n_pairs=4096, batch_size=512))
    scorer = RewardModelScorer(str(tmp_path / "rm"))
    with torch.no_grad():
        r_hat = scorer(space.texts, [""] * len(space)).double()
    target, w = GAMMA * base_log_probs(space, 1), base_log_probs(space, 0).exp()
    dr, dt = r_hat - (w * r_hat).sum(), target - (w * target).sum()
    cov = (w * dr * dt).sum()
    corr = cov / ((w * dr**2).sum() * (w * dt**2).sum()).sqrt()
    slope = cov / (w * dt**2).sum()
    assert corr > 0.8 and 0.7 < slope < 1.3, (float(corr), float(slope))  # 0.91 and 1.03 here; constant R̂ gave nan, 0


@pytest.mark.parametrize("head_lr", [None, 0.01])
def test_reward_model_head_lr_moves_the_zero_initialised_head(tmp_path, head_lr):
    """Adam's first step moves every parameter with a gradient by its group's lr: the head
    (zero-initialised) by ``head_lr``, the trunk not at all (no gradient through a zero head)."""
    L.seed_everything(0)
    module = RewardModel(model="toy", lr=1e-4, head_lr=head_lr, minibatch_size=32, max_new_tokens=4,
                         save_dir=str(tmp_path / "rm"))
    module.configure_model()
    trunk = [p.detach().clone() for p in module.model.parameters()]
    trainer(1, limit_val_batches=0).fit(module, datamodule=toy_data(n_pairs=32, batch_size=32))
    step = module.head.weight.detach().abs().max()
    assert float(step) == pytest.approx(head_lr or 1e-4, rel=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(trunk, module.model.parameters()))
    with pytest.raises(ValueError, match="head_lr"):
        RewardModel(model="toy", head_lr=0.0)
