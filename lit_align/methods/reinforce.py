"""Reward maximisation on the policy's own samples: REINFORCE and RL with a KL penalty.

REINFORCE (Williams, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", Machine Learning 1992) maximises E_π[R] and collapses onto argmax R.
RL with KL maximises ``E_π[R] − β·KL(π‖a)`` (β = ``kl_coef``), whose optimum is the posterior
``a·exp(R/β)/Z`` (Korbak, Perez & Buckley, "RL with KL penalties is better viewed as Bayesian
inference", Findings of EMNLP 2022; Korbak's thesis, arXiv:2404.12150, ch. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from torch import Tensor

from lit_align import estimators
from lit_align.losses import kl_shaped_reward, reinforce_loss
from lit_align.methods.checkpoint_state import MethodState
from lit_align.methods.on_policy import OnPolicyModule
from lit_align.models.rollout import Rollout
from lit_align.models.samples import Samples
from lit_align.scorers.base import Scorer

_BASELINES = ("none", "batch_mean", "moving_average")


class RewardFromScorers:
    """The reward ``R(x) = Σ_k w_k·scorer_k(x, c)`` of the reward-maximising methods (REINFORCE,
    RL-KL, RLOO, PPO): one scorer or several, weighted. Mixed into an OnPolicyModule."""

    def init_reward(self, reward: Scorer | Sequence[Scorer], reward_weights: Sequence[float] | None) -> None:
        self.rewards = [reward] if isinstance(reward, Scorer) else list(reward)
        if not self.rewards:
            raise ValueError(f"{type(self).__name__}: `reward` needs at least one scorer")
        self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.rewards)
        if len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} entries for {len(self.rewards)} scorers")

    def scorers(self) -> list[Scorer]:
        return self.rewards

    def reward(self, rollout: Rollout) -> Tensor:
        """R of each sample, from the rollout's scores."""
        return sum(w * rollout.scores[s].to(self.device) for w, s in zip(self.reward_weights, self.rewards))


@dataclass
class ReinforceState(MethodState):
    moving_baseline: float = 0.0


