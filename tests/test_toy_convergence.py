"""Fixed points and convergence on the exact toy space (docs/toy_space.md).

* Sampled DPG, on- and off-policy (KL-adaptive proposal), trained through the real
  ``lit_align.methods.DPG`` LightningModule with a Lightning Trainer, reaches the pointwise
  target ``p = a·b/Z`` (exact KL(p‖π) by enumeration) and its running Ẑ reaches Z.
* KL-regularised RL: natural-gradient ascent driven by the *expected* gradient of
  ``lit_align.losses.rl_kl_loss`` reaches the closed form ``a·exp(r/β)/Z`` to 1e-6 in TV; with
  ``r = log b`` and β = 1 this is the DPG target (KL-control = Bayesian posterior, arXiv:2205.11275). The
  real ``RLKL`` module trained with a Trainer gets close to the same closed form.
* RL without the KL term collapses onto argmax r (exact NPG and the ``Reinforce`` module);
  DPG keeps the target's entropy.

Each Trainer run takes a few seconds on one CPU thread (fixed seeds, deterministic).
"""

from __future__ import annotations

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
from lit_align.losses import dpg_loss, reinforce_loss, rl_kl_loss  # noqa: E402
from lit_align.methods import DPG, RLKL, Reinforce  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.scorers import Count, Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]

PATTERN = "b.*d"  # b(x) = 1 iff a "b" is followed later by a "d": Z ≈ 0.29 under the toy base
DPG_STEPS, DPG_SAMPLES = 150, 256


def _fit(module: L.LightningModule, steps: int, seed: int = 0) -> ToyDataModule:
    L.seed_everything(seed, verbose=False)
    dm = ToyDataModule(steps_per_epoch=steps)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)  # no banners; restored for the rest of the session
    try:
        trainer.fit(module, dm)
    finally:
        log.setLevel(level)
    assert module.global_step == steps
    return dm


def _exact_target(dm: ToyDataModule, module) -> tuple[ToySpace, torch.Tensor, ex.Target]:
    space = dm.space
    log_a = ex.model_log_probs(space, module.engine.base)
    # the module's base is the ToyLM of the enumeration helpers
    torch.testing.assert_close(log_a, ex.base_log_probs(space, seed=0))
    return space, log_a, ex.pointwise_target(log_a, Regex(PATTERN)(space.texts))


def _dpg(off_policy: bool, proposal_update_interval: int = 10) -> DPG:
    return DPG(
        target=[Pointwise(Regex(PATTERN))],
        model="toy",
        n_samples=DPG_SAMPLES,
        minibatch_size=DPG_SAMPLES,
        max_new_tokens=4,
        lr=0.1,
        off_policy=off_policy,
        proposal_update_interval=proposal_update_interval,
    )


@pytest.fixture(scope="module")
def dpg_on_policy():
    module = _dpg(off_policy=False)
    return module, _fit(module, DPG_STEPS)


@pytest.fixture(scope="module")
def dpg_off_policy():
    module = _dpg(off_policy=True)
    return module, _fit(module, DPG_STEPS)


@pytest.fixture(scope="module")
def dpg_frozen_proposal():
    """Off-policy with a proposal never updated: q = a throughout (pure importance sampling)."""
    module = _dpg(off_policy=True, proposal_update_interval=10**9)
    return module, _fit(module, DPG_STEPS)


# ----------------------------------------------------------------------------------- sampled DPG


