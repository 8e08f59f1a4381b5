"""Prototype (kept for its self-test and microbenchmark; adopted by ``Policy`` in lit_align/models/draw.py):
a faster exact sampling step for ``Policy``.

Profiling ``Policy.sample`` on SmolLM2-135M (batch 32, vocabulary 49 152, 2 CPU threads) shows
that ~22 % of the call is ``torch.multinomial(probs, 1)``: for one draw per row it runs an
exponential race over the *whole* vocabulary (``aten::exponential_`` ≈ 25 ms/step, plus
``aminmax`` input validation, ``div`` and ``argmax``) — about 28 ms per decoding step, i.e.
0.9 s of a 3.9 s call. ``model.generate`` pays exactly the same cost.

Inverse-CDF sampling draws the same distribution with one uniform per row instead of one random
number per vocabulary entry::

    cdf = torch.cumsum(probs, -1, dtype=torch.float64)  # float64: per-token bucket error ~1e-16
    u   = torch.rand(B, 1, dtype=float64) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, u, right=True)         # first index with cdf > u (never a p = 0 token)

≈ 0.9 ms/step instead of ≈ 27 ms (microbenchmark, B=32, V=49 152, 2 threads, quiet machine), if
the float64 CDF buffer is reused across steps (a fresh one is page-faulted in every step: ≈ 7 ms).
End to end on SmolLM2 this gives ``Policy.sample`` 1.23× the tokens/s in float32 (see README.md). The log-probs
are unchanged (still ``log_softmax`` gathered at the sampled token), so ``Samples.log_q`` stays exact.

``FastPolicy`` below is ``Policy`` with only ``_step`` replaced; ``python benchmarks/prototype_sampler.py [n_draws]``
runs a distribution self-test (chi-square against the exact probabilities, next to
``torch.multinomial``) and a per-step microbenchmark. ``sampler_vs_generate.py --sides
lit_align,lit_align-fast,generate`` times it end to end.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from lit_align.models.policy import Policy


# the prototype's sampling function now lives in the library (Policy uses it): lit_align/models/draw.py
from lit_align.models.draw import sample_inverse_cdf  # noqa: E402


class FastPolicy(Policy):
    """``Policy`` whose sampling step uses inverse-CDF sampling instead of ``torch.multinomial``."""

    def _step(self, logits: Tensor, finished: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logp = self._warp(logits)
        buf = getattr(self, "_cdf_buffer", None)
        if buf is None or buf.shape != logp.shape or buf.device != logp.device:
            buf = self._cdf_buffer = torch.empty(logp.shape, dtype=torch.float64, device=logp.device)
        tok = sample_inverse_cdf(logp.exp(), out=buf)
        tok = torch.where(finished, torch.full_like(tok, self.pad_id), tok)
        log_q = log_q + torch.where(finished, torch.zeros_like(log_q), logp.gather(-1, tok[:, None]).squeeze(-1))
        if self.eos_id is not None:
            finished = finished | (tok == self.eos_id)
        return tok, finished, log_q


def _selftest(n: int = 400_000, seed: int = 0) -> None:
    """Chi-square goodness of fit of both samplers against the exact distribution.

    Two cases: a small vocabulary (50 tokens, one with p = 0, every token its own bin) and an
    LM-sized one (49 152 tokens, peaked like an LM's next-token distribution; the 200 most
    likely tokens are bins of their own, the rest one bin).
    """
    from scipy.stats import chisquare

    g = torch.Generator().manual_seed(seed)
    for vocab, scale, top in ((50, 2.5, 50), (49152, 3.0, 200)):
        logits = torch.randn(vocab, generator=g) * scale
        logits[7] = float("-inf")  # a zero-probability token must never be drawn
        p = torch.softmax(logits.double(), -1)
        order = torch.argsort(p, descending=True)
        bin_of = torch.full((vocab,), min(top, vocab - 1), dtype=torch.long)
        bin_of[order[:top]] = torch.arange(min(top, vocab))
        n_bins = int(bin_of.max()) + 1
        p_bin = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_of, p)
        rows = 1000
        probs = torch.softmax(logits, -1).expand(rows, vocab).contiguous()
        counts = {name: torch.zeros(n_bins, dtype=torch.long) for name in ("inverse_cdf", "multinomial")}
        zero_draws = {k: 0 for k in counts}
        torch.manual_seed(seed)
        for _ in range(n // rows):
            draws = (("inverse_cdf", sample_inverse_cdf(probs)),
                     ("multinomial", torch.multinomial(probs, 1).squeeze(-1)))
            for name, draw in draws:
                counts[name] += torch.bincount(bin_of[draw], minlength=n_bins)
                zero_draws[name] += int((draw == 7).sum())
        keep = p_bin > 0
        for name, c in counts.items():
            stat, pval = chisquare(c[keep].numpy(), (p_bin * c.sum())[keep].numpy())
            print(f"V={vocab:<6d} {name:12s} draws={int(c.sum())}  chi2={stat:8.1f} (df={int(keep.sum()) - 1})  "
                  f"p-value={pval:.3f}  draws of the p=0 token: {zero_draws[name]}")


def _microbench(batch: int = 32, vocab: int = 49152, threads: int = 2, n: int = 70) -> None:
    torch.set_num_threads(threads)
    logits = torch.randn(batch, vocab) * 3
    logp = torch.log_softmax(logits, -1)
    probs = logp.exp()

    def t(f, rounds: int = 7):
        """Best of ``rounds`` averages over ``n // rounds`` calls, in ms (robust to other processes on the CPUs)."""
        f()
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(max(1, n // rounds)):
                f()
            best = min(best, (time.perf_counter() - t0) / max(1, n // rounds))
        return best * 1e3

    print(f"per sampling step, B={batch}, V={vocab}, threads={threads} (best of 7 rounds):")
    print(f"  torch.multinomial(probs, 1)      {t(lambda: torch.multinomial(probs, 1)):7.2f} ms")
    buf = torch.empty(probs.shape, dtype=torch.float64)
    fresh = t(lambda: sample_inverse_cdf(probs))
    reused = t(lambda: sample_inverse_cdf(probs, out=buf))
    print(f"  sample_inverse_cdf(probs)        {fresh:7.2f} ms  (fresh float64 CDF each step)")
    print(f"  sample_inverse_cdf(probs, out=)  {reused:7.2f} ms  (reused CDF buffer)")
    print(f"  log_softmax + exp (shared)       {t(lambda: torch.log_softmax(logits, -1).exp()):7.2f} ms")


if __name__ == "__main__":
    import sys

    # draws per case; 400 000 takes ~10 min on 2 CPU cores (mostly torch.multinomial on the 49 152-token case)
    _selftest(n=int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    _microbench()
