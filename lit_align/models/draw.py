"""Exact categorical draws for the sampling loop: inverse CDF instead of ``torch.multinomial``.

``torch.multinomial(probs, 1)`` runs an exponential race over the whole vocabulary (one random
number per entry, plus input validation): on SmolLM2's 49 152 tokens at batch 32 that is ~27 ms
per decoding step on 2 CPU threads, about a fifth of the step. Inverse-CDF sampling draws from
the same distribution with one uniform per row::

    cdf = cumsum(p)  (float64),   u ~ U(0, cdf[-1]),   token = first index with cdf > u

The CDF is accumulated in float64, so each token's bucket is wrong by ~1e-16 at most; tokens
with p = 0 (top-k/top-p masks) are never drawn. ``benchmarks/prototype_sampler.py`` has the
chi-square self-test and microbenchmark behind this choice.
"""

from __future__ import annotations

import torch
from torch import Tensor


class InverseCDFSampler:
    """Draws one token per row of ``probs`` (B, V); reuses its float64 CDF buffer across steps.

    Reusing the buffer matters on CPU: a fresh 12.6 MB tensor per step (B=32, V=49 152) is
    page-faulted in every time (several ms), a reused one costs nothing.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def __call__(self, probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        buf = self._buffer
        if buf is None or buf.shape != probs.shape or buf.device != probs.device:
            buf = self._buffer = torch.empty(probs.shape, dtype=torch.float64, device=probs.device)
        return sample_inverse_cdf(probs, generator=generator, out=buf)


def sample_inverse_cdf(probs: Tensor, generator: torch.Generator | None = None, out: Tensor | None = None) -> Tensor:
    """One draw per row from non-negative (not necessarily normalised) ``probs`` (B, V).

    ``out``: optional float64 buffer of ``probs``' shape for the CDF.
    """
    if out is not None:
        cdf = torch.cumsum(probs, -1, dtype=torch.float64, out=out)
    else:
        cdf = torch.cumsum(probs, -1, dtype=torch.float64)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, dtype=torch.float64, device=probs.device, generator=generator) * total
    # right=True: the first index with cdf > u, never a p = 0 token (flat stretches are skipped)
    tok = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)
    # only if u rounds up to the total can that be a trailing p = 0 token: take the last p > 0 token
    zero = probs.gather(-1, tok) <= 0
    if bool(zero.any()):
        tok = torch.where(zero, torch.searchsorted(cdf, total, right=False), tok)
    return tok.squeeze(-1)
