"""Loss functions (lit_align.losses): expected gradients against exact gradients (docs/toy_space.md).

The policy is a sequence-level softmax ``π_θ = softmax(θ)`` over the 256 sequences of the
toy space. The *expected* gradient of a per-sample loss under a sampling distribution q
is obtained by enumeration: ``∇_θ Σ_x q(x) · term_x(θ)``, the terms being the loss with
``reduction="none"`` evaluated on every x once. It must equal the exact gradient of the
objective the loss claims to optimise, computed in closed form or by autograd on the
exact (enumerated) objective.
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.losses import dpg_loss, kl_shaped_reward, reinforce_loss, rl_kl_loss  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.scorers import Count, Regex  # noqa: E402


pytestmark = pytest.mark.usefixtures("single_thread")

TOL = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def toy():
    space = ToySpace(4, 4)
    log_a = ex.base_log_probs(space, seed=0)
    b = Regex("b.*d")(space.texts)
    tgt = ex.pointwise_target(log_a, b)
    gen = torch.Generator().manual_seed(0)
    theta0 = 1.5 * torch.randn(len(space), generator=gen, dtype=torch.float64)  # a policy ≠ a, ≠ p
    reward = Count("d")(space.texts) + 0.5 * Regex("^a")(space.texts)
    return dict(space=space, log_a=log_a, b=b, tgt=tgt, theta0=theta0, reward=reward)


def _theta(toy) -> torch.Tensor:
    return toy["theta0"].clone().requires_grad_(True)


def _expected_grad(theta: torch.Tensor, weights: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """∇_θ Σ_x weights(x)·term_x (weights = the sampling distribution, held fixed)."""
    (g,) = torch.autograd.grad((weights.detach() * terms).sum(), theta, retain_graph=True)
    return g


# ----------------------------------------------------------------------------------------- DPG


@pytest.mark.parametrize("baseline", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("proposal", ["on_policy", "base", "other"])
def test_dpg_expected_gradient_is_exact_forward_kl_gradient(toy, baseline, normalize, proposal):
    """E_q[∇ loss] = ∇KL(p‖π_θ) = π − p (normalize) or Z·(π − p) (GDC's unnormalised weights)."""
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    tgt = toy["tgt"]
    if proposal == "on_policy":
        log_q = log_pi.detach()
    elif proposal == "base":
        log_q = toy["log_a"]
    else:  # a third distribution with full support, unrelated to π and a
        gen = torch.Generator().manual_seed(5)
        log_q = torch.log_softmax(torch.randn(len(theta), generator=gen, dtype=torch.float64), 0)
    terms = dpg_loss(log_pi, tgt.log_P, log_q, tgt.log_Z, baseline=baseline, normalize=normalize, reduction="none")
    assert terms.shape == theta.shape
    g = _expected_grad(theta, torch.exp(log_q), terms)

    pi, p = torch.softmax(theta.detach(), 0), tgt.p
    exact = (pi - p) * (1.0 if normalize else tgt.Z)
    torch.testing.assert_close(g, exact, **TOL)
    # and the same as autograd on the exact objective KL(p‖π_θ)
    theta2 = _theta(toy)
    kl = ex.kl(tgt.log_p, torch.log_softmax(theta2.detach(), 0))
    p_pos = tgt.p > 0
    kl_t = (tgt.p[p_pos] * (tgt.log_p[p_pos] - torch.log_softmax(theta2, 0)[p_pos])).sum()
    assert float(kl_t.detach()) == pytest.approx(kl, rel=1e-12)
    (g_auto,) = torch.autograd.grad(kl_t, theta2)
    torch.testing.assert_close(g, g_auto * (1.0 if normalize else tgt.Z), **TOL)


def test_dpg_on_policy_accepts_undetached_log_q(toy):
    """On-policy callers pass ``log_q = log_pi``: the loss must detach it (π/q = 1, no extra gradient)."""
    tgt = toy["tgt"]
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    w = torch.softmax(theta.detach(), 0)
    g1 = _expected_grad(theta, w, dpg_loss(log_pi, tgt.log_P, log_pi, tgt.log_Z, reduction="none"))
    g2 = _expected_grad(theta, w, dpg_loss(log_pi, tgt.log_P, log_pi.detach(), tgt.log_Z, reduction="none"))
    torch.testing.assert_close(g1, g2, **TOL)


def test_dpg_baseline_is_unbiased_but_changes_per_sample_terms(toy):
    """With and without the baseline the expected gradients agree, the per-sample ones do not,
    and the baseline lowers the variance of the on-policy per-sample gradient when π is near p."""
    tgt = toy["tgt"]
    # π close to p (mixed with a little of a so that it has full support)
    theta = torch.log(0.9 * tgt.p + 0.1 * torch.exp(toy["log_a"])).requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    pi = torch.exp(log_pi.detach())
    t0 = dpg_loss(log_pi, tgt.log_P, log_pi.detach(), tgt.log_Z, baseline=False, reduction="none")
    t1 = dpg_loss(log_pi, tgt.log_P, log_pi.detach(), tgt.log_Z, baseline=True, reduction="none")
    assert not torch.allclose(t0, t1)
    # per-sample coefficient multiplying ∇log π(x): −(P/(Zπ) − [1])
    coef0 = -torch.exp(tgt.log_P - tgt.log_Z - log_pi.detach())
    coef1 = coef0 + 1.0
    torch.testing.assert_close(t0, coef0 * log_pi.detach(), **TOL)
    torch.testing.assert_close(t1, coef1 * log_pi.detach(), **TOL)
    # E_π‖coef·∇log π‖² with ∇_θ log π(x) = e_x − π
    grad_sq = (1 - pi) ** 2 + (pi**2).sum() - pi**2  # ‖e_x − π‖²
    second_moment0 = (pi * coef0**2 * grad_sq).sum()
    second_moment1 = (pi * coef1**2 * grad_sq).sum()
    assert second_moment1 < 0.5 * second_moment0


def test_dpg_zero_target_samples_give_zero_terms_and_no_nan(toy):
    tgt = toy["tgt"]
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    log_q = toy["log_a"]
    zero = torch.isneginf(tgt.log_P)
    t_plain = dpg_loss(log_pi, tgt.log_P, log_q, tgt.log_Z, baseline=False, reduction="none")
    assert torch.isfinite(t_plain).all()
    assert (t_plain[zero] == 0).all() and (t_plain[~zero] != 0).all()
    t_base = dpg_loss(log_pi, tgt.log_P, log_q, tgt.log_Z, baseline=True, reduction="none")
    # the baseline term −(π/q)·log π remains on P = 0 samples (it pushes their mass down)
    torch.testing.assert_close(
        t_base[zero], (torch.exp(log_pi - log_q) * log_pi)[zero].detach(), **TOL
    )
    (g,) = torch.autograd.grad(t_base.mean(), theta)
    assert torch.isfinite(g).all()


def test_dpg_hand_computed_values():
    # two samples: P/q = e^{-1} and e^{1}; Ẑ = 2; π/q = e^{-0.5}, e^{0}
    log_pi = torch.tensor([-1.5, -2.0], requires_grad=True)
    log_q = torch.tensor([-1.0, -2.0])
    log_P = torch.tensor([-2.0, -1.0])
    log_z = math.log(2.0)
    w = torch.tensor([math.exp(-1) / 2, math.exp(1) / 2])
    r = torch.tensor([math.exp(-0.5), 1.0])
    lp = log_pi.detach()
    cases = {
        (False, True): -w * lp,
        (True, True): -(w - r) * lp,
        (False, False): -2 * w * lp,
        (True, False): -(2 * w - 2 * r) * lp,
    }
    for (baseline, normalize), expected in cases.items():
        terms = dpg_loss(log_pi, log_P, log_q, log_z, baseline, normalize, reduction="none")
        torch.testing.assert_close(terms.detach(), expected, rtol=1e-6, atol=1e-7)
        mean = dpg_loss(log_pi, log_P, log_q, log_z, baseline, normalize)
        torch.testing.assert_close(mean.detach(), expected.mean(), rtol=1e-6, atol=1e-7)
        total = dpg_loss(log_pi, log_P, log_q, torch.tensor(log_z), baseline, normalize, reduction="sum")
        torch.testing.assert_close(total.detach(), expected.sum(), rtol=1e-6, atol=1e-7)
        (g,) = torch.autograd.grad(mean, log_pi)
        # the coefficients are detached: d loss / d log π(x_i) = −coef_i / N
        torch.testing.assert_close(g, expected / lp / 2, rtol=1e-6, atol=1e-7)
    assert dpg_loss(log_pi, log_P, log_q, log_z).dtype == log_pi.dtype


# ------------------------------------------------------------------------------------ REINFORCE


@pytest.mark.parametrize("baseline", [0.0, 1.7])
def test_reinforce_expected_gradient_is_exact_policy_gradient(toy, baseline):
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    r = toy["reward"]
    terms = reinforce_loss(log_pi, r, baseline=baseline, reduction="none")
    g = _expected_grad(theta, torch.exp(log_pi), terms)
    theta2 = _theta(toy)
    (g_exact,) = torch.autograd.grad((torch.softmax(theta2, 0) * r).sum(), theta2)
    torch.testing.assert_close(g, -g_exact, **TOL)
    pi = torch.softmax(theta.detach(), 0)
    torch.testing.assert_close(g, -pi * (r - (pi * r).sum()), **TOL)  # closed form π⊙(r − E_π r)


def test_reinforce_hand_computed_values():
    log_pi = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    reward = torch.tensor([1.0, 3.0, 0.0])
    terms = reinforce_loss(log_pi, reward, baseline=1.0, reduction="none")
    torch.testing.assert_close(terms.detach(), torch.tensor([0.0, 4.0, -0.5]))
    loss = reinforce_loss(log_pi, reward, baseline=1.0)
    torch.testing.assert_close(loss.detach(), torch.tensor(3.5 / 3))
    assert float(reinforce_loss(log_pi, reward, 1.0, reduction="sum").detach()) == pytest.approx(3.5)
    (g,) = torch.autograd.grad(loss, log_pi)
    torch.testing.assert_close(g, torch.tensor([0.0, -2.0, 1.0]) / 3)
    # a per-sample baseline tensor, and the reward carries no gradient
    reward_g = reward.clone().requires_grad_(True)
    per = reinforce_loss(log_pi, reward_g, baseline=torch.tensor([1.0, 0.0, 2.0]), reduction="none")
    torch.testing.assert_close(per.detach(), torch.tensor([0.0, 6.0, -1.0]))
    per.sum().backward()
    assert reward_g.grad is None


def test_invalid_reduction_raises():
    x = torch.zeros(3, requires_grad=True)
    for fn in (
        lambda red: reinforce_loss(x, torch.ones(3), reduction=red),
        lambda red: dpg_loss(x, torch.zeros(3), torch.zeros(3), 0.0, reduction=red),
        lambda red: rl_kl_loss(x, torch.ones(3), torch.zeros(3), 0.1, reduction=red),
    ):
        with pytest.raises(ValueError, match="reduction"):
            fn("avg")


# ---------------------------------------------------------------------------------- RL with KL


def test_kl_shaped_reward_hand_computed():
    r = torch.tensor([1.0, 2.0])
    log_pi = torch.tensor([-1.0, -2.0], requires_grad=True)
    log_a = torch.tensor([-1.5, -1.0])
    shaped = kl_shaped_reward(r, log_pi, log_a, kl_coef=0.5)
    torch.testing.assert_close(shaped, torch.tensor([0.75, 2.5], dtype=torch.float64))
    assert shaped.dtype == torch.float64 and not shaped.requires_grad
    # β = 0 is the plain reward
    torch.testing.assert_close(kl_shaped_reward(r, log_pi, log_a, 0.0), r.double())


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_rl_kl_expected_gradient_is_exact_gradient_of_elbo(toy, beta):
    """E_π[∇ loss] = −∇(E_π[r] − β·KL(π‖a)), for any constant baseline."""
    log_a, r = toy["log_a"], toy["reward"]
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    for baseline in (0.0, 2.5):
        terms = rl_kl_loss(log_pi, r, log_a, beta, baseline=baseline, reduction="none")
        g = _expected_grad(theta, torch.exp(log_pi), terms)
        theta2 = _theta(toy)
        lp2 = torch.log_softmax(theta2, 0)
        pi2 = torch.exp(lp2)
        objective = (pi2 * r).sum() - beta * (pi2 * (lp2 - log_a)).sum()
        (g_exact,) = torch.autograd.grad(objective, theta2)
        torch.testing.assert_close(g, -g_exact, **TOL)
    # the mean of the shaped reward over π is the objective itself (k1 estimator, unbiased)
    pi = torch.exp(log_pi.detach())
    shaped = kl_shaped_reward(r, log_pi, log_a, beta)
    objective = float((pi * r).sum()) - beta * ex.kl(log_pi.detach(), log_a)
    assert float((pi * shaped).sum()) == pytest.approx(objective, rel=1e-12)


def test_rl_kl_gradient_vanishes_exactly_at_the_tilted_optimum(toy):
    log_a, r = toy["log_a"], toy["reward"]
    beta = 0.7
    theta = ex.tilted(log_a, r, beta).clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, 0)
    g = _expected_grad(theta, torch.exp(log_pi), rl_kl_loss(log_pi, r, log_a, beta, reduction="none"))
    assert g.abs().max() < 1e-12
    # ... but not at the base or at a mis-tilted distribution
    for wrong in (log_a, ex.tilted(log_a, r, 2 * beta)):
        theta = wrong.clone().requires_grad_(True)
        log_pi = torch.log_softmax(theta, 0)
        g = _expected_grad(theta, torch.exp(log_pi), rl_kl_loss(log_pi, r, log_a, beta, reduction="none"))
        assert g.abs().max() > 1e-3


def test_rl_kl_reductions(toy):
    log_a, r = toy["log_a"], toy["reward"]
    theta = _theta(toy)
    log_pi = torch.log_softmax(theta, 0)
    none = rl_kl_loss(log_pi, r, log_a, 0.3, reduction="none")
    torch.testing.assert_close(rl_kl_loss(log_pi, r, log_a, 0.3), none.mean())
    torch.testing.assert_close(rl_kl_loss(log_pi, r, log_a, 0.3, reduction="sum"), none.sum())
    shaped = kl_shaped_reward(r, log_pi, log_a, 0.3)
    torch.testing.assert_close(none, reinforce_loss(log_pi, shaped, reduction="none"))
