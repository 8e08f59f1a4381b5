"""RLOO: REINFORCE with k samples per context and a leave-one-out baseline.

Ahmadian et al., "Back to basics: revisiting REINFORCE style optimization for learning from
human feedback in LLMs", ACL 2024, after Kool, van Hoof & Welling, "Buy 4 REINFORCE samples,
get a baseline for free!" (ICLR 2019 workshop). The reward carries the sequence-level KL penalty,
``R̃_i = R_i − β·(log π_old(y_i) − log a(y_i))`` (β = ``kl_coef``); each sample's baseline is the
mean shaped reward of the *other* k − 1 samples of its context, which does not depend on the
sample, so the gradient ``−(R̃_i − b_i)·∇log π(y_i)`` stays unbiased for
−∇(E_π[R] − β·KL(π‖a)) (checked by enumeration in the tests). One on-policy update per rollout.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from lit_align.methods.reinforce import RLKL
from lit_align.rl import rloo_advantages, whiten
from lit_align.scorers.base import Scorer


class RLOO(RLKL):
    """REINFORCE leave-one-out with the KL penalty in the reward.

    ``n_samples`` is k, the samples per context (≥ 2); batches may hold several contexts.

    Args:
        reward, reward_weights: the task reward R (scorers, or a reward-model scorer).
        kl_coef: β, the KL coefficient in the shaped reward (TRL default 0.05). β = 0 (no penalty,
            as trl's GRPO defaults to) is allowed; with ``track_kl: false`` the run then keeps no
            frozen base and skips its log-prob pass.
        normalize_advantages: whiten the leave-one-out advantages over the batch (TRL's
            ``normalize_advantages``, default off).
    """

    zero_kl_coef_allowed = True

    def __init__(
        self,
        reward: Scorer | Sequence[Scorer],
        kl_coef: float = 0.05,
        normalize_advantages: bool = False,
        **kwargs,
    ) -> None:
        # Reinforce's "batch_mean" is a leave-one-out baseline; RLOO takes it per context
        super().__init__(reward=reward, kl_coef=kl_coef, baseline="batch_mean", **kwargs)
        # fixed, not an argument: under LightningCLI hparams hold only the given arguments
        self.hparams["baseline"] = "batch_mean"
        if self.hparams.n_samples < 2:
            raise ValueError(f"RLOO needs n_samples (k) ≥ 2 samples per context, got {self.hparams.n_samples}")

    def baseline_values(self, shaped: Tensor) -> Tensor:
        """``b_i = mean of R̃_j over the other samples j ≠ i of the same context``.

        Rows of one context are contiguous, ``n_samples`` each (the sampler's layout). With
        ``normalize_advantages`` the returned b makes ``R̃ − b`` the whitened advantages.
        """
        adv = rloo_advantages(shaped, self.hparams.n_samples)
        if self.hparams.normalize_advantages:
            adv = whiten(adv)
        return shaped.double() - adv
