"""CDPG on a conditional toy (arXiv:2112.00791; docs/toy_space.md), checked by exact enumeration.

The toy LM is the tabular ``ToyLM`` (V = 4 letters, T = 4): a context is one letter ``c``
and the completion the next three, so ``a(x|c) = a(cx)/a(c)`` is exact. The constraint
``b(x, c) = 1`` iff the completion contains the letter after ``c`` (a→b, b→c, c→d, d→a)
depends on the context, so every context has its own ``Z_c`` and target ``p_c``.
"""

from __future__ import annotations

import math
import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align import estimators  # noqa: E402
from lit_align.data import ContextListDataModule  # noqa: E402
from lit_align.losses import cdpg_loss, dpg_loss  # noqa: E402
from lit_align.methods import CDPG, DPG  # noqa: E402
from lit_align.models.policy import Policy  # noqa: E402
from lit_align.models.toy import ToyLM, ToySpace, ToyTokenizer  # noqa: E402
from lit_align.scorers import Scorer  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]

CONTEXTS = ["a", "b", "c", "d"]
SPACE = ToySpace(4, 4)


class NextLetter(Scorer):
    """b(x, c) = 1 iff the completion x contains the letter following the context letter c."""

    binary = True

    def score(self, texts, contexts=None):
        return [float(chr((ord(c) - ord("a") + 1) % 4 + ord("a")) in t) for t, c in zip(texts, contexts)]


def conditional_log_probs(model: torch.nn.Module) -> dict[str, tuple[list[str], torch.Tensor]]:
    """For each context c: the 64 completions and exact ``log m(x|c)`` (float64, differentiable)."""
    full = SPACE.log_probs(model)
    out = {}
    for c in CONTEXTS:
        rows = torch.tensor([i for i, t in enumerate(SPACE.texts) if t[0] == c])
        lp = full[rows]
        out[c] = ([SPACE.texts[i][1:] for i in rows.tolist()], lp - torch.logsumexp(lp, 0))
    return out


def exact_targets(base: torch.nn.Module) -> dict[str, ex.Target]:
    out = {}
    with torch.no_grad():
        for c, (texts, log_a) in conditional_log_probs(base).items():
            out[c] = ex.pointwise_target(log_a, NextLetter()(texts, [c] * len(texts)))
    return out


def exact_kls(targets: dict[str, ex.Target], model: torch.nn.Module) -> dict[str, float]:
    with torch.no_grad():
        lp = conditional_log_probs(model)
    return {c: ex.kl(targets[c].log_p, lp[c][1]) for c in CONTEXTS}


def test_exact_z_c_differ_across_contexts():
    z = {c: t.Z for c, t in exact_targets(ToyLM(seed=0)).items()}
    assert max(z.values()) / min(z.values()) > 1.5, z  # a global Z would reweight contexts


