"""Learning-rate schedules: the factor LambdaLR multiplies the base lr by at each optimizer step."""

from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, warmup_steps: int, warmup_ratio: float, max_steps: int) -> Callable[[int], float]:
    """LR factor of each step: linear warm-up over ``warmup_steps`` (or ``warmup_ratio · max_steps``),
    then ``constant`` 1, ``linear`` decay to 0 at ``max_steps`` (the Hugging Face Trainer's default
    schedule, used by Korbak et al. 2023, arXiv:2302.08582) or ``cosine`` decay to 0 at ``max_steps``
    (Loshchilov & Hutter 2017, arXiv:1608.03983, without restarts). Without a known ``max_steps``
    (≤ 0) the decays stay at 1."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    known = bool(max_steps and max_steps > 0)
    warmup = warmup_steps or (int(warmup_ratio * max_steps) if known else 0)
    total = max_steps if schedule != "constant" and known else None

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if total is None:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
