"""The batch of completions a sampler returns, and what one forward pass over it computes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

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


def pad_samples(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
                texts: Sequence[str], contexts: Sequence[str]) -> Samples:
    """Token rows as :class:`Samples` (prompts left-padded, completions right-padded, all scored)."""
    n = len(prompts)
    lp, lc = max(len(r) for r in prompts), max(max(len(r) for r in completions), 1)
    pid = torch.full((n, lp), pad_id, dtype=torch.long)
    pmask = torch.zeros((n, lp), dtype=torch.long)
    cid = torch.full((n, lc), pad_id, dtype=torch.long)
    cmask = torch.zeros((n, lc), dtype=torch.long)
    for i, (pr, co) in enumerate(zip(prompts, completions)):
        pid[i, lp - len(pr):] = torch.tensor(list(pr), dtype=torch.long)
        pmask[i, lp - len(pr):] = 1
        cid[i, : len(co)] = torch.tensor(list(co), dtype=torch.long)
        cmask[i, : len(co)] = 1
    return Samples(prompt_ids=pid, prompt_mask=pmask, completion_ids=cid, completion_mask=cmask,
                   log_q=torch.zeros(n), texts=list(texts), contexts=list(contexts),
                   context_index=torch.arange(n))
