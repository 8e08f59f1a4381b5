"""Exact population optima of the preference objectives on the toy space (docs/toy_space.md).

Pairs (a, b) ~ μ×μ over all 64 sequences of V = 4, T = 3, labels from a Bradley–Terry model; the
population loss is Σ_ab μ(a)μ(b)·P(a≻b)·loss(a chosen, b rejected), built from the
library's per-pair losses (``reduction="none"``). The policy is a sequence-level softmax
(fully expressive), minimised with L-BFGS in float64; the optima are compared with the
closed forms of docs/toy_space.md.
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_exact import base_log_probs, kl, tilted, tv

from lit_align.losses import kl_shaped_reward, reinforce_loss
from lit_align.models.toy import ToySpace
from lit_align.preference import (
    bradley_terry_loss,
    bt_probability,
    dpo_loss,
    pmle_loss,
    preference_distillation_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")

GAMMA = 0.5  # Yun et al.'s toy temperature


@pytest.fixture(scope="module")
def toy():
    space = ToySpace(4, 3)  # 64 sequences, 4096 ordered pairs: exact and fast
    log_a = base_log_probs(space, seed=0)  # π0 = μ
    log_star = base_log_probs(space, seed=1)  # π*
    r = torch.randn(len(space), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return space, log_a, log_star, r


def pair_grid(log_mu: torch.Tensor, p_a_wins: torch.Tensor) -> torch.Tensor:
    """W_ab = μ(a)·μ(b)·P(a ≻ b): the probability that the data holds (chosen a, rejected b)."""
    mu = log_mu.exp()
    return (mu[:, None] * mu[None, :] * p_a_wins).reshape(-1)


def expand(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v[a], v[b]) for all ordered pairs, flattened like ``pair_grid``."""
    n = v.shape[0]
    return v[:, None].expand(n, n).reshape(-1), v[None, :].expand(n, n).reshape(-1)


def minimise(loss_fn, n: int, softmax: bool = True) -> torch.Tensor:
    """argmin over sequence-level softmax logits; returns the optimal log π (float64).
    With ``softmax=False`` the free vector itself is optimised and returned (a tabular reward)."""
    theta = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=1000, tolerance_grad=1e-13, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")
    param = (lambda t: torch.log_softmax(t, 0)) if softmax else (lambda t: t)

    def closure():
        opt.zero_grad()
        loss = loss_fn(param(theta))
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return param(theta.detach())


def bt_labels(score: torch.Tensor, scale: float) -> torch.Tensor:
    sa, sb = expand(score)
    return bt_probability(sa, sb, scale).reshape(score.shape[0], score.shape[0])


def test_dpo_optimum_is_tilted_reference(toy):
    space, log_a, _, r = toy
    beta = 0.5
    w = pair_grid(log_a, bt_labels(r, 1.0))
    ref_c, ref_r = expand(log_a)

    def loss(log_pi):
        c, rj = expand(log_pi)
        return (w * dpo_loss(c, rj, ref_c, ref_r, beta, reduction="none")).sum()

    log_pi = minimise(loss, len(space))
    assert tv(log_pi, tilted(log_a, r, beta)) < 1e-6
    assert tv(log_a, tilted(log_a, r, beta)) > 0.1  # the tilt is far from the reference


def test_ipo_optimum(toy):
    space, log_a, _, r = toy
    tau = 0.5
    p = bt_labels(r, 1.0)
    w = pair_grid(log_a, p)
    ref_c, ref_r = expand(log_a)
    p_vs_mu = (p * log_a.exp()[None, :]).sum(1)  # P(y ≻ μ)

    def loss(log_pi):
        c, rj = expand(log_pi)
        return (w * dpo_loss(c, rj, ref_c, ref_r, tau, loss_type="ipo", reduction="none")).sum()

    log_pi = minimise(loss, len(space))
    assert tv(log_pi, tilted(log_a, p_vs_mu, tau)) < 1e-6


def test_pmle_with_beta_zero_recovers_target_lm(toy):
    space, log_a, log_star, _ = toy
    w = pair_grid(log_a, bt_labels(log_star, GAMMA))

    def loss(log_pi):
        c, rj = expand(log_pi)
        return (w * pmle_loss(c, rj, GAMMA, reduction="none")).sum()

    log_pi = minimise(loss, len(space))
    assert kl(log_star, log_pi) < 1e-9
    # DPO on the same data (β = γ) is biased toward π0: it reaches π0·π*/Z, not π*
    ref_c, ref_r = expand(log_a)
    log_dpo = minimise(lambda lp: (w * dpo_loss(*expand(lp), ref_c, ref_r, GAMMA, reduction="none")).sum(), len(space))
    assert tv(log_dpo, tilted(log_a, GAMMA * log_star, GAMMA)) < 1e-6
    assert kl(log_star, log_dpo) > 0.1