class Reinforce(RewardFromScorers, OnPolicyModule):
    """REINFORCE on a reward R(x) = Σ_k w_k·scorer_k(x) (GDC's REINFORCE baseline: R = b, no baseline).

    Args:
        reward: one scorer or a list of scorers (summed with ``reward_weights``).
        reward_weights: weight of each scorer in the reward (default all 1).
        baseline: ``none`` (as in the papers), ``batch_mean`` (mean of the other samples'
            rewards, leave-one-out, so it stays unbiased) or ``moving_average``.
        baseline_decay: decay of the moving-average baseline.
        track_kl: keep the frozen base to log KL(π‖a) and the base NLL (default). With no KL
            penalty in the reward (REINFORCE, or β = 0), ``false`` drops the base and its
            log-prob pass: less memory and time, no KL metrics.
    """

    progress_bar = {"reward": "reward"}

    def __init__(self, reward: Scorer | Sequence[Scorer], reward_weights: Sequence[float] | None = None,
                 baseline: str = "none", baseline_decay: float = 0.99, track_kl: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.init_reward(reward, reward_weights)
        if baseline not in _BASELINES:
            raise ValueError(f"baseline must be one of {_BASELINES}, got {baseline!r}")
        self.state = ReinforceState()

    def _hparams_ignore(self) -> list[str]:
        return ["reward"]

    @property
    def needs_base(self) -> bool:
        """The frozen base is read, with ``track_kl``, by the metrics and by callbacks that compare
        with π0 (WinRate)."""
        return bool(self.hparams.get("track_kl", True)) or self.callbacks_read_base()

    def shaped_reward(self, reward: Tensor, log_pi: Tensor, log_a: Tensor | None) -> Tensor:
        return reward.double()

    def baseline_values(self, shaped: Tensor) -> Tensor | float:
        kind = self.hparams.baseline
        if kind == "batch_mean":
            n = shaped.numel()
            if n < 2:
                return 0.0
            return (shaped.sum() - shaped) / (n - 1)  # leave-one-out: independent of the sample itself
        if kind == "moving_average":
            return self.state.moving_baseline
        return 0.0

    def loss_and_metrics(self, rollout: Rollout, state: ReinforceState):
        reward = self.reward(rollout)
        shaped = self.shaped_reward(reward, rollout.log_q, rollout.log_a)
        b = self.baseline_values(shaped)

        def loss(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
            return reinforce_loss(log_pi, shaped[rows], b[rows] if isinstance(b, Tensor) else b)

        def metrics() -> dict:
            if self.hparams.baseline == "moving_average":
                d = self.hparams.baseline_decay
                state.moving_baseline = d * state.moving_baseline + (1 - d) * float(rollout.gather(shaped).mean())
            g = rollout.gather
            log_a = None if rollout.log_a is None else g(rollout.log_a.double())
            m = self.common_metrics(rollout.samples, g(rollout.log_pi.double()), log_a, None)
            m.update({f"scorer/{k}": g(v.to(self.device)).mean() for k, v in rollout.scores_by_name().items()})
            m.update({"reward": g(reward).mean(), "objective": g(shaped).mean(), "loss": rollout.loss_value,
                      "step_skipped": float(not rollout.stepped)})
            return m

        return loss, metrics

    def validation_metrics(self, rollout: Rollout) -> dict:
        reward = self.reward(rollout)
        m = {f"scorer/{k}": v.mean() for k, v in rollout.scores_by_name().items()}
        m["reward"] = reward.mean()
        log_a = None if rollout.log_a is None else rollout.log_a.double()
        m["objective"] = self.shaped_reward(reward, rollout.log_pi.double(), log_a).mean()
        return m


class RLKL(Reinforce):
    """RL with a KL penalty: maximise ``E_π[R] − β·KL(π‖a)`` (β = ``kl_coef``), k1 estimate in the reward.

    The logged ``objective`` is the Monte-Carlo estimate of J_KL; the loss value is only a
    surrogate whose gradient is unbiased for −∇J_KL (see :func:`lit_align.losses.rl_kl_loss`).
    ``entropy_coef`` γ > 0 adds the entropy bonus γ·H(π) (k1 estimate −γ·log π in the reward),
    the reverse-KL objective of Yun et al. (arXiv:2506.01523, eq. 15) whose optimum is
    ``a^{β/(β+γ)}·exp(R/(β+γ))/Z``; β may then be 0.
    """

    #: β = 0 without an entropy bonus is REINFORCE: refused here, allowed where it is a common setting (RLOO)
    zero_kl_coef_allowed = False

    def __init__(self, reward: Scorer | Sequence[Scorer], kl_coef: float = 0.1, entropy_coef: float = 0.0,
                 **kwargs) -> None:
        name = type(self).__name__
        if entropy_coef < 0 or not math.isfinite(entropy_coef):
            raise ValueError(f"{name}: entropy_coef must be a number ≥ 0, got {entropy_coef}")
        zero_ok = self.zero_kl_coef_allowed or entropy_coef > 0
        if not math.isfinite(kl_coef) or kl_coef < 0 or (kl_coef == 0 and not zero_ok):
            raise ValueError(f"{name}: kl_coef must be a number ≥ 0, got {kl_coef}" if self.zero_kl_coef_allowed else
                             f"{name}: kl_coef must be a positive number (or ≥ 0 with entropy_coef > 0), got "
                             f"{kl_coef}; for no KL penalty use lit_align.methods.Reinforce")
        super().__init__(reward=reward, **kwargs)

    @property
    def needs_base(self) -> bool:
        """The KL penalty (β > 0) reads the base whatever ``track_kl`` says."""
        return self.hparams.kl_coef > 0 or super().needs_base

    def shaped_reward(self, reward: Tensor, log_pi: Tensor, log_a: Tensor | None) -> Tensor:
        if log_a is None:  # no base kept: only with β = 0 (needs_base)
            log_a = log_pi
        return kl_shaped_reward(reward, log_pi, log_a, self.hparams.kl_coef, self.hparams.get("entropy_coef", 0.0))

    def validation_metrics(self, rollout: Rollout) -> dict:
        m = super().validation_metrics(rollout)
        if rollout.log_a is not None:
            m["kl_policy_base"] = estimators.kl_policy_base(rollout.log_pi, rollout.log_a)
        return m