def test_per_context_z_estimates_match_exact_values():
    """Ẑ_c = mean of P/q over the samples of c (log_z_per_context) is unbiased for Z_c (4 SE)."""
    torch.manual_seed(0)
    base = ToyLM(seed=0)
    policy = Policy(ToyTokenizer(), max_new_tokens=3)
    n = 3000
    samples = policy.sample(base, CONTEXTS, n)
    b = NextLetter()(samples.texts, samples.contexts)
    log_a = policy.log_prob(base, samples).detach().double()
    log_P = log_a + torch.log(b)
    # proposal = the base itself: P/q = b, so the estimate is the acceptance rate of each context
    log_z = estimators.log_z_per_context(log_P, samples.log_q, samples.context_index)
    exact = exact_targets(base)
    for i, c in enumerate(CONTEXTS):
        z = exact[c].Z
        se = math.sqrt(z * (1 - z) / n)
        assert abs(math.exp(float(log_z[i])) - z) < 4 * se, (c, math.exp(float(log_z[i])), z)
    # a different proposal (the base with perturbed logits): importance-weighted, still unbiased.
    # The perturbation is moderate so that the weights have light tails and their sample SE is
    # reliable (with an unrelated random ToyLM the weights are heavy-tailed and 4 SE is not a bound)
    other = ToyLM(seed=0)
    with torch.no_grad():
        other.table.add_(0.5 * torch.randn(other.table.shape, generator=torch.Generator().manual_seed(5)))
    samples = policy.sample(other, CONTEXTS, n)
    b = NextLetter()(samples.texts, samples.contexts)
    log_P = policy.log_prob(base, samples).detach().double() + torch.log(b)
    log_w = log_P - samples.log_q.double()
    log_z = estimators.log_z_per_context(log_P, samples.log_q, samples.context_index)
    for i, c in enumerate(CONTEXTS):
        w = torch.exp(log_w[samples.context_index == i])
        se = float(w.std()) / math.sqrt(n)
        assert abs(math.exp(float(log_z[i])) - exact[c].Z) < 4 * se + 1e-12
    # a context with no satisfying sample has Ẑ_c = 0 (log −inf), never NaN
    lz = estimators.log_z_per_context(torch.tensor([-1.0, -math.inf, -math.inf]), torch.zeros(3),
                                      torch.tensor([0, 1, 1]))
    assert lz[1] == -math.inf and torch.isfinite(lz[0])


def _expected_grad(model, terms_fn) -> dict[str, torch.Tensor]:
    """Exact E_{x~π(·|c)}[∇ loss_term(x)] per context, by enumeration (weights π detached)."""
    out = {}
    for c in CONTEXTS:
        texts, lp = conditional_log_probs(model)[c]  # a fresh graph for each backward
        model.zero_grad()
        weights = torch.exp(lp.detach())
        (weights * terms_fn(c, texts, lp)).sum().backward()
        out[c] = model.table.grad.detach().clone()
    return out


@pytest.mark.parametrize("baseline", [False, True])
def test_global_z_update_is_per_context_update_rescaled(baseline):
    """CDPG (arXiv:2112.00791): with one global Z the expected update of context c is (Z_c/Z) × the CDPG update,
    and the CDPG update is the exact gradient of KL(p_c‖π_c)."""
    base, policy = ToyLM(seed=0), ToyLM(seed=3).double()  # float64: exact comparisons
    targets = exact_targets(base)
    z_global = sum(t.Z for t in targets.values()) / len(targets)  # τ uniform over contexts

    def terms(log_z_of):
        def fn(c, texts, lp):
            log_P = targets[c].log_P
            return cdpg_loss(lp, log_P, lp.detach(), torch.full_like(lp, log_z_of(c)), baseline, reduction="none")
        return fn

    g_cdpg = _expected_grad(policy, terms(lambda c: targets[c].log_Z))
    g_dpg = _expected_grad(policy, lambda c, texts, lp: dpg_loss(
        lp, targets[c].log_P, lp.detach(), math.log(z_global), baseline, reduction="none"))
    scales = [targets[c].Z / z_global for c in CONTEXTS]
    assert max(scales) - min(scales) > 0.3  # the rescaling is real on this toy
    for c in CONTEXTS:
        scale = targets[c].Z / z_global
        torch.testing.assert_close(g_dpg[c], scale * g_cdpg[c], rtol=1e-9, atol=1e-12)
        # the CDPG update is ∇ KL(p_c‖π_c) = −Σ_x p_c(x) ∇log π(x|c)
        policy.zero_grad()
        lp = conditional_log_probs(policy)[c][1]
        (-(targets[c].p * lp).sum()).backward()
        torch.testing.assert_close(g_cdpg[c], policy.table.grad, rtol=1e-9, atol=1e-12)


