"""IS estimators (lit_align.estimators) against exact enumeration on the toy space (docs/toy_space.md).

The base ``a`` is the tabular ToyLM (seed 0), the target the pointwise EBM ``P = a·b`` with
``b(x) = [x matches "b.*d"]`` (Z ≈ 0.29; about 70% of the base's samples have ``P = 0``),
and the policy π another ToyLM (seed 1). Samples are drawn i.i.d. from the exact
distributions by multinomial sampling over the 256 sequences. Each estimator is computed
on ``R`` independent replicate sample sets of size ``N``; the replicate mean must match the
exact enumerated value within 4 standard errors, the standard error being the empirical
standard deviation of the replicates divided by √R (fixed seeds, so the test is
deterministic).
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align import estimators as est  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.scorers import Count, Regex  # noqa: E402

R, N = 200, 4000  # replicates × samples per replicate


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def toy():
    space = ToySpace(4, 4)
    log_a = ex.base_log_probs(space, seed=0)
    log_pi = ex.base_log_probs(space, seed=1, scale=0.5)
    b = Regex("b.*d")(space.texts)
    tgt = ex.pointwise_target(log_a, b)
    phi = torch.stack([Count("d")(space.texts), Regex("^a")(space.texts)], dim=-1)  # (|X|, 2)
    assert 0.1 < tgt.Z < 0.5 and (b == 0).any()  # a non-trivial target with P = 0 somewhere
    return dict(space=space, log_a=log_a, log_pi=log_pi, b=b, tgt=tgt, phi=phi)


def _exact(toy) -> dict[str, float | torch.Tensor]:
    log_a, log_pi, tgt, phi = toy["log_a"], toy["log_pi"], toy["tgt"], toy["phi"]
    log_p = tgt.log_p
    w = torch.exp(tgt.log_P - log_a)  # P/q with q = a
    return {
        "z": tgt.Z,
        "kl_target_policy": ex.kl(log_p, log_pi),
        "kl_target_policy_true_z": ex.kl(log_p, log_pi),
        "kl_target_proposal": ex.kl(log_p, log_a),
        "tv_target_policy": ex.tv(log_p, log_pi),
        "tv_target_proposal": ex.tv(log_p, log_a),
        "js_target_policy": ex.js(log_p, log_pi),
        "kl_policy_base_on_pi": ex.kl(log_pi, log_a),
        "kl_policy_base_is": ex.kl(log_pi, log_a),
        "moments_on_pi": ex.expectation(log_pi, phi),
        "moments_is": ex.expectation(log_pi, phi),
        # normalised ESS of N weights P/q tends to (E_q w)² / E_q[w²]; with q = a, w = b ∈ {0, 1}
        "ess": float(tgt.Z**2 / (torch.exp(log_a) * w * w).sum()),
        # non-binary weights: P/π on π's samples
        "ess_pi": float(tgt.Z**2 / (torch.exp(2 * tgt.log_P - log_pi)).sum()),
    }


def _one_replicate(toy, gen: torch.Generator) -> dict[str, float | torch.Tensor]:
    log_a, log_pi, tgt, phi = toy["log_a"], toy["log_pi"], toy["tgt"], toy["phi"]
    i = ex.sample_indices(log_a, N, gen)  # x ~ q = a
    j = ex.sample_indices(log_pi, N, gen)  # x ~ π
    lP, lq, lpi = tgt.log_P[i], log_a[i], log_pi[i]
    out = {
        "z": float(torch.exp(est.log_z_hat(lP, lq))),
        "kl_target_policy": float(est.kl_target_policy(lP, lq, lpi)),
        "kl_target_policy_true_z": float(est.kl_target_policy(lP, lq, lpi, log_z=tgt.log_Z)),
        "kl_target_proposal": float(est.kl_target_policy(lP, lq, lq)),
        "tv_target_policy": float(est.tv_target_policy(lP, lq, lpi)),
        "tv_target_proposal": float(est.tv_target_policy(lP, lq, lq)),
        "js_target_policy": float(est.js_target_policy(lP, lq, lpi)),
        "kl_policy_base_on_pi": float(est.kl_policy_base(log_pi[j], log_a[j])),
        "kl_policy_base_is": float(est.kl_policy_base(lpi, lq, log_q=lq)),
        "moments_on_pi": est.policy_moments(phi[j]),
        "moments_is": est.policy_moments(phi[i], log_pi=lpi, log_q=lq),
        "ess": float(est.effective_sample_size(est.log_importance_weights(lP, lq))),
        "ess_pi": float(est.effective_sample_size(est.log_importance_weights(tgt.log_P[j], log_pi[j]))),
    }
    for k, v in out.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), f"{k} is not finite on a sample with P = 0 rows"
    return out


@pytest.fixture(scope="module")
def replicates(toy):
    gen = torch.Generator().manual_seed(1234)
    reps = [_one_replicate(toy, gen) for _ in range(R)]
    return {k: torch.stack([torch.as_tensor(r[k], dtype=torch.float64) for r in reps]) for k in reps[0]}


METRICS = [
    "z",
    "kl_target_policy",
    "kl_target_policy_true_z",
    "kl_target_proposal",
    "tv_target_policy",
    "tv_target_proposal",
    "js_target_policy",
    "kl_policy_base_on_pi",
    "kl_policy_base_is",
    "moments_on_pi",
    "moments_is",
    "ess",
    "ess_pi",
]


@pytest.mark.parametrize("name", METRICS)
def test_matches_exact_within_4_standard_errors(toy, replicates, name):
    exact = torch.as_tensor(_exact(toy)[name], dtype=torch.float64)
    values = replicates[name]  # (R,) or (R, k)
    mean, sd = values.mean(0), values.std(0)
    se = sd / math.sqrt(R)
    assert (sd > 0).all(), "replicates identical: the samples are not random"
    # consistency: one replicate of N samples is already close (the estimator concentrates)
    assert (sd < 0.2 * exact.abs().clamp(min=0.2)).all(), f"{name}: sd {sd} too large for N={N}"
    err = (mean - exact).abs()
    assert (err <= 4 * se).all(), f"{name}: mean {mean} vs exact {exact} (|err| {err} > 4·SE {4 * se})"


def test_samples_with_zero_target_are_present(toy):
    """The replicates do exercise the ``log P = -inf`` path (most base samples violate b)."""
    gen = torch.Generator().manual_seed(0)
    i = ex.sample_indices(toy["log_a"], N, gen)
    frac = torch.isneginf(toy["tgt"].log_P[i]).double().mean()
    assert 0.5 < frac < 0.9


# --------------------------------------------------------------------- exactness on the whole space


def test_exact_on_complete_enumeration_with_uniform_q(toy):
    """Each x once, with q uniform: N·q(x) = 1, so every IS average is the exact sum."""
    log_a, log_pi, tgt, phi = toy["log_a"], toy["log_pi"], toy["tgt"], toy["phi"]
    n = log_a.numel()
    lq = torch.full_like(log_a, -math.log(n))
    lP = tgt.log_P
    e = _exact(toy)
    tol = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(est.log_z_hat(lP, lq), torch.tensor(tgt.log_Z, dtype=torch.float64), **tol)
    torch.testing.assert_close(float(est.kl_target_policy(lP, lq, log_pi)), e["kl_target_policy"], **tol)
    torch.testing.assert_close(float(est.kl_target_policy(lP, lq, log_a)), e["kl_target_proposal"], **tol)
    torch.testing.assert_close(float(est.tv_target_policy(lP, lq, log_pi)), e["tv_target_policy"], **tol)
    torch.testing.assert_close(float(est.js_target_policy(lP, lq, log_pi)), e["js_target_policy"], **tol)
    torch.testing.assert_close(float(est.kl_policy_base(log_pi, log_a, log_q=lq)), e["kl_policy_base_is"], **tol)
    torch.testing.assert_close(est.policy_moments(phi, log_pi=log_pi, log_q=lq), e["moments_is"], **tol)
    torch.testing.assert_close(
        est.policy_moments(phi[:, 0], log_pi=log_pi, log_q=lq), e["moments_is"][0], **tol
    )
    # ESS of the weights P/q (q uniform) is Z² / (n Σ P²)
    w = torch.exp(lP - lq)
    ess = (w.sum() ** 2 / (w * w).sum()) / n
    torch.testing.assert_close(est.effective_sample_size(lP - lq), ess, **tol)
    # divergences of a distribution to itself are 0
    lp = tgt.log_p
    assert abs(float(est.kl_target_policy(lP, lq, lp))) < 1e-12
    assert abs(float(est.tv_target_policy(lP, lq, lp))) < 1e-12
    assert abs(float(est.js_target_policy(lP, lq, lp))) < 1e-12


def test_js_is_symmetric_and_bounded(toy):
    log_pi, tgt = toy["log_pi"], toy["tgt"]
    n = log_pi.numel()
    lq = torch.full_like(log_pi, -math.log(n))
    js = float(est.js_target_policy(tgt.log_P, lq, log_pi))
    # swap the roles: target π (Z = 1), "policy" p
    js_swapped = float(est.js_target_policy(log_pi, lq, tgt.log_p))
    assert js == pytest.approx(js_swapped, rel=1e-10)
    assert 0 < js < math.log(2)


# ---------------------------------------------------------------------------- P = 0 and NaN guards


def test_zero_target_samples_contribute_nothing(toy):
    gen = torch.Generator().manual_seed(7)
    log_a, log_pi, tgt = toy["log_a"], toy["log_pi"], toy["tgt"]
    i = ex.sample_indices(log_a, 500, gen)
    lP, lq, lpi = tgt.log_P[i], log_a[i], log_pi[i]
    zero = torch.isneginf(lP)
    assert zero.any() and (~zero).any()

    # Ẑ: the P = 0 samples only count in N
    n, k = zero.numel(), int((~zero).sum())
    torch.testing.assert_close(
        est.log_z_hat(lP, lq), est.log_z_hat(lP[~zero], lq[~zero]) + math.log(k / n), rtol=1e-12, atol=1e-12
    )
    # KL(p‖π) with a fixed Ẑ: the sum runs over P > 0 samples only, so the policy's value on
    # P = 0 samples is irrelevant — even -inf (π(x) = 0 where p(x) = 0) gives no NaN
    for log_z in (tgt.log_Z, torch.tensor(tgt.log_Z, dtype=torch.float64)):
        ref = est.kl_target_policy(lP, lq, lpi, log_z)
        for junk in (float("-inf"), 50.0, -50.0):
            lpi2 = torch.where(zero, torch.full_like(lpi, junk), lpi)
            got = est.kl_target_policy(lP, lq, lpi2, log_z)
            assert torch.isfinite(got)
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        manual = (torch.exp(lP - lq - tgt.log_Z)[~zero] * (lP - tgt.log_Z - lpi)[~zero]).sum() / n
        torch.testing.assert_close(ref, manual, rtol=1e-12, atol=1e-12)

    # TV and JS stay finite when π(x) = 0 on P = 0 samples
    lpi0 = torch.where(zero, torch.full_like(lpi, float("-inf")), lpi)
    for fn in (est.tv_target_policy, est.js_target_policy):
        assert torch.isfinite(fn(lP, lq, lpi0))
        assert torch.isfinite(fn(lP, lq, lpi0, tgt.log_Z))


def test_all_zero_target_gives_no_nan():
    lP = torch.full((5,), float("-inf"), dtype=torch.float64)
    lq = torch.log(torch.full((5,), 0.2, dtype=torch.float64))
    assert torch.isneginf(est.log_z_hat(lP, lq))
    assert float(est.effective_sample_size(lP - lq)) == 0.0


# ------------------------------------------------------------------------------------------- ESS


def test_ess_bounds_and_equal_weights():
    gen = torch.Generator().manual_seed(3)
    for n in (1, 2, 10, 1000):
        # equal weights, at any scale (even ones whose exp over/underflows)
        for c in (0.0, -800.0, 800.0):
            ess = est.effective_sample_size(torch.full((n,), c))
            torch.testing.assert_close(ess, torch.tensor(1.0, dtype=torch.float64))
        # random weights lie in [1/N, 1] and are invariant to rescaling all weights
        for spread in (0.1, 1.0, 10.0, 100.0):
            lw = spread * torch.randn(n, generator=gen, dtype=torch.float64)
            ess = float(est.effective_sample_size(lw))
            assert 1.0 / n - 1e-12 <= ess <= 1.0 + 1e-12
            assert ess == pytest.approx(float(est.effective_sample_size(lw + 123.4)), rel=1e-10)
        # one non-zero weight: exactly 1/N
        lw = torch.full((n,), float("-inf"), dtype=torch.float64)
        lw[0] = 5.0
        assert float(est.effective_sample_size(lw)) == pytest.approx(1.0 / n, rel=1e-12)
    # k equal non-zero weights among n: ESS = k/n
    lw = torch.tensor([0.0, 0.0, 0.0, float("-inf"), float("-inf"), float("-inf")])
    assert float(est.effective_sample_size(lw)) == pytest.approx(0.5, rel=1e-12)


def test_log_importance_weights_and_dtype():
    lP = torch.tensor([-1.0, float("-inf")], dtype=torch.float32)
    lq = torch.tensor([-2.0, -3.0], dtype=torch.float32, requires_grad=True)
    lw = est.log_importance_weights(lP, lq)
    assert lw.dtype == torch.float64 and not lw.requires_grad
    assert lw[0] == 1.0 and torch.isneginf(lw[1])


def test_float64_arithmetic_for_long_sequences():
    """Sequence log-probs of hundreds of tokens: exp() of them would underflow in float32."""
    lq = torch.tensor([-900.0, -905.0, -910.0], dtype=torch.float32)
    lP = lq - 2.0  # P/q = e^-2 for every sample
    torch.testing.assert_close(est.log_z_hat(lP, lq), torch.tensor(-2.0, dtype=torch.float64))
    # π = q: KL(p‖π) = KL(p‖q) and with p ∝ q (constant ratio) it is 0
    assert abs(float(est.kl_target_policy(lP, lq, lq))) < 1e-9
    assert abs(float(est.tv_target_policy(lP, lq, lq))) < 1e-9
