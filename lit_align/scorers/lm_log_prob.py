"""``γ·log π*(x | c)`` under a language model, as a scorer (Yun et al. 2025, arXiv:2506.01523).

Under Yun et al.'s generative model the exact reward model is ``R̂ = γ ln π* + c``: with the
target LM at hand (synthetic preferences, the toy space) this scorer *is* that reward model,
which makes reverse KL and preference distillation checkable against their closed forms.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_align.scorers.base import Scorer


class LogProbScorer(Scorer):
    """``scale · log π(text | context)`` under the model ``model`` (a name for ``lit_align.models.load``).

    Args:
        model: LM name (``toy``, ``tiny-gpt2``, a folder, a hub name).
        seed: initialisation seed of random models (``toy`` with another seed is a π*).
        scale: γ (the reward is γ·log π).
        append_eos: score the completion followed by EOS (as preference pairs are).
        batch_size: texts per forward pass.
    """

    def __init__(self, model: str, seed: int = 0, scale: float = 1.0, append_eos: bool = False,
                 batch_size: int = 64, name: str | None = None) -> None:
        from lit_align.models.loading import load
        from lit_align.models.policy import Policy

        super().__init__(name or "log_prob")
        self.model, tok = load(model, seed=seed)
        self.model.requires_grad_(False).eval()
        self.policy = Policy(tok, 1)
        self.scale, self.append_eos, self.batch_size = scale, append_eos, batch_size

    @torch.no_grad()
    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        from lit_align.models.samples import pad_samples

        contexts = list(contexts) if contexts is not None else [""] * len(texts)
        tok, eos = self.policy.tokenizer, self.policy.eos_id
        tail = [eos] if self.append_eos and eos is not None else []
        prompts = [self.policy.encode_context(c) for c in contexts]
        comps = [list(tok(t, add_special_tokens=False)["input_ids"]) + tail for t in texts]
        if any(not c for c in comps):
            raise ValueError("LogProbScorer: an empty completion has no log-probability (set append_eos)")
        s = pad_samples(prompts, comps, self.policy.pad_id, texts, contexts)
        return self.scale * self.policy.log_prob(self.model, s, self.batch_size).double()
