"""Inverse-CDF draws follow the exact categorical distribution and never pick p = 0 tokens."""

import torch
from scipy import stats

from lit_align.models.draw import InverseCDFSampler, sample_inverse_cdf


def _probs(v: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(v, generator=g) * 2, -1)
    p[::7] = 0.0  # masked tokens, as top-k/top-p leave them (includes index 0)
    p[-1] = 0.0  # a trailing zero: the one place rounding could land on a p = 0 token
    return p / p.sum()


def test_inverse_cdf_matches_distribution_chi_square():
    p = _probs(40, 0)
    n_rows, rounds = 500, 40
    g = torch.Generator().manual_seed(1)
    draw = InverseCDFSampler()
    counts = torch.zeros(40)
    for _ in range(rounds):
        tok = draw(p.expand(n_rows, -1).float() * 3.0, generator=g)  # unnormalised input is fine
        counts += torch.bincount(tok, minlength=40)
    n = n_rows * rounds
    assert counts[p == 0].sum() == 0
    keep = p > 0
    expected = p[keep].double() / p[keep].double().sum() * n
    chi2, pval = stats.chisquare(counts[keep].double().numpy(), expected.numpy())
    assert pval > 1e-3, (chi2, pval)


def test_rows_are_independent_distributions():
    # two rows with disjoint supports: every draw lands in its own row's support
    probs = torch.zeros(2, 10)
    probs[0, :3] = torch.tensor([0.2, 0.3, 0.5])
    probs[1, 7:] = torch.tensor([0.6, 0.4, 0.0])
    tok = torch.stack([sample_inverse_cdf(probs) for _ in range(300)])
    assert bool((tok[:, 0] < 3).all()) and bool(((tok[:, 1] == 7) | (tok[:, 1] == 8)).all())
    # row 1: P(token 7) = 0.6, a binomial test on 300 draws
    k = int((tok[:, 1] == 7).sum())
    assert stats.binomtest(k, 300, 0.6).pvalue > 1e-3


def test_u_at_total_never_returns_zero_probability_token():
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])

    cdf = torch.cumsum(probs, -1, dtype=torch.float64)
    tok = torch.searchsorted(cdf, cdf[:, -1:], right=True).clamp(max=3)
    assert int(tok) == 3  # the naive search would pick a p = 0 token
    orig = torch.rand
    try:
        torch.rand = lambda *a, **k: torch.ones(*a[0], dtype=torch.float64)  # type: ignore[assignment]
        assert int(sample_inverse_cdf(probs)) == 1
    finally:
        torch.rand = orig
