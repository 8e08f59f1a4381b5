"""PPO with a KL penalty toward the base LM: the Ziegler et al. (2019) baseline.

methods.md §3.2 (Baselines, "Ziegler") and §7 (KL-regularised PPO). Each training step:

1. samples ``n_samples`` completions per context from the policy (the rollout, π_old);
2. computes, without gradients, the per-token log-probs of π_old and of the base a, the
   values V_old (a scalar linear head on the last hidden state of the policy, or of a
   separate value model) and the task reward R (the scorers);
3. per-token rewards ``r_t = −β·(log π_old − log a) + 1[t = T]·R``, GAE(γ, λ) advantages,
   whitened, and returns ``A + V_old``;
4. ``ppo_epochs`` passes over the rollout in shuffled minibatches of
   ``ppo_minibatch_size`` samples, one optimizer step per minibatch, on
   ``L = L_clip + c_v·L_value − c_H·H`` (:mod:`lit_align.losses`);
5. updates β with the adaptive KL controller (or keeps it fixed).

The population optimum with a fixed β is a·exp(R/β)/Z, as for RL-KL (§2).
By default one rollout counts as one ``trainer.global_step`` (so ``max_steps`` means the
same as for the other methods); the learning-rate warm-up counts optimizer updates.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from lit_align.losses import masked_entropy_bonus, ppo_policy_loss, ppo_value_loss
from lit_align.methods.base import BasePolicyModule
from lit_align.methods.reinforce import RewardFromScorers
from lit_align.models.heads import hidden_size
from lit_align.models.loading import load
from lit_align.models.policy import Samples, disable_dropout
from lit_align.rl import AdaptiveKLController, FixedKLController, gae, kl_penalized_token_rewards, masked_mean, whiten
from lit_align.scorers.base import Scorer


class PPO(RewardFromScorers, BasePolicyModule):
    """PPO with a per-token KL penalty and a learned value function (Ziegler baseline).

    Args:
        reward, reward_weights: the task reward R = Σ_k w_k·scorer_k (any scorer or a
            reward-model scorer).
        kl_coef: β, the initial KL coefficient (Ziegler: 0.2).
        adaptive_kl: adapt β toward ``kl_target`` over ``kl_horizon`` samples (Ziegler's
            controller, :func:`lit_align.rl.adaptive_kl_update`); False keeps β fixed.
        kl_target, kl_horizon: the controller's target KL(π‖a) (nats per sequence) and horizon.
        gamma, lam: GAE discount and λ.
        clip_range, clip_range_value: ε of the clipped surrogate and of the clipped value loss.
        value_coef: c_v, weight of the value loss.
        entropy_coef: c_H, weight of the entropy bonus (0: off; costs a full-vocabulary softmax).
        ppo_epochs: passes over each rollout.
        ppo_minibatch_size: samples per optimizer update (default ``minibatch_size``); each
            update accumulates gradients over forward chunks of ``minibatch_size`` samples.
        whiten_advantages: whiten A over the rollout's tokens (as in the papers; per rank
            under DDP).
        value_model: None puts the value head on the policy (shared trunk, as Ziegler's
            GPT-2 with a value head); a model name loads a separate value network (same
            tokenizer as the policy) with its own head.
        count_optimizer_steps: let ``trainer.global_step`` count every optimizer update
            instead of every rollout.
    """

    def __init__(
        self,
        reward: Scorer | Sequence[Scorer],
        reward_weights: Sequence[float] | None = None,
        kl_coef: float = 0.2,
        adaptive_kl: bool = True,
        kl_target: float = 6.0,
        kl_horizon: float = 10000,
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_range: float = 0.2,
        clip_range_value: float = 0.2,
        value_coef: float = 0.1,
        entropy_coef: float = 0.0,
        ppo_epochs: int = 4,
        ppo_minibatch_size: int | None = None,
        whiten_advantages: bool = True,
        value_model: str | None = None,
        count_optimizer_steps: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if self.hparams.get("grad_dtype") not in (None, "float32"):
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
        self.kl_ctl = AdaptiveKLController(kl_coef, kl_target, kl_horizon) if adaptive_kl else FixedKLController(kl_coef)
        self.value_head: nn.Linear | None = None
        self.value_trunk: nn.Module | None = None

    def _hparams_ignore(self) -> list[str]:
        return ["reward"]

    # ------------------------------------------------------------------ models
    def on_models_ready(self) -> None:
        hp = self.hparams
        trunk = self.model
        if hp.value_model is not None:
            trunk, _ = load(hp.value_model, None, seed=hp.model_seed)
            disable_dropout(trunk)
            self.value_trunk = trunk
        head = nn.Linear(hidden_size(trunk), 1)
        nn.init.zeros_(head.weight)  # V ≡ 0 at the start: no spurious advantages on the first rollout
        nn.init.zeros_(head.bias)
        self.value_head = head.to(next(self.model.parameters()).device)

    def optimized_parameters(self):
        yield from self.model.parameters()
        yield from self.value_head.parameters()
        if self.value_trunk is not None:
            yield from self.value_trunk.parameters()

    def forward_tokens(self, samples: Samples, entropy: bool = False):
        """Per-token log-probs of the policy, values V_t and (optionally) entropies."""
        shared = self.value_trunk is None
        out = self.policy.token_outputs(self.model, samples, hidden=shared, entropy=entropy)
        hidden = out.hidden if shared else self.policy.token_outputs(self.value_trunk, samples).hidden
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.log_probs, values * samples.completion_mask, out.entropy

    # ---------------------------------------------------------------- rollout
    @torch.no_grad()
    def rollout(self, samples: Samples) -> dict[str, Tensor]:
        """π_old and base per-token log-probs, old values, reward, GAE advantages and returns."""
        old_logp, old_values, base_logp = [], [], []
        for mb in samples.minibatches(self.hparams.minibatch_size):
            lp, v, _ = self.forward_tokens(mb)
            old_logp.append(lp)
            old_values.append(v)
            base_logp.append(self.policy.token_log_probs(self.base_model, mb))
        old_logp, old_values, base_logp = torch.cat(old_logp), torch.cat(old_values), torch.cat(base_logp)
        mask = samples.completion_mask
        reward, scores = self.reward(samples)
        beta = self.kl_ctl.value
        token_rewards, non_score = kl_penalized_token_rewards(reward, old_logp, base_logp, mask, beta)
        adv, returns = gae(token_rewards, old_values, mask, self.hparams.gamma, self.hparams.lam)
        if self.hparams.whiten_advantages:
            adv = whiten(adv, mask)
        return {"old_logp": old_logp, "old_values": old_values, "base_logp": base_logp, "reward": reward,
                "scores": scores, "non_score": non_score.sum(-1), "adv": adv, "returns": returns, "beta": beta}

    # ---------------------------------------------------------------- training
    def training_step(self, batch: list[str], batch_idx: int) -> None:
        hp = self.hparams
        samples = self.sample(batch)
        ro = self.rollout(samples)
        mask, n = samples.completion_mask, len(samples)
        mb_size = hp.ppo_minibatch_size or hp.minibatch_size
        sums: dict[str, float] = {}
        updates = skipped = 0
        for _ in range(hp.ppo_epochs):
            order = torch.randperm(n, device=mask.device)
            for start in range(0, n, mb_size):
                idx = order[start : start + mb_size]
                n_tokens = mask[idx].sum().clamp(min=1)
                for chunk in idx.split(hp.minibatch_size):
                    self._backward_chunk(samples.select(chunk), ro, chunk, float(mask[chunk].sum() / n_tokens), sums)
                updates += 1
                skipped += not self.optimizer_step_guarded()
        if not hp.count_optimizer_steps:
            self.count_updates_as_one_step(updates)

        # KL controller: KL_obs = batch mean of Σ_t (log π_old − log a), n_steps = batch size
        seq_kl = self.gather((ro["old_logp"] - ro["base_logp"]).sum(-1).double())
        self.kl_ctl.update(float(seq_kl.mean()), seq_kl.numel())

        self.last_samples = samples
        log_pi, log_a = ro["old_logp"].sum(-1).double(), ro["base_logp"].sum(-1).double()
        m = self.common_metrics(samples, self.gather(log_pi), self.gather(log_a), None)
        m.update({f"scorer/{k}": self.gather(v).mean() for k, v in ro["scores"].items()})
        reward = self.gather(ro["reward"].double())
        non_score = self.gather(ro["non_score"])
        m.update({k: v / updates for k, v in sums.items()})
        m.update({
            "reward": reward.mean(),
            "non_score_reward": non_score.mean(),
            "objective": (reward + non_score).mean(),
            "kl_coef": ro["beta"],
            "kl_coef_next": self.kl_ctl.value,
            "returns": masked_mean(ro["returns"], mask),
            "values": masked_mean(ro["old_values"].double(), mask),
            "step_skipped": skipped / updates,
            "n_updates": float(updates),
        })
        self.log_metrics(m, "train")
        self.log("reward", m["reward"], prog_bar=True, batch_size=1, logger=False)

    def _backward_chunk(self, mb: Samples, ro: dict, rows: Tensor, weight: float, sums: dict) -> None:
        hp = self.hparams
        m = mb.completion_mask
        logp, values, ent = self.forward_tokens(mb, entropy=hp.entropy_coef > 0)
        pg, pg_stats = ppo_policy_loss(logp, ro["old_logp"][rows], ro["adv"][rows], m, hp.clip_range)
        vf, vf_stats = ppo_value_loss(values, ro["old_values"][rows], ro["returns"][rows], m, hp.clip_range_value)
        loss = pg + hp.value_coef * vf
        stats = {"policy_loss": pg.detach(), "value_loss": vf.detach(), "loss": loss.detach(), **pg_stats, **vf_stats}
        if ent is not None:
            loss = loss + masked_entropy_bonus(ent, m, hp.entropy_coef)
            stats["entropy"] = masked_mean(ent.detach(), m)
        loss = loss * weight
        self.backward_if_finite(loss)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + weight * float(v)

    # -------------------------------------------------------------- validation
    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        reward, scores = self.reward(samples)
        m = {f"scorer/{k}": v.mean() for k, v in scores.items()}
        m["reward"] = reward.mean()
        m["objective"] = (reward.double() - self.kl_ctl.value * (log_pi.double() - log_a.double())).mean()
        return m

    # -------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])