def _check_dpg(module: DPG, dm: ToyDataModule) -> None:
    space, log_a, tgt = _exact_target(dm, module)
    log_pi = ex.model_log_probs(space, module.model)
    kl_start = ex.kl(tgt.log_p, log_a)
    kl_end = ex.kl(tgt.log_p, log_pi)
    assert kl_start > 1.0  # the target is far from the base: the test is not trivial
    assert kl_end < 0.02, f"KL(p‖π) = {kl_end:.4f} after {DPG_STEPS} steps (start {kl_start:.3f})"
    # running Ẑ: a mean of P/q over every sample drawn. Its standard error is at most the one
    # of sampling from the base (P/q = b ∈ {0,1}, sd √(Z(1−Z))): q only moves towards p = P/Z,
    # which lowers the variance of P/q.
    assert module.state.z_count == DPG_STEPS * DPG_SAMPLES
    z_hat = math.exp(module.state.log_z)
    se = math.sqrt(tgt.Z * (1 - tgt.Z) / module.state.z_count)
    assert abs(z_hat - tgt.Z) < 4 * se, f"Ẑ = {z_hat:.4f}, Z = {tgt.Z:.4f}, 4·SE = {4 * se:.4f}"


def test_dpg_on_policy_reaches_target(dpg_on_policy):
    module, dm = dpg_on_policy
    assert not hasattr(module, "proposal")
    _check_dpg(module, dm)


def test_dpg_off_policy_reaches_target_and_updates_proposal(dpg_off_policy):
    module, dm = dpg_off_policy
    _check_dpg(module, dm)
    space, log_a, tgt = _exact_target(dm, module)
    assert module.state.proposal_updates >= 1
    log_q = ex.model_log_probs(space, module.proposal)
    # the proposal is a snapshot of the trained policy, no longer the base
    assert ex.kl(tgt.log_p, log_q) < 0.1 * ex.kl(tgt.log_p, log_a)
    assert all(not p.requires_grad for p in module.proposal.parameters())


def test_dpg_off_policy_with_fixed_proposal_reaches_target(dpg_frozen_proposal):
    """The importance weights P/q make the gradient unbiased for any fixed q: with q = a for
    the whole run the policy still reaches p (wrong weights, e.g. P/π on q's samples, do not)."""
    module, dm = dpg_frozen_proposal
    assert module.state.proposal_updates == 0
    space, log_a, _ = _exact_target(dm, module)
    torch.testing.assert_close(ex.model_log_probs(space, module.proposal), log_a)
    _check_dpg(module, dm)


def test_dpg_does_not_collapse(dpg_on_policy, dpg_off_policy):
    """Forward KL keeps the target's diversity: H(π) ≈ H(p), and π satisfies the constraint."""
    for module, dm in (dpg_on_policy, dpg_off_policy):
        space, _, tgt = _exact_target(dm, module)
        log_pi = ex.model_log_probs(space, module.model)
        b = Regex(PATTERN)(space.texts)
        assert abs(ex.entropy(log_pi) - ex.entropy(tgt.log_p)) < 0.1
        assert float(ex.expectation(log_pi, b)) > 0.95


# ------------------------------------------------------------------- exact KL-regularised RL


def _npg_rl_kl(log_a: torch.Tensor, r: torch.Tensor, beta: float, steps: int) -> torch.Tensor:
    """Natural-gradient ascent on E_π[r] − β KL(π‖a) for π = softmax(θ), starting at π = a.

    The direction is the expected gradient of ``rl_kl_loss`` under π (by enumeration), whose
    value is −π ⊙ (A − E_π A); dividing by π (the softmax Fisher's pseudo-inverse on the
    tangent space) gives the natural gradient. Step size 0.5/β contracts the error in θ by
    half per step when the loss gradient is right.
    """
    theta = log_a.clone()
    for _ in range(steps):
        th = theta.clone().requires_grad_(True)
        log_pi = torch.log_softmax(th, 0)
        pi = torch.exp(log_pi.detach())
        terms = rl_kl_loss(log_pi, r, log_a, beta, reduction="none")
        (g,) = torch.autograd.grad((pi * terms).sum(), th)
        theta = theta - (0.5 / beta) * g / pi
    return torch.log_softmax(theta, 0)


