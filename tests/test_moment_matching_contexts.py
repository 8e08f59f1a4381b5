"""Moment matching for conditional targets (Khalifa et al. 2021, arXiv:2012.11635; per context as in CDPG, arXiv:2112.00791): one λ for all contexts,
each context's target ``p_c ∝ a(·|c)·exp(λφ)`` normalised by its own ``Z_c(λ)``, matching
``E_c E_{p_c}[φ] = μ̄``; checked by exact enumeration and through CDPG's fit start."""

from __future__ import annotations

import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.data import ContextListDataModule  # noqa: E402
from lit_align.methods import CDPG  # noqa: E402
from lit_align.models.toy import ToyLM, ToySpace  # noqa: E402
from lit_align.moment_matching import Distributional, MomentMatchingError, fit_lambdas, snis_moments  # noqa: E402
from lit_align.scorers import Regex, Scorer  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]

SPACE = ToySpace(4, 4)
MU = 0.6


@pytest.fixture(scope="module")
def contexts():
    """Three contexts, each a different base distribution a(·|c) over the 256 sequences."""
    log_a = [ex.base_log_probs(SPACE, seed=s) for s in (0, 1, 2)]
    phi = Regex("b.*d")(SPACE.texts).double()
    return log_a, phi


def exact_average_moment(log_a: list[torch.Tensor], phi: torch.Tensor, lam: float) -> float:
    """(1/C) Σ_c E_{p_c,λ}[φ], each p_c normalised on its own (independent enumeration)."""
    return sum(float(ex.expectation(ex.target(la, lam * phi).log_p, phi)) for la in log_a) / len(log_a)


@pytest.mark.parametrize("method", ["newton", "gd"])
def test_exact_per_context_fit(contexts, method):
    log_a, phi = contexts
    zs = [float(ex.expectation(la, phi)) for la in log_a]
    assert max(zs) - min(zs) > 0.05 and max(zs) < MU - 0.1  # contexts differ; μ̄ far from the base
    feats = phi.repeat(len(log_a))[:, None]
    groups = torch.arange(len(log_a)).repeat_interleave(len(phi))
    fit = fit_lambdas(feats, [MU], torch.cat(log_a), method=method, groups=groups, tolerance=1e-10,
                      iterations=100000, lr=2.0)
    assert fit.converged and fit.n_groups == 3
    assert abs(exact_average_moment(log_a, phi, float(fit.lambdas[0])) - MU) < 1e-8
    # pooling the contexts (disco's joint) matches another quantity: Σ_c Z_c(λ) E_{p_c}/Σ_c Z_c(λ)
    pooled = fit_lambdas(feats, [MU], torch.cat(log_a), tolerance=1e-10)
    assert abs(exact_average_moment(log_a, phi, float(pooled.lambdas[0])) - MU) > 1e-3
    assert abs(float(pooled.lambdas[0]) - float(fit.lambdas[0])) > 1e-2


def test_snis_per_context_on_samples(contexts):
    """On samples of each a(·|c) (q = a, log w0 = 0): converges on its own sample, and the
    exact moment at the fitted λ is close to μ̄ (SNIS error only)."""
    log_a, phi = contexts
    gen = torch.Generator().manual_seed(0)
    idx = [ex.sample_indices(la, 4000, gen) for la in log_a]
    feats = torch.cat([phi[i] for i in idx])[:, None]
    groups = torch.arange(3).repeat_interleave(4000)
    fit = fit_lambdas(feats, [MU], groups=groups, tolerance=1e-9)
    assert fit.converged and fit.error < 1e-9
    mu_hat, _ = snis_moments(feats, torch.zeros(len(feats), dtype=torch.float64), fit.lambdas, groups)
    assert abs(float(mu_hat[0]) - MU) < 1e-9
    assert abs(exact_average_moment(log_a, phi, float(fit.lambdas[0])) - MU) < 0.03
    # one group is the unconditional SNIS estimate
    one, _ = snis_moments(feats, torch.zeros(len(feats), dtype=torch.float64), fit.lambdas)
    w = torch.softmax(feats[:, 0] * fit.lambdas[0], 0)
    torch.testing.assert_close(one, w @ feats)


def test_per_context_refusals():
    # constant within each context: no λ moves any context's moment
    feats = torch.tensor([[0.0], [0.0], [1.0], [1.0]], dtype=torch.float64)
    with pytest.raises(MomentMatchingError, match="constant within every context"):
        fit_lambdas(feats, [0.5], groups=torch.tensor([0, 0, 1, 1]))
    # reachable pooled, but not as an average of per-context moments: context 0 only has 0s and 1s,
    # context 1 only 2s and 3s; averages lie in (1, 2)
    feats = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    fit_lambdas(feats, [0.5])
    with pytest.raises(MomentMatchingError, match="per-context minima"):
        fit_lambdas(feats, [0.5], groups=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="groups has 3 entries"):
        fit_lambdas(feats, [1.5], groups=torch.tensor([0, 0, 1]))


class NextLetter(Scorer):
    """φ(x, c) = 1 iff the completion contains the letter following the context letter."""

    binary = True

    def score(self, texts, contexts=None):
        return [float(chr((ord(c) - ord("a") + 1) % 4 + ord("a")) in t) for t, c in zip(texts, contexts)]


def test_cdpg_fits_lambda_per_context_at_fit_start():
    """CDPG with a conditional distributional target: λ is fitted at fit start on samples of
    every training context, and the exact E_c E_{p_c}[φ] at that λ is μ̄ up to SNIS error."""
    ctx = ["a", "b", "c", "d"]
    mu = 0.7
    module = CDPG(target=[Distributional([NextLetter(name="next")], [mu])], model="toy", n_samples=8,
                  minibatch_size=32, max_new_tokens=3, lr=1e-9, moment_matching_samples=8000,
                  moment_matching_batch=2000, moment_matching_tolerance=1e-8)
    L.seed_everything(0, verbose=False)
    dm = ContextListDataModule(ctx, contexts_per_step=4, steps_per_epoch=1)
    ex.quiet_fit(module, dm, 1)
    (dist,) = [p for p in module.target.potentials if isinstance(p, Distributional)]
    assert dist.last_fit.n_groups == 4 and dist.last_fit.converged
    lam = float(dist.coefficients[0])
    # exact per-context moments of the base: a(x|c) from the full-sequence table, by enumeration
    full = SPACE.log_probs(module.engine.base).detach().double()
    moments, base_moments = [], []
    for c in ctx:
        rows = [i for i, t in enumerate(SPACE.texts) if t[0] == c]
        texts = [SPACE.texts[i][1:] for i in rows]
        la = full[rows] - torch.logsumexp(full[rows], 0)
        phi = NextLetter()(texts, [c] * len(texts)).double()
        moments.append(float(ex.expectation(ex.target(la, lam * phi).log_p, phi)))
        base_moments.append(float(ex.expectation(la, phi)))
    assert abs(sum(base_moments) / 4 - mu) > 0.1  # fitting had to move the moment
    assert abs(sum(moments) / 4 - mu) < 0.03, (moments, lam)
    assert isinstance(module.engine.base, ToyLM)
