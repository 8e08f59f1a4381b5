"""Reward-maximisation baselines: REINFORCE and RL with a KL penalty (KL-control).

methods.md §2, §3.2 (Baselines) and §7. Both are on-policy: each step samples from the
policy, scores the samples with the reward scorer(s), and follows the policy gradient.
REINFORCE maximises E_π[R] and collapses onto argmax R; RL with KL maximises
E_π[R] − β·KL(π‖a), whose optimum is the posterior a·exp(R/β)/Z.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from lit_align import estimators
from lit_align.losses import kl_shaped_reward, reinforce_loss
from lit_align.methods.base import BasePolicyModule
from lit_align.models.policy import Samples
from lit_align.scorers.base import Scorer

_BASELINES = ("none", "batch_mean", "moving_average")


class RewardFromScorers:
    """The reward R(x) = Σ_k w_k·scorer_k(x, c) of the reward-maximising methods (REINFORCE,
    RL-KL, RLOO, PPO): one scorer or several, weighted. Mixed into a BasePolicyModule."""

    def init_reward(self, reward: Scorer | Sequence[Scorer], reward_weights: Sequence[float] | None) -> None:
        self.rewards = [reward] if isinstance(reward, Scorer) else list(reward)
        if not self.rewards:
            raise ValueError(f"{type(self).__name__}: `reward` needs at least one scorer")
        self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.rewards)
        if len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries for {len(self.rewards)} scorers")

    def reward(self, samples: Samples) -> tuple[Tensor, dict[str, Tensor]]:
        """``(R, {scorer name: scores})`` for a batch of samples."""
        scores = self.score(self.rewards, samples)
        total = sum(w * scores[s.name] for w, s in zip(self.reward_weights, self.rewards))
        return total, scores


class Reinforce(RewardFromScorers, BasePolicyModule):
    """REINFORCE on a reward R(x) = Σ_k w_k·scorer_k(x) (GDC's REINFORCE baseline: R = b, no baseline).

    Args:
        reward: one scorer or a list of scorers (summed with ``reward_weights``).
        reward_weights: weight of each scorer in the reward (default all 1).
        baseline: ``none`` (as in the papers), ``batch_mean`` (mean of the other samples'
            rewards, leave-one-out, so it stays unbiased) or ``moving_average``.
        baseline_decay: decay of the moving-average baseline.
    """

    needs_base = True  # KL(π‖a) is logged for every method (forgetting)

    def __init__(
        self,
        reward: Scorer | Sequence[Scorer],
        reward_weights: Sequence[float] | None = None,
        baseline: str = "none",
        baseline_decay: float = 0.99,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.init_reward(reward, reward_weights)
        if baseline not in _BASELINES:
            raise ValueError(f"baseline must be one of {_BASELINES}, got {baseline!r}")
        self.moving_baseline = 0.0

    def _hparams_ignore(self) -> list[str]:
        return ["reward"]

    def shaped_reward(self, reward: Tensor, log_pi: Tensor, log_a: Tensor) -> Tensor:
        return reward.double()

    def baseline_values(self, shaped: Tensor) -> Tensor | float:
        kind = self.hparams.baseline
        if kind == "batch_mean":
            n = shaped.numel()
            if n < 2:
                return 0.0
            return (shaped.sum() - shaped) / (n - 1)  # leave-one-out: independent of the sample itself
        if kind == "moving_average":
            return self.moving_baseline
        return 0.0

    def training_step(self, batch: list[str], batch_idx: int) -> None:
        samples = self.sample(batch)
        log_q = samples.log_q.double()
        log_a = self.base_log_prob(samples).double()
        reward, scores = self.reward(samples)
        shaped = self.shaped_reward(reward, log_q, log_a)
        b = self.baseline_values(shaped)

        def loss_fn(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
            bb = b[rows] if isinstance(b, Tensor) else b
            return reinforce_loss(log_pi, shaped[rows], bb)

        log_pi, loss = self.accumulate(samples, loss_fn)
        stepped = self.optimizer_step_guarded()
        if self.hparams.baseline == "moving_average":
            d = self.hparams.baseline_decay
            self.moving_baseline = d * self.moving_baseline + (1 - d) * float(self.gather(shaped).mean())
        self.last_samples = samples
        m = self.common_metrics(samples, self.gather(log_pi.double()), self.gather(log_a.double()), None)
        m.update({f"scorer/{k}": self.gather(v).mean() for k, v in scores.items()})
        m.update({"reward": self.gather(reward).mean(), "objective": self.gather(shaped).mean(),
                  "loss": loss, "step_skipped": float(not stepped)})
        self.log_metrics(m, "train")
        self.log("reward", m["reward"], prog_bar=True, batch_size=1, logger=False)

    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        reward, scores = self.reward(samples)
        m = {f"scorer/{k}": v.mean() for k, v in scores.items()}
        m["reward"] = reward.mean()
        m["objective"] = self.shaped_reward(reward, log_pi.double(), log_a.double()).mean()
        return m

    def extra_state(self) -> dict:
        return {"moving_baseline": self.moving_baseline}

    def load_extra_state(self, state: dict) -> None:
        self.moving_baseline = state.get("moving_baseline", 0.0)


class RLKL(Reinforce):
    """RL with a KL penalty: maximise E_π[R] − β·KL(π‖a) with the k1 estimator in the reward.

    The logged ``objective`` is the Monte-Carlo estimate of J_KL; the loss value is only a
    surrogate whose gradient is unbiased for −∇J_KL (see :func:`lit_align.losses.rl_kl_loss`).
    The optimum is a·exp(R/β)/Z (Korbak, Perez & Buckley 2022).

    ``entropy_coef`` γ > 0 adds the entropy bonus γ·H(π) (k1 estimate −γ·log π in the reward):
    Yun et al.'s reverse-KL objective (methods.md §6.2, eq. 15), whose optimum is
    a^{β/(β+γ)}·exp(R/(β+γ))/Z; β may then be 0 (RKL without a KL term).
    """

    def __init__(
        self, reward: Scorer | Sequence[Scorer], beta: float = 0.1, entropy_coef: float = 0.0, **kwargs
    ) -> None:
        if entropy_coef < 0 or not math.isfinite(entropy_coef):
            raise ValueError(f"RLKL: entropy_coef must be a number ≥ 0, got {entropy_coef}")
        if not math.isfinite(beta) or beta < 0 or (beta == 0 and entropy_coef == 0):
            raise ValueError(f"RLKL: beta must be a positive number (or ≥ 0 with entropy_coef > 0), got {beta}")
        super().__init__(reward=reward, **kwargs)

    def shaped_reward(self, reward: Tensor, log_pi: Tensor, log_a: Tensor) -> Tensor:
        return kl_shaped_reward(reward, log_pi, log_a, self.hparams.beta, self.hparams.get("entropy_coef", 0.0))

    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        m = super().validation_metrics(samples, log_pi, log_a)
        m["kl_policy_base"] = estimators.kl_policy_base(log_pi, log_a)
        return m