@pytest.fixture(scope="module")
def toy_space():
    space = ToySpace(4, 4)
    return space, ex.base_log_probs(space, seed=0)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_kl_rl_optimum_is_tilted_base(toy_space, beta):
    space, log_a = toy_space
    r = Count("d")(space.texts) + 0.5 * Regex("^a")(space.texts)
    log_pi = _npg_rl_kl(log_a, r, beta, steps=80)
    log_star = ex.tilted(log_a, r, beta)
    assert ex.tv(log_pi, log_star) < 1e-6
    # the maximum value of the objective is β log Z (J = −β KL(π‖π*) + β log Z)
    log_z = float(torch.logsumexp(log_a + r / beta, 0))
    j = float(ex.expectation(log_pi, r)) - beta * ex.kl(log_pi, log_a)
    assert j == pytest.approx(beta * log_z, abs=1e-9)
    # the result is not the base, and depends on β as the closed form says
    assert ex.tv(log_pi, log_a) > 0.1
    assert ex.tv(log_pi, ex.tilted(log_a, r, 2 * beta)) > 0.05


def test_kl_rl_objective_identity_at_arbitrary_policy(toy_space):
    """J_KL(π) = E_π[r] − β KL(π‖a) = −β KL(π‖π*) + β log Z for any π (arXiv:2205.11275)."""
    space, log_a = toy_space
    r = Count("d")(space.texts)
    gen = torch.Generator().manual_seed(0)
    for beta in (0.3, 2.0):
        log_pi = torch.log_softmax(torch.randn(len(space), generator=gen, dtype=torch.float64), 0)
        j = float(ex.expectation(log_pi, r)) - beta * ex.kl(log_pi, log_a)
        log_z = float(torch.logsumexp(log_a + r / beta, 0))
        assert j == pytest.approx(-beta * ex.kl(log_pi, ex.tilted(log_a, r, beta)) + beta * log_z, rel=1e-12)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_kl_rl_optimum_by_autograd_on_exact_objective(toy_space, beta):
    """Independent of the library's losses: natural-gradient ascent with autograd on the
    enumerated objective (plain L-BFGS in θ stalls where the softmax saturates)."""
    space, log_a = toy_space
    r = Count("d")(space.texts)
    theta = log_a.clone()
    for _ in range(80):
        th = theta.clone().requires_grad_(True)
        log_pi = torch.log_softmax(th, 0)
        pi = torch.exp(log_pi)
        (g,) = torch.autograd.grad((pi * r).sum() - beta * (pi * (log_pi - log_a)).sum(), th)
        theta = theta + (0.5 / beta) * g / pi.detach()
    assert ex.tv(torch.log_softmax(theta, 0), ex.tilted(log_a, r, beta)) < 1e-6


def test_kl_rl_with_log_b_reward_equals_dpg_target(toy_space):
    """r = log b, β = 1: the KL-control optimum a·b/Z is the GDC/DPG target p (docs/toy_space.md).

    ``log 0`` is replaced by ``log ε`` (ε = 1e-12) so that the shaped reward stays finite; the
    ε-target differs from p by ≤ ε/Z in TV. At that optimum the expected DPG gradient also
    vanishes: forward and reverse KL share the fixed point.
    """
    space, log_a = toy_space
    b = Regex(PATTERN)(space.texts)
    tgt = ex.pointwise_target(log_a, b)
    r = torch.log(b + 1e-12)
    log_pi = _npg_rl_kl(log_a, r, beta=1.0, steps=80)
    assert ex.tv(log_pi, tgt.log_p) < 1e-6
    assert ex.kl(tgt.log_p, log_pi) < 1e-9
    theta = log_pi.clone().requires_grad_(True)
    lp = torch.log_softmax(theta, 0)
    terms = dpg_loss(lp, tgt.log_P, lp.detach(), tgt.log_Z, reduction="none")
    (g,) = torch.autograd.grad((torch.exp(lp.detach()) * terms).sum(), theta)
    assert g.abs().max() < 1e-9
    # a graded potential φ ∈ (0, 1] (not just b ∈ {0, 1}, for which b^(1/β) = b) needs β = 1:
    # the KL-control optimum for r = log φ is then the EBM a·φ/Z, and not for another β
    phi = 0.2 + 0.8 * b
    log_pi = _npg_rl_kl(log_a, torch.log(phi), beta=1.0, steps=80)
    ebm = ex.target(log_a, torch.log(phi))
    assert ex.tv(log_pi, ebm.log_p) < 1e-6
    assert ex.tv(_npg_rl_kl(log_a, torch.log(phi), beta=0.5, steps=80), ebm.log_p) > 0.05


