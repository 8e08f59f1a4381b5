"""The per-token part of a PPO rollout: π_old and base log-probs, old values, KL-penalised
token rewards, GAE advantages and returns (Ziegler et al., "Fine-tuning language models from
human preferences", 2019; GAE: Schulman et al., "High-dimensional continuous control using
generalized advantage estimation", ICLR 2016)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lit_align.models.engine import Engine
from lit_align.models.samples import Samples
from lit_align.rl import gae, kl_penalized_token_rewards, whiten


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
