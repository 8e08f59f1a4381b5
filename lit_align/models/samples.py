"""The batch of completions a sampler returns, and what one forward pass over it computes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class Samples:
    """A batch of completions and what produced them. Rows of one context are contiguous."""

    prompt_ids: Tensor  # (B, Lp) left-padded
    prompt_mask: Tensor  # (B, Lp)
    completion_ids: Tensor  # (B, Lc) padded after the end
    completion_mask: Tensor  # (B, Lc): 1 for scored tokens (up to and including the first EOS)
    log_q: Tensor  # (B,) float32: log-prob under the distribution sampled from
    texts: list[str]
    contexts: list[str]
    context_index: Tensor  # (B,) long: which context each row belongs to
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, idx: Tensor | slice) -> "Samples":
        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        rows = idx.tolist()
        return replace(
            self,
            prompt_ids=self.prompt_ids[idx],
            prompt_mask=self.prompt_mask[idx],
            completion_ids=self.completion_ids[idx],
            completion_mask=self.completion_mask[idx],
            log_q=self.log_q[idx],
            texts=[self.texts[i] for i in rows],
            contexts=[self.contexts[i] for i in rows],
            context_index=self.context_index[idx],
            extras={k: v[idx] if isinstance(v, Tensor) else v for k, v in self.extras.items()},
        )

    def minibatches(self, size: int):
        for start in range(0, len(self), size):
            yield self.select(slice(start, start + size))

    @property
    def lengths(self) -> Tensor:
        return self.completion_mask.sum(-1)


@dataclass
class TokenOutputs:
    """What :meth:`Policy.token_outputs` computes in one forward pass (entries off the completion are 0)."""

    log_probs: Tensor  # (B, Lc) float32
    hidden: Tensor | None = None  # (B, Lc, H): last hidden state at the position predicting each token
    entropy: Tensor | None = None  # (B, Lc) float32: entropy of the next-token distribution
