"""PPO with a KL penalty toward the base LM: the baseline of Ziegler et al., "Fine-tuning language
models from human preferences" (2019), with the clipped surrogate of Schulman et al., "Proximal
policy optimization algorithms" (2017).

Each step: the rollout samples from π_old and scores once; the objective adds per-token π_old and
base log-probs, values V_old (a linear head on the policy's last hidden state, or on a separate
value model), the rewards ``r_t = −β·(log π_old − log a) + 1[t = T]·R``, whitened GAE(γ, λ)
advantages and returns (:mod:`.ppo_rollout`); the update makes ``ppo_epochs`` passes over the
rollout in shuffled minibatches of ``ppo_minibatch_size``, one optimizer step each, on
``L_clip + c_v·L_value − c_H·H``; then β follows the adaptive KL controller. The optimum with a
fixed β is ``a·exp(R/β)/Z``, as for RL-KL. One rollout counts as one ``trainer.global_step``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from lit_align.masked import masked_mean
from lit_align.methods.on_policy import OnPolicyModule
from lit_align.methods.ppo_rollout import PPOState, clipped_loss, token_rollout
from lit_align.methods.reinforce import RewardFromScorers
from lit_align.models.loading import load
from lit_align.models.policy import disable_dropout
from lit_align.models.rollout import Rollout
from lit_align.models.value_head import token_log_probs_and_values, zero_head
from lit_align.rl import AdaptiveKLController, FixedKLController
from lit_align.scorers.base import Scorer


class PPO(RewardFromScorers, OnPolicyModule):
    """PPO with a per-token KL penalty and a learned value function (Ziegler baseline).

    Args:
        reward, reward_weights: the task reward R = Σ_k w_k·scorer_k.
        kl_coef: β, the initial KL coefficient (Ziegler: 0.2); ``adaptive_kl``: adapt it toward
            ``kl_target`` (nats per sequence) over ``kl_horizon`` samples; False keeps it fixed.
        gamma, lam: GAE discount and λ. clip_range, clip_range_value: ε of the clipped losses.
        value_coef, entropy_coef: c_v and c_H (c_H > 0 costs a full-vocabulary softmax).
        ppo_epochs: passes over each rollout; ppo_minibatch_size: samples per optimizer update
            (default ``minibatch_size``; forward chunks of ``minibatch_size`` each).
        whiten_advantages: whiten A over the rollout's tokens (per rank under DDP).
        value_model: None puts the value head on the policy (shared trunk); a model name loads a
            separate value network (same tokenizer) with its own head.
        count_optimizer_steps: ``trainer.global_step`` counts optimizer updates, not rollouts.
    """

    rollout_reads_base = False  # per-token base log-probs instead
    progress_bar = {"reward": "reward"}

    def __init__(
        self, reward: Scorer | Sequence[Scorer], reward_weights: Sequence[float] | None = None, kl_coef: float = 0.2,
        adaptive_kl: bool = True, kl_target: float = 6.0, kl_horizon: float = 10000, gamma: float = 1.0,
        lam: float = 0.95, clip_range: float = 0.2, clip_range_value: float = 0.2, value_coef: float = 0.1,
        entropy_coef: float = 0.0, ppo_epochs: int = 4, ppo_minibatch_size: int | None = None,
        whiten_advantages: bool = True, value_model: str | None = None, count_optimizer_steps: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if self.engine_settings.grad_dtype not in (None, "float32"):
            raise ValueError("PPO does not take grad_dtype: its ratio π/π_old needs both log-probs from one precision; "
                             "use the trainer's precision (bf16-mixed) instead")
        self.init_reward(reward, reward_weights)
        if ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be ≥ 1, got {ppo_epochs}")
        if ppo_minibatch_size is not None and ppo_minibatch_size < 1:
            raise ValueError(f"ppo_minibatch_size must be ≥ 1, got {ppo_minibatch_size}")
        if not (0 <= gamma <= 1 and 0 <= lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {gamma} and {lam}")
        if clip_range <= 0 or clip_range_value <= 0:
            raise ValueError("clip_range and clip_range_value must be > 0")
        ctl = AdaptiveKLController(kl_coef, kl_target, kl_horizon) if adaptive_kl else FixedKLController(kl_coef)
        self.state = PPOState(ctl)
        self.value_head: nn.Linear | None = None
        self.value_trunk: nn.Module | None = None

    def _hparams_ignore(self) -> list[str]:
        return ["reward"]

    def on_models_ready(self) -> None:
        trunk = self.model
        if self.hparams.value_model is not None:
            trunk, _ = load(self.hparams.value_model, None, seed=self.hparams.model_seed)
            disable_dropout(trunk)
            self.value_trunk = trunk
        self.value_head = zero_head(trunk).to(next(self.model.parameters()).device)

    def optimized_parameters(self):
        yield from self.model.parameters()
        yield from self.value_head.parameters()
        if self.value_trunk is not None:
            yield from self.value_trunk.parameters()

    def forward_tokens(self, samples, entropy: bool = False):
        """Per-token log-probs of the policy, values V_t and (optionally) entropies."""
        return token_log_probs_and_values(self.policy, self.model, self.value_head, samples, self.value_trunk, entropy)

    def loss_and_metrics(self, rollout: Rollout, state: PPOState):
        hp = self.hparams
        reward = self.reward(rollout)
        ro = token_rollout(self.engine, self.forward_tokens, rollout.samples, reward, state.kl_ctl.value,
                           hp.gamma, hp.lam, hp.whiten_advantages, hp.minibatch_size)
        rollout.extras.update(ro, sums={})
        rollout.log_pi, rollout.log_a = ro["old_logp"].sum(-1).double(), ro["base_logp"].sum(-1).double()
        loss = clipped_loss(self.forward_tokens, rollout.samples, ro, hp.clip_range, hp.clip_range_value,
                            hp.value_coef, hp.entropy_coef, rollout.extras["sums"])
        return loss, lambda: self.ppo_metrics(rollout, reward, state)

    def update(self, rollout: Rollout, loss) -> bool:
        """``ppo_epochs`` × shuffled minibatches, one guarded optimizer step each."""
        hp = self.hparams
        mask, n = rollout.samples.completion_mask, len(rollout)
        mb_size = hp.ppo_minibatch_size or hp.minibatch_size
        updates = skipped = 0
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(n, device=mask.device)
            for start in range(0, n, mb_size):
                idx = order[start : start + mb_size]
                n_tokens = mask[idx].sum().clamp(min=1)
                chunks = [(chunk, float(mask[chunk].sum() / n_tokens)) for chunk in idx.split(hp.minibatch_size)]
                self.accumulate_backward([((c, w), w) for c, w in chunks], loss)
                updates += 1
                skipped += not self.optimizer_step_guarded()
        if not hp.count_optimizer_steps:
            self.count_updates_as_one_step(updates)
        rollout.extras.update(updates=updates, skipped=skipped)
        return skipped < updates

    def ppo_metrics(self, rollout: Rollout, reward: Tensor, state: PPOState) -> dict:
        ro, g, mask = rollout.extras, rollout.gather, rollout.samples.completion_mask
        seq_kl = g((ro["old_logp"] - ro["base_logp"]).sum(-1).double())  # KL_obs for the controller
        state.kl_ctl.update(float(seq_kl.mean()), seq_kl.numel())
        m = self.common_metrics(rollout.samples, g(rollout.log_pi), g(rollout.log_a), None)
        m.update({f"scorer/{k}": g(v.to(self.device)).mean() for k, v in rollout.scores_by_name().items()})
        reward, non_score, updates = g(reward.double()), g(ro["non_score"]), ro["updates"]
        m.update({k: v / updates for k, v in ro["sums"].items()})
        m.update({"reward": reward.mean(), "non_score_reward": non_score.mean(), "objective": (reward + non_score).mean(),
                  "kl_coef": ro["beta"], "kl_coef_next": state.kl_ctl.value,
                  "returns": masked_mean(ro["returns"], mask), "values": masked_mean(ro["old_values"].double(), mask),
                  "step_skipped": ro["skipped"] / updates, "n_updates": float(updates)})
        return m

    def validation_metrics(self, rollout: Rollout) -> dict:
        reward = self.reward(rollout)
        m = {f"scorer/{k}": v.mean() for k, v in rollout.scores_by_name().items()}
        m["reward"] = reward.mean()
        m["objective"] = (reward.double() - self.state.kl_ctl.value * (rollout.log_pi.double() - rollout.log_a)).mean()
        return m