def test_reward_model_then_distillation_recovers_target_lm(toy):
    space, log_a, log_star, _ = toy
    p = bt_labels(log_star, GAMMA)
    w = pair_grid(log_a, p)

    # (i) Bradley–Terry reward model, tabular: R̂ = γ ln π* + c
    r_hat = minimise(lambda r: (w * bradley_terry_loss(*expand(r), reduction="none")).sum(), len(space), softmax=False)
    centred = r_hat - GAMMA * log_star
    assert float(centred.max() - centred.min()) < 1e-5

    # (ii) distillation on soft labels σ(R̂(a) − R̂(b)), pairs from μ (both orders appear in μ×μ)
    soft = bt_labels(r_hat, 1.0).reshape(-1)
    mu2 = pair_grid(log_a, torch.ones(len(space), len(space)))

    def loss(log_pi):
        c, rj = expand(log_pi)
        return (mu2 * preference_distillation_loss(c, rj, soft, GAMMA, reduction="none")).sum()

    log_pi = minimise(loss, len(space))
    assert kl(log_star, log_pi) < 1e-9
    assert float(loss(log_pi)) < 1e-9  # the Bernoulli KL is 0 at the optimum


def _rl_population_optimum(log_a: torch.Tensor, reward: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Maximise J(π) = E_π[R] − β·KL(π‖a) + γ·H(π) over the softmax with L-BFGS, where the
    gradient comes from the library's RL surrogate (``kl_shaped_reward`` + ``reinforce_loss``
    weighted by the exact π) and the value from an independent enumeration of J: the line
    search only succeeds if the library's gradient is the gradient of J."""
    theta = torch.zeros_like(log_a, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        log_pi = torch.log_softmax(theta, 0)
        pi = log_pi.exp().detach()
        shaped = kl_shaped_reward(reward, log_pi, log_a, beta, entropy_coef=gamma)
        baseline = (pi * shaped).sum()
        surrogate = (pi * reinforce_loss(log_pi, shaped, baseline, reduction="none")).sum()
        surrogate.backward()
        with torch.no_grad():
            j = (pi * (reward - beta * (log_pi - log_a) - gamma * log_pi)).sum()
        return -j

    for _ in range(3):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), 0)


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.5])
def test_reverse_kl_reaches_geometric_mixture(toy, beta):
    space, log_a, log_star, _ = toy
    r_hat = GAMMA * log_star + 1.7  # an exact reward model (any constant)
    log_pi = _rl_population_optimum(log_a, r_hat, beta, GAMMA)
    alpha = beta / (beta + GAMMA)
    closed = alpha * log_a + (1 - alpha) * log_star
    closed = closed - torch.logsumexp(closed, 0)
    assert tv(log_pi, closed) < 1e-6
    if beta == 0.0:
        assert kl(log_star, log_pi) < 1e-9  # RKL with β = 0 is consistent: π*


def test_rlhf_with_the_same_reward_does_not_reach_target(toy):
    space, log_a, log_star, _ = toy
    beta = 0.05
    r_hat = GAMMA * log_star
    log_pi = _rl_population_optimum(log_a, r_hat, beta, 0.0)
    closed = tilted(log_a, r_hat, beta)  # π0·π*^{γ/β}/Z
    assert tv(log_pi, closed) < 1e-6
    assert kl(log_star, log_pi) > 1.0
    rkl = _rl_population_optimum(log_a, r_hat, beta, GAMMA)
    assert kl(log_star, rkl) < kl(log_star, log_pi) / 10


def test_entropy_bonus_estimator_is_unbiased(toy):
    """E_π[R̃] equals J = E_π[R] − β·KL(π‖a) + γ·H(π) exactly (the logged objective)."""
    _, log_a, log_star, r = toy
    log_pi = log_star  # any policy
    shaped = kl_shaped_reward(r, log_pi, log_a, 0.3, entropy_coef=0.2)
    pi = log_pi.exp()
    expected = (pi * r).sum() - 0.3 * kl(log_pi, log_a) + 0.2 * float(-(pi * log_pi).sum())
    assert math.isclose(float((pi * shaped).sum()), float(expected), rel_tol=1e-12)
