"""Win rate of the policy against the frozen base/reference policy, judged by a scorer or a
reward model (Yun et al. 2025, arXiv:2506.01523, §6.1 evaluation).

At each validation batch, ``n`` completions per context are drawn from π and from π0; the
i-th completion of π is compared with the i-th of π0 by the judge, and the epoch's
``val/win_rate = mean(1[s(π) > s(π0)] + ½·1[s(π) = s(π0)])`` is logged (with the mean judge
scores ``val/judge_policy`` and ``val/judge_reference``). Works with every method: contexts come
from the validation batch (a list of contexts, or the prompts of a preference batch).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from lit_align.scorers.base import Scorer


def paired_win_rate(score_policy: Tensor, score_reference: Tensor) -> Tensor:
    """``mean(1[s_π > s_ref] + ½·1[s_π = s_ref])`` over paired completions."""
    a, b = score_policy.double(), score_reference.double()
    return ((a > b).double() + 0.5 * (a == b).double()).mean()


class WinRate(L.Callback):
    """Log ``val/win_rate`` of π against π0 judged by ``judge``.

    Args:
        judge: a scorer (e.g. ``RewardModelScorer``, ``Sentiment``, ``LogProbScorer``).
        n: completions per context from each policy.
        max_contexts: contexts per validation batch used (the first ones).
    """

    needs_reference = True  # methods that could release π0 keep it (read by the offline methods)

    def __init__(self, judge: Scorer, n: int = 4, max_contexts: int = 8) -> None:
        if n < 1 or max_contexts < 1:
            raise ValueError("WinRate: n and max_contexts must be ≥ 1")
        self.judge, self.n, self.max_contexts = judge, n, max_contexts
        self._ours: list[Tensor] = []
        self._theirs: list[Tensor] = []

    @staticmethod
    def contexts_of(batch) -> list[str]:
        prompts = getattr(batch, "prompts", batch)
        return list(dict.fromkeys(prompts))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._ours, self._theirs = [], []

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        reference = reference_model(pl_module)
        if reference is None:
            raise ValueError("WinRate needs the frozen reference π0, but the method released it; "
                             "keep it (e.g. DPO: track_kl: true)")
        contexts = self.contexts_of(batch)[: self.max_contexts]
        ours = pl_module.sample(contexts, self.n)
        theirs = pl_module.sample(contexts, self.n, model=reference)
        self._ours.append(self.judge(ours.texts, ours.contexts))
        self._theirs.append(self.judge(theirs.texts, theirs.contexts))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._ours:
            return
        ours, theirs = torch.cat(self._ours), torch.cat(self._theirs)
        pl_module.log_dict({"val/win_rate": float(paired_win_rate(ours, theirs)),
                            "val/judge_policy": float(ours.mean()), "val/judge_reference": float(theirs.mean())},
                           batch_size=1, sync_dist=True)


def reference_model(pl_module):
    """The method's frozen reference/base π0 (its engine's ``base``), or None when released."""
    engine = getattr(pl_module, "engine", None)
    return engine.base if engine is not None else None
