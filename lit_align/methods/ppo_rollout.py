"""The per-token part of a PPO rollout (π_old and base log-probs, old values, KL-penalised token
rewards, GAE advantages and returns), the clipped minibatch loss over it and PPO's state (Ziegler et al., "Fine-tuning language models from
human preferences", 2019; GAE: Schulman et al., "High-dimensional continuous control using
generalized advantage estimation", ICLR 2016)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from lit_align.losses import masked_entropy_bonus, ppo_policy_loss, ppo_value_loss
from lit_align.masked import masked_mean
from lit_align.methods.checkpoint_state import MethodState
from lit_align.models.engine import Engine
from lit_align.models.samples import Samples
from lit_align.rl import FixedKLController, gae, kl_penalized_token_rewards, whiten


@dataclass
class PPOState(MethodState):
    """The KL controller (its β moves with the observed KL)."""

    kl_ctl: FixedKLController

    def state_dict(self) -> dict:
        return {"kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "kl_ctl" in state:
            self.kl_ctl.load_state_dict(state["kl_ctl"])


@torch.no_grad()
def token_rollout(engine: Engine, forward: Callable[[Samples], tuple], samples: Samples, reward: Tensor,
                  kl_coef: float, gamma: float, lam: float, whiten_advantages: bool, minibatch_size: int) -> dict:
    """``forward(minibatch) -> (token log-probs, values, entropy)`` of the policy; returns the
    tensors the PPO losses read (``old_logp``, ``old_values``, ``base_logp``, ``adv``, ``returns``),
    the sequence KL part of the reward (``non_score``) and the β used (``beta``)."""
    old_logp, old_values, base_logp = [], [], []
    for mb in samples.minibatches(minibatch_size):
        lp, v, _ = forward(mb)
        old_logp.append(lp)
        old_values.append(v)
        base_logp.append(engine.token_log_probs(engine.base, mb))
    old_logp, old_values, base_logp = torch.cat(old_logp), torch.cat(old_values), torch.cat(base_logp)
    mask = samples.completion_mask
    token_rewards, non_score = kl_penalized_token_rewards(reward, old_logp, base_logp, mask, kl_coef)
    adv, returns = gae(token_rewards, old_values, mask, gamma, lam)
    if whiten_advantages:
        adv = whiten(adv, mask)
    return {"old_logp": old_logp, "old_values": old_values, "base_logp": base_logp, "non_score": non_score.sum(-1),
            "adv": adv, "returns": returns, "beta": kl_coef}


def clipped_loss(forward: Callable, samples: Samples, ro: dict, clip_range: float, clip_range_value: float,
                 value_coef: float, entropy_coef: float, sums: dict) -> Callable[[tuple[Tensor, float]], Tensor]:
    """The loss of a chunk ``(rows, weight)`` of the rollout: ``L_clip + c_v·L_value − c_H·H``
    (Schulman et al. 2017, eq. 9); adds its statistics, times ``weight``, to ``sums``."""

    def loss(rows: tuple[Tensor, float]) -> Tensor:
        chunk, weight = rows
        mb, m = samples.select(chunk), samples.completion_mask[chunk]
        logp, values, ent = forward(mb, entropy=entropy_coef > 0)
        pg, pg_stats = ppo_policy_loss(logp, ro["old_logp"][chunk], ro["adv"][chunk], m, clip_range)
        vf, vf_stats = ppo_value_loss(values, ro["old_values"][chunk], ro["returns"][chunk], m, clip_range_value)
        out = pg + value_coef * vf
        stats = {"policy_loss": pg.detach(), "value_loss": vf.detach(), "loss": out.detach(), **pg_stats, **vf_stats}
        if ent is not None:
            out = out + masked_entropy_bonus(ent, m, entropy_coef)
            stats["entropy"] = masked_mean(ent.detach(), m)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + weight * float(v)
        return out

    return loss
