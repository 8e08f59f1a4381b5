"""Per-phase wall-clock timing of a training step (sampling, scoring, log-probs, backward, optimizer).

Methods wrap their phases in ``with module.timer("sampling"):``; the
:class:`~lit_align.callbacks.PerfMonitor` callback reads and resets the totals once per step and
logs them as ``perf/*``. On CUDA the timer synchronises at phase boundaries, so each phase is
charged its own kernels (a small cost, and only while a monitor is attached).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch

# FLOPs per token and parameter of each phase kind: a forward pass costs 2·N, forward + backward 6·N
FLOPS_PER_TOKEN_PARAM = {"forward": 2, "train": 6}


class PhaseTimer:
    """Accumulates seconds per phase name and token counts per phase kind (for FLOPs / MFU)."""

    def __init__(self) -> None:
        self.enabled = False
        self.sync_cuda = False
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.samples = 0

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[phase] += time.perf_counter() - start

    def count(self, kind: str, tokens: int | torch.Tensor) -> None:
        """Record ``tokens`` processed by a pass of ``kind`` ("forward" or "train")."""
        if self.enabled:
            self.tokens[kind] += int(tokens)

    def _sync(self) -> None:
        if self.sync_cuda:
            torch.cuda.synchronize()

    def flops_per_param(self) -> int:
        """Σ over phase kinds of tokens × FLOPs per token and parameter."""
        return sum(FLOPS_PER_TOKEN_PARAM[k] * n for k, n in self.tokens.items())
