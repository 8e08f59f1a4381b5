"""Scalar heads on a language model's last hidden state: the value head of PPO, a reward head."""

from __future__ import annotations

from torch import Tensor, nn

from lit_align.models.policy import Policy
from lit_align.models.samples import Samples


def hidden_size(model: nn.Module) -> int:
    """The width of ``model``'s last hidden state (from its config)."""
    cfg = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model"):
        size = getattr(cfg, name, None)
        if isinstance(size, int) and size > 0:
            return size
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__} for a value head")


def zero_head(trunk: nn.Module) -> nn.Linear:
    """A linear scalar head that outputs 0 at the start (no spurious advantages on the first rollout)."""
    head = nn.Linear(hidden_size(trunk), 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def token_log_probs_and_values(policy: Policy, model: nn.Module, head: nn.Linear, samples: Samples,
                               trunk: nn.Module | None = None, entropy: bool = False):
    """Per-token log-probs of ``model``, values ``head(h_t)`` (h from ``trunk``, default ``model``
    itself: one shared forward) and optionally entropies; 0 off the completion."""
    shared = trunk is None
    out = policy.token_outputs(model, samples, hidden=shared, entropy=entropy)
    hidden = out.hidden if shared else policy.token_outputs(trunk, samples).hidden
    values: Tensor = head(hidden.to(head.weight.dtype)).squeeze(-1)
    return out.log_probs, values * samples.completion_mask, out.entropy
