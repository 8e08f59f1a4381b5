"""PPO (Ziegler baseline) and RLOO: exact values of the pure functions, the unbiasedness of
the leave-one-out baseline by enumeration, and convergence of the real modules on the toy
space to the KL-control optimum a·exp(r/β)/Z (docs/toy_space.md).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.data.conditional import ContextListDataModule  # noqa: E402
from lit_align.losses import masked_entropy_bonus, ppo_policy_loss, ppo_value_loss, reinforce_loss  # noqa: E402
from lit_align.methods import PPO, RLOO  # noqa: E402
from lit_align.models.policy import Policy  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.rl import (  # noqa: E402
    AdaptiveKLController,
    FixedKLController,
    adaptive_kl_update,
    gae,
    kl_penalized_token_rewards,
    rloo_advantages,
    whiten,
)
from lit_align.scorers import Count  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]
D64 = torch.float64


def _fit(module: L.LightningModule, dm: L.LightningDataModule, steps: int, seed: int = 0, callbacks=()) -> None:
    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=list(callbacks))
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        trainer.fit(module, dm)
    finally:
        log.setLevel(level)
    assert module.global_step == steps  # one rollout = one global step, whatever the PPO updates


# ------------------------------------------------------------------------- pure functions


def test_gae_hand_computed():
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.3, 2.0, 99.0]], dtype=D64)
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 7.0]], dtype=D64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ = [0.1+0.9·0.4−0.5, −0.2+0.9·0.3−0.4, 1.0−0.3] = [−0.04, −0.33, 0.7]; A_t = δ_t + 0.72·A_{t+1}
    # row 1 ends at t = 1 (V after the end is 0; the masked reward 99 and value 7 are ignored)
    expected = torch.tensor([[-0.04 + 0.72 * (-0.33 + 0.72 * 0.7), -0.33 + 0.72 * 0.7, 0.7],
                             [-0.25 + 0.72 * 1.5, 1.5, 0.0]], dtype=D64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, (expected + values) * mask, rtol=0, atol=1e-12)
    # γ = λ = 1: A_t = Σ_{t'≥t} r_t' − V_t (Monte-Carlo return minus the value)
    adv1, ret1 = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    mc = torch.tensor([[0.9, 0.8, 1.0], [2.3, 2.0, 0.0]], dtype=D64)
    torch.testing.assert_close(ret1, mc, rtol=0, atol=1e-12)
    torch.testing.assert_close(adv1, (mc - values) * mask, rtol=0, atol=1e-12)


def test_kl_penalized_token_rewards_and_whiten():
    log_old = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, -9.0]])
    log_a = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r, kl_part = kl_penalized_token_rewards(torch.tensor([1.0, 2.0]), log_old, log_a, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.1, 1.0], [-0.02, 2.0, 0.0]], dtype=D64)
    torch.testing.assert_close(r, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(kl_part.sum(-1), torch.tensor([0.05, -0.02], dtype=D64), rtol=0, atol=1e-7)

    x = torch.tensor([[1.0, 2.0], [3.0, 100.0], [4.0, 5.0]], dtype=D64)
    m = torch.tensor([[1, 1], [1, 0], [1, 0]])
    w = whiten(x, m)  # mean 2.5, unbiased variance 5/3 over {1, 2, 3, 4}
    s = math.sqrt(5 / 3 + 1e-8)
    torch.testing.assert_close(w, torch.tensor([[-1.5 / s, -0.5 / s], [0.5 / s, 0.0], [1.5 / s, 0.0]], dtype=D64))


def test_ppo_policy_loss_hand_computed():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.7, 3.0]], dtype=D64)
    old = torch.tensor([[-1.0, -2.0, -0.3, -1.2, -0.5]], dtype=D64)
    log_pi = (old + ratios.log()).clone().requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 50.0]], dtype=D64)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, stats = ppo_policy_loss(log_pi, old, adv, mask, clip=0.2)
    # per token max(−Aρ, −A·clip(ρ, 0.8, 1.2)): [−1.2 (clipped), −0.5, 1.1, 0.8 (clipped)]
    assert float(loss.detach()) == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4, abs=1e-12)
    assert float(stats["clip_fraction"]) == pytest.approx(0.5, abs=1e-12)
    assert float(stats["approx_kl"]) == pytest.approx(0.5 * float((ratios[0, :4].log() ** 2).mean()), abs=1e-12)
    (g,) = torch.autograd.grad(loss, log_pi)
    # clipped tokens have no gradient; the others −A·ρ/4; the masked one none
    torch.testing.assert_close(g, torch.tensor([[0.0, -0.5 / 4, 1.1 / 4, 0.0, 0.0]], dtype=D64), rtol=0, atol=1e-12)


def test_ppo_value_loss_hand_computed():
    v = torch.tensor([1.0, 2.0, 0.0, 5.0], dtype=D64, requires_grad=True)
    v_old = torch.tensor([0.5, 2.1, 0.3, 0.0], dtype=D64)
    ret = torch.tensor([1.2, 1.5, -1.0, 0.0], dtype=D64)
    mask = torch.tensor([1, 1, 1, 0])
    loss, stats = ppo_value_loss(v, v_old, ret, mask, clip=0.2)
    # max((V−R)², (V_old + clip(V−V_old, ±0.2) − R)²) = max(.04, .25), max(.25, .25), max(1, 1.21)
    assert float(loss.detach()) == pytest.approx(0.5 * (0.25 + 0.25 + 1.21) / 3, abs=1e-12)
    assert float(stats["value_error"]) == pytest.approx((0.04 + 0.25 + 1.0) / 3, abs=1e-12)
    (g,) = torch.autograd.grad(loss, v)
    # token 0 uses the clipped branch (no gradient), token 1 ties (max picks either; both give V−R),
    # token 2 the clipped branch
    assert float(g[0]) == 0.0 and float(g[2]) == 0.0 and float(g[3]) == 0.0
    ent = torch.tensor([[2.0, 1.0, 7.0]])
    assert float(masked_entropy_bonus(ent, torch.tensor([[1, 1, 0]]), coef=0.1)) == pytest.approx(-0.15)


def test_adaptive_kl_controller_follows_its_formula():
    # β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)
    assert adaptive_kl_update(0.2, 9.0, 6.0, 10000, 512) == pytest.approx(0.2 * (1 + 0.2 * 512 / 10000), abs=1e-15)
    assert adaptive_kl_update(0.2, 5.4, 6.0, 10000, 512) == pytest.approx(0.2 * (1 - 0.1 * 512 / 10000), abs=1e-15)
    assert adaptive_kl_update(0.2, 0.0, 6.0, 10000, 512) == pytest.approx(0.2 * (1 - 0.2 * 512 / 10000), abs=1e-15)
    assert adaptive_kl_update(0.3, 6.0, 6.0, 100, 50) == 0.3
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=1000)
    beta = 0.2
    for kl in (1.0, 7.0, 6.6, 30.0, -2.0):
        beta = beta * (1 + min(max(kl / 6.0 - 1, -0.2), 0.2) * 64 / 1000)
        assert ctl.update(kl, 64) == pytest.approx(beta, rel=1e-14)
    state = ctl.state_dict()
    ctl2 = AdaptiveKLController(0.2, 6.0, 1000)
    ctl2.load_state_dict(state)
    assert ctl2.value == ctl.value
    fixed = FixedKLController(0.5)
    assert fixed.update(100.0, 512) == 0.5


def test_rloo_advantages_hand_computed():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    # k = 3: b_i = mean of the other two in the group
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0], dtype=D64)
    torch.testing.assert_close(rloo_advantages(r, 3), expected)
    with pytest.raises(ValueError):
        rloo_advantages(r, 4)
    with pytest.raises(ValueError):
        rloo_advantages(r, 1)


# ---------------------------------------------------- RLOO: unbiased gradient by enumeration


@pytest.mark.parametrize("k", [2, 3])
def test_rloo_expected_gradient_is_exact_kl_control_gradient(k):
    """E over all k-tuples of samples of ∇ loss = −∇(E_π[r] − β KL(π‖a)), exactly.

    π = softmax(θ) over 8 sequences; the sum over the 8^k tuples is weighted by Π π(x_j).
    Including the sample itself in its baseline (the plain group mean) biases the gradient
    by the factor (k − 1)/k, which the same enumeration detects.
    """
    gen = torch.Generator().manual_seed(3)
    n, beta = 8, 0.3
    theta = torch.randn(n, generator=gen, dtype=D64, requires_grad=True)
    log_a = torch.log_softmax(torch.randn(n, generator=gen, dtype=D64), 0)
    r = torch.rand(n, generator=gen, dtype=D64) * 2
    tuples = torch.tensor(list(itertools.product(range(n), repeat=k)))  # (n^k, k)

    def expected_grad(loo: bool) -> torch.Tensor:
        log_pi = torch.log_softmax(theta, 0)
        lp = log_pi[tuples]  # (n^k, k)
        shaped = r[tuples] - beta * (lp.detach() - log_a[tuples])
        if loo:
            adv = rloo_advantages(shaped.reshape(-1), k).reshape(shaped.shape)
        else:
            adv = shaped - shaped.mean(-1, keepdim=True)
        loss = reinforce_loss(lp.reshape(-1), shaped.reshape(-1), (shaped - adv).reshape(-1), reduction="none")
        weight = torch.exp(lp.detach().sum(-1))  # probability of the tuple
        (g,) = torch.autograd.grad((weight * loss.reshape(shaped.shape).mean(-1)).sum(), theta)
        return g

    log_pi = torch.log_softmax(theta, 0)
    pi = torch.exp(log_pi)
    j = (pi * r).sum() - beta * (pi * (log_pi - log_a)).sum()
    (exact,) = torch.autograd.grad(-j, theta)
    assert exact.abs().max() > 0.05
    torch.testing.assert_close(expected_grad(loo=True), exact, rtol=0, atol=1e-12)
    biased = expected_grad(loo=False)
    torch.testing.assert_close(biased, exact * (k - 1) / k, rtol=0, atol=1e-12)
    assert (biased - exact).abs().max() > 0.01


def test_rloo_module_baseline_is_per_context_leave_one_out():
    module = RLOO(reward=Count("d"), model="toy", n_samples=3)
    shaped = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0], dtype=D64)  # two contexts, k = 3
    b = module.baseline_values(shaped)
    torch.testing.assert_close(b, torch.tensor([4.0, 3.5, 1.5, 1.5, 1.5, 0.0], dtype=D64))
    norm = RLOO(reward=Count("d"), model="toy", n_samples=3, normalize_advantages=True)
    adv = shaped - norm.baseline_values(shaped)
    assert float(adv.mean()) == pytest.approx(0, abs=1e-12) and float(adv.std()) == pytest.approx(1, abs=1e-6)
    with pytest.raises(ValueError):
        RLOO(reward=Count("d"), model="toy", n_samples=1)


def test_rloo_without_kl_penalty_can_drop_the_base():
    """β = 0 (trl GRPO's default) is allowed for RLOO; with track_kl false the run keeps no frozen base
    and makes no base pass, yet takes exactly the updates of the same run with the base kept."""
    params = {}
    for track in (True, False):
        module = RLOO(reward=Count("d"), model="toy", n_samples=4, minibatch_size=8, max_new_tokens=4, lr=0.05,
                      kl_coef=0.0, track_kl=track)
        assert module.needs_base is track
        _fit(module, ToyDataModule(steps_per_epoch=3), 3)
        assert (module.engine.base is None) is (not track)
        metrics = module.trainer.callback_metrics
        assert ("train/kl_policy_base" in metrics) is track and ("train/nll_base" in metrics) is track
        assert math.isfinite(float(metrics["train/reward"])) and "train/length" in metrics
        params[track] = torch.cat([p.detach().flatten() for p in module.model.parameters()])
        if track:  # the frozen base is the policy before training
            start = torch.cat([p.detach().flatten() for p in module.engine.base.parameters()])
    torch.testing.assert_close(params[True], params[False], rtol=0, atol=0)
    assert not torch.equal(params[False], start)  # it did train
    # a KL penalty needs the base whatever track_kl says, and so does a callback that compares with π0
    assert RLOO(reward=Count("d"), model="toy", n_samples=4, kl_coef=0.05, track_kl=False).needs_base
    from lit_align.callbacks import WinRate

    judged = RLOO(reward=Count("d"), model="toy", n_samples=4, kl_coef=0.0, track_kl=False)
    judged.trainer = L.Trainer(callbacks=[WinRate(Count("d"))], logger=False, enable_checkpointing=False,
                               enable_progress_bar=False)
    assert judged.needs_base
    # RLKL itself still refuses β = 0 (that is REINFORCE)
    from lit_align.methods import RLKL

    with pytest.raises(ValueError, match="RLKL: kl_coef must be a positive number"):
        RLKL(reward=Count("d"), model="toy", kl_coef=0.0)


# ---------------------------------------------------------- per-token values: hidden states


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-t5", "toy"])
def test_token_outputs_match_log_probs_and_hidden_positions(make_model, name):
    # EOS bias 5: p(EOS) ≈ 0.37 per token: some of the 6 samples end early, some go on (P(not) < 0.3 %)
    model, tok = make_model(name, eos_bias=0.0 if name == "toy" else 5.0)
    policy = Policy(tok, max_new_tokens=4)
    torch.manual_seed(0)
    prompts = [""] if name == "toy" else ["ab", "hello"]
    samples = policy.sample(model, prompts, 3)
    with torch.no_grad():
        out = policy.token_outputs(model, samples, hidden=True, entropy=True)
        torch.testing.assert_close(out.log_probs, policy.token_log_probs(model, samples))
        m = samples.completion_mask
        assert out.hidden.shape[:2] == m.shape and (out.hidden[m == 0] == 0).all()
        # the hidden state read at token t is the last state of the model run on prompt + y_<t
        seq2seq = name == "tiny-t5"
        for i in (0, len(samples) - 1):
            for t in range(int(m[i].sum())):
                keep = samples.prompt_mask[i] == 1
                prompt = samples.prompt_ids[i][keep][None]
                prefix = samples.completion_ids[i, :t][None]
                if seq2seq:
                    start = torch.full((1, 1), model.config.decoder_start_token_id)
                    o = model(input_ids=prompt, decoder_input_ids=torch.cat([start, prefix], 1), output_hidden_states=True)
                    h, logits = o.decoder_hidden_states[-1][0, -1], o.logits[0, -1]
                else:
                    o = model(input_ids=torch.cat([prompt, prefix], 1), output_hidden_states=True)
                    h, logits = o.hidden_states[-1][0, -1], o.logits[0, -1]
                torch.testing.assert_close(out.hidden[i, t], h, rtol=1e-4, atol=1e-5)
                lp = torch.log_softmax(logits.float(), -1)
                ent = -(lp.exp() * lp.masked_fill(torch.isinf(lp), 0)).sum()
                torch.testing.assert_close(out.entropy[i, t], ent, rtol=1e-4, atol=1e-5)
        assert (m == 0).any() or name == "toy"  # EOS handling is exercised on the tiny models


# ------------------------------------------------------------------------ toy convergence

BETA = 0.5


def _ppo(**kw) -> PPO:
    args = dict(reward=Count("d"), kl_coef=BETA, adaptive_kl=False, model="toy", n_samples=256,
                minibatch_size=256, ppo_minibatch_size=128, max_new_tokens=4, lr=0.01)
    args.update(kw)
    return PPO(**args)


@pytest.fixture(scope="module")
def ppo_fixed_beta():
    module = _ppo()
    dm = ToyDataModule(steps_per_epoch=150)
    _fit(module, dm, 150)
    return module, dm


def test_ppo_fixed_beta_converges_to_tilted_base(ppo_fixed_beta):
    module, dm = ppo_fixed_beta
    space = dm.space
    log_a = ex.model_log_probs(space, module.engine.base)
    torch.testing.assert_close(log_a, ex.base_log_probs(space, seed=0))
    log_pi = ex.model_log_probs(space, module.model)
    r = Count("d")(space.texts)
    log_star = ex.tilted(log_a, r, BETA)
    assert ex.tv(log_a, log_star) > 0.5  # the target is far from the start
    tv = ex.tv(log_pi, log_star)
    assert tv < 0.04, f"TV(π, a·e^(r/β)/Z) = {tv:.4f}"
    assert ex.kl(log_pi, log_star) < 0.01
    # the neighbouring tilts (β/2, 2β) are much farther: the KL coefficient is applied exactly
    assert ex.tv(log_pi, ex.tilted(log_a, r, BETA / 2)) > 0.15
    assert ex.tv(log_pi, ex.tilted(log_a, r, 2 * BETA)) > 0.15
    assert module.state.kl_ctl.value == BETA
    # the tabular value of the start state is E_π[R − β log(π/a)] = β log Z at the optimum
    v0 = float((module.value_head.weight[0, 0] + module.value_head.bias[0]).detach())
    beta_log_z = BETA * float(torch.logsumexp(log_a + r / BETA, 0))
    assert v0 == pytest.approx(beta_log_z, abs=0.02)


def test_ppo_logs_diagnostics_and_checkpoints_kl_coef(ppo_fixed_beta):
    module, _ = ppo_fixed_beta
    metrics = module.trainer.callback_metrics
    for name in ("policy_loss", "value_loss", "clip_fraction", "approx_kl", "kl_coef", "returns", "value_error",
                 "kl_policy_base", "scorer/count", "reward"):
        assert f"train/{name}" in metrics, name
        assert math.isfinite(float(metrics[f"train/{name}"]))
    assert float(metrics["train/kl_coef"]) == BETA
    assert float(metrics["train/n_updates"]) == 4 * 2  # 4 epochs × 256/128 minibatches
    assert "value_head.weight" in module.state_dict()
    ckpt: dict = {}
    module.state.kl_ctl.value = 0.123
    module.on_save_checkpoint(ckpt)
    module.state.kl_ctl.value = BETA
    fresh = _ppo()
    fresh.on_load_checkpoint(ckpt)
    assert fresh.state.kl_ctl.value == 0.123


def test_ppo_adaptive_kl_controller_in_the_module():
    """β_{t+1} = update(β_t, KL_t) with KL_t the logged KL(π_old‖a) of rollout t, n = batch size."""
    seen: list[tuple[float, float]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            m = trainer.callback_metrics
            seen.append((float(m["train/kl_coef"]), float(m["train/kl_policy_base"])))

    module = _ppo(adaptive_kl=True, kl_coef=0.2, kl_target=0.5, kl_horizon=500, n_samples=64, minibatch_size=64,
                  ppo_minibatch_size=64, ppo_epochs=2, lr=0.1)
    _fit(module, ToyDataModule(steps_per_epoch=12), 12, callbacks=[Record()])
    beta = 0.2
    for logged_beta, kl in seen:
        assert logged_beta == pytest.approx(beta, rel=1e-6)
        beta = adaptive_kl_update(beta, kl, 0.5, 500, 64)
    assert module.state.kl_ctl.value == pytest.approx(beta, rel=1e-6)
    assert module.state.kl_ctl.value != 0.2


def test_ppo_separate_value_model_and_entropy_bonus_on_toy():
    module = _ppo(value_model="toy", n_samples=64, minibatch_size=32, ppo_minibatch_size=64, ppo_epochs=1,
                  entropy_coef=0.01)
    _fit(module, ToyDataModule(steps_per_epoch=3), 3)
    assert module.value_trunk is not None
    names = [n for n, _ in module.named_parameters()]
    assert "value_head.weight" in names and any(n.startswith("value_trunk.") for n in names)
    assert module.value_head.weight.abs().sum() > 0  # the value head trained
    # the mean per-token entropy of the policy: between 0 and log 4 (4 letters)
    assert 0.5 < float(module.trainer.callback_metrics["train/entropy"]) < math.log(4)


def test_ppo_can_count_every_optimizer_update_as_a_step():
    module = _ppo(n_samples=32, minibatch_size=32, ppo_minibatch_size=16, ppo_epochs=2, count_optimizer_steps=True)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, ToyDataModule(steps_per_epoch=10))
    assert trainer.global_step == 8  # 2 rollouts × 2 epochs × 2 minibatches
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2


def _conditional_exact(module, space: ToySpace, context: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Exact log a(y|c) and log π(y|c) over the 3-letter completions y of the one-letter prefix c."""
    rows = [i for i, t in enumerate(space.texts) if t.startswith(context)]
    comps = [space.texts[i][1:] for i in rows]
    log_a = ex.model_log_probs(space, module.engine.base)[rows]
    log_pi = ex.model_log_probs(space, module.model)[rows]
    return log_a - torch.logsumexp(log_a, 0), log_pi - torch.logsumexp(log_pi, 0), comps


@pytest.mark.parametrize("method", ["rloo", "ppo"])
def test_conditional_toy_converges_per_context(method):
    """Two contexts per batch (prefixes "a" and "c"); each π(·|c) reaches a(·|c)·e^(r/β)/Z_c.

    Every batch holds both contexts (one shuffled pass per epoch): a context missing from a
    batch would still be moved by Adam's momentum, which is noise unrelated to the method.
    """
    space = ToySpace(4, 4)
    common = dict(model="toy", n_samples=128, minibatch_size=256, max_new_tokens=3)
    if method == "rloo":
        module = RLOO(reward=Count("d"), kl_coef=BETA, lr=0.05, **common)
        steps, bound = 120, 0.02
    else:
        module = PPO(reward=Count("d"), kl_coef=BETA, adaptive_kl=False, lr=0.02, ppo_minibatch_size=256, **common)
        steps, bound = 100, 0.04
    dm = ContextListDataModule(contexts=["a", "c"], contexts_per_step=2, steps_per_epoch=None)
    _fit(module, dm, steps)
    for c in ("a", "c"):
        log_a, log_pi, comps = _conditional_exact(module, space, c)
        log_star = ex.tilted(log_a, Count("d")(comps), BETA)
        assert ex.tv(log_a, log_star) > 0.4
        tv = ex.tv(log_pi, log_star)
        assert tv < bound, f"{method}, context {c!r}: TV = {tv:.4f}"
        # and not the tilt of the other context's base: the policy is conditional
        other = "c" if c == "a" else "a"
        log_a_other, _, _ = _conditional_exact(module, space, other)
        assert ex.tv(log_pi, ex.tilted(log_a_other, Count("d")(comps), BETA)) > 0.1


def test_ppo_refuses_grad_dtype():
    from lit_align.scorers import Regex

    with pytest.raises(ValueError, match="PPO does not take grad_dtype"):
        PPO(reward=Regex("a", name="a"), model="tiny-gpt2", grad_dtype="bfloat16")
