"""The masked mean shared by the losses, advantage estimators and metrics."""

from __future__ import annotations

from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Σ x·m / Σ m`` (the plain mean without a mask; 0 when the mask is empty)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)