def test_released_code_estimator_has_the_extra_factor():
    """detach_advantage=False differentiates through A: per-sample gradient −A(1 − log π)∇log π."""
    log_pi = torch.tensor([-2.0, -5.0, -1.0], dtype=torch.float64, requires_grad=True)
    log_P = torch.tensor([-3.0, -math.inf, -0.5], dtype=torch.float64)
    log_z = torch.tensor([-1.0, -1.0, -2.0], dtype=torch.float64)
    a = torch.exp(log_P - log_pi.detach() - log_z)
    (g_paper,) = torch.autograd.grad(cdpg_loss(log_pi, log_P, log_pi.detach(), log_z, reduction="sum"), log_pi)
    (g_code,) = torch.autograd.grad(cdpg_loss(log_pi, log_P, log_pi.detach(), log_z, detach_advantage=False,
                                              reduction="sum"), log_pi)
    torch.testing.assert_close(g_paper, -a)
    torch.testing.assert_close(g_code, -a * (1 - log_pi.detach()))
    # a context whose Ẑ_c = 0 contributes nothing (and no NaN), with or without baseline
    for bl in (False, True):
        lp = torch.tensor([-1.0, -2.0], requires_grad=True)
        loss = cdpg_loss(lp, torch.full((2,), -math.inf), lp.detach(), torch.full((2,), -math.inf), bl)
        (g,) = torch.autograd.grad(loss, lp)
        assert float(loss.detach()) == 0 and torch.equal(g, torch.zeros(2))


def _fit(module, steps: int, seed: int = 0):
    L.seed_everything(seed, verbose=False)
    dm = ContextListDataModule(CONTEXTS, contexts_per_step=4, steps_per_epoch=steps)
    trainer = ex.quiet_fit(module, dm, steps)
    assert module.global_step == steps
    return trainer


STEPS, N = 120, 64


@pytest.mark.parametrize("z_estimate", ["batch", "running"])
def test_cdpg_drives_every_context_kl_down(z_estimate):
    module = CDPG(target=[Pointwise(NextLetter())], model="toy", n_samples=N, minibatch_size=N * 4,
                  max_new_tokens=3, lr=0.1, z_estimate=z_estimate, val_samples=N)
    module.configure_model()
    targets = exact_targets(module.engine.base)
    before = exact_kls(targets, module.model)
    trainer = _fit(module, STEPS)
    after = exact_kls(targets, module.model)
    for c in CONTEXTS:
        assert after[c] < 0.25 * before[c], (c, before[c], after[c])
    # the logged per-context KL estimate is in the right range of the exact average
    assert 0 <= float(trainer.callback_metrics["train/kl_target_policy"]) < 3 * max(before.values())
    if z_estimate == "running":
        # every on-policy sample of c is an unbiased draw of Z_c: the running means converge to Z_c
        for c in CONTEXTS:
            log_sum, count = module.state.context_z[c]
            z_hat = math.exp(log_sum - math.log(count))
            assert count > 1000 and abs(z_hat - targets[c].Z) < 0.1 * targets[c].Z, (c, z_hat, targets[c].Z)
        assert set(module.extra_state()["context_z"]) == set(CONTEXTS)


def test_global_z_dpg_on_conditional_data():
    """The plain DPG module takes multi-context batches: its single running Ẑ estimates E_c[Z_c]
    (here the mean over the uniformly drawn contexts) and it lowers the per-context KLs too."""
    module = DPG(target=[Pointwise(NextLetter())], model="toy", n_samples=N, minibatch_size=N * 4,
                 max_new_tokens=3, lr=0.1, off_policy=False, val_samples=N)
    module.configure_model()
    targets = exact_targets(module.engine.base)
    before = exact_kls(targets, module.model)
    _fit(module, STEPS)
    after = exact_kls(targets, module.model)
    for c in CONTEXTS:
        assert after[c] < 0.5 * before[c], (c, before[c], after[c])
    z_mean = sum(t.Z for t in targets.values()) / 4
    assert abs(math.exp(module.state.log_z) - z_mean) < 0.1 * z_mean