# -------------------------------------------------------------------- RLKL LightningModule


def test_rlkl_module_approaches_tilted_base():
    beta = 0.5
    module = RLKL(reward=Count("d"), kl_coef=beta, model="toy", n_samples=256, minibatch_size=256,
                  max_new_tokens=4, lr=0.05, baseline="batch_mean")
    dm = _fit(module, steps=200)
    space = dm.space
    log_a = ex.model_log_probs(space, module.engine.base)
    log_pi = ex.model_log_probs(space, module.model)
    log_star = ex.tilted(log_a, Count("d")(space.texts), beta)
    assert ex.tv(log_a, log_star) > 0.3  # the target is far from where training starts
    tv = ex.tv(log_pi, log_star)
    assert tv < 0.05, f"TV(π, a·e^(r/β)/Z) = {tv:.4f}"
    assert ex.kl(log_pi, log_star) < 0.01
    assert abs(ex.entropy(log_pi) - ex.entropy(log_star)) < 0.05


# -------------------------------------------------------------------------- collapse without KL


def test_rl_without_kl_collapses_under_natural_gradient(toy_space):
    """NPG on E_π[r] with the expected REINFORCE gradient: π_t ∝ a·e^{t·r} → δ(argmax r)."""
    space, log_a = toy_space
    r = Count("d")(space.texts)
    theta = log_a.clone()
    for t in range(1, 41):
        th = theta.clone().requires_grad_(True)
        log_pi = torch.log_softmax(th, 0)
        pi = torch.exp(log_pi.detach())
        (g,) = torch.autograd.grad((pi * reinforce_loss(log_pi, r, reduction="none")).sum(), th)
        theta = theta - g / pi  # natural-gradient step of size 1
        if t == 5:  # the trajectory is the KL-RL optimum with β = 1/t
            torch.testing.assert_close(torch.log_softmax(theta, 0), ex.tilted(log_a, r, 1.0 / t), rtol=0, atol=1e-9)
    log_pi = torch.log_softmax(theta, 0)
    assert ex.entropy(log_pi) < 0.05
    assert float(torch.exp(log_pi[int(torch.argmax(r))])) > 0.99


def test_reinforce_module_collapses(dpg_on_policy):
    module = Reinforce(reward=Count("d"), model="toy", n_samples=256, minibatch_size=256, max_new_tokens=4, lr=0.5)
    dm = _fit(module, steps=100)
    space = dm.space
    log_a = ex.model_log_probs(space, module.engine.base)
    log_pi = ex.model_log_probs(space, module.model)
    h_a, h_pi = ex.entropy(log_a), ex.entropy(log_pi)
    # far below the base's entropy. Not always ~0: vanilla (sampled) PG can freeze on a
    # suboptimal face, e.g. spread over the equal-reward sequences with three d's (docs/toy_space.md)
    assert h_pi < 0.5 and h_pi < 0.15 * h_a, f"H(π) = {h_pi:.3f}, H(a) = {h_a:.3f}"
    # the policy sits on high-reward sequences
    assert float(ex.expectation(log_pi, Count("d")(space.texts))) >= 2.9
    # DPG, trained as long on the same space, keeps a diverse distribution
    dpg, dpg_dm = dpg_on_policy
    assert ex.entropy(ex.model_log_probs(dpg_dm.space, dpg.model)) > 3 * max(h_pi, 0.5)
