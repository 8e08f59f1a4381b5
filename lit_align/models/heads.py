"""The width of a model's hidden states, for the scalar heads put on them (value, reward)."""

from __future__ import annotations

from torch import nn


def hidden_size(model: nn.Module) -> int:
    """``hidden_size`` / ``n_embd`` / ``d_model`` of a Hugging Face model's config."""
    cfg = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model"):
        size = getattr(cfg, name, None)
        if isinstance(size, int) and size > 0:
            return size
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__} for a value head")
