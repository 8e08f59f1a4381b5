"""Advantage estimation and KL control for PPO and RLOO, as pure functions of tensors.

KL-regularised PPO (Ziegler et al. 2019, arXiv:1909.08593; Schulman et al. 2017,
arXiv:1707.06347) and RLOO (Ahmadian et al. 2024, arXiv:2402.14740). Per-token tensors
are ``(B, T)`` with a ``mask`` that is 1 on the completion tokens (a prefix of each row:
up to and including the first EOS) and 0 after; masked entries never leak into the
results. The PPO losses themselves live in :mod:`lit_align.losses`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_align.masked import masked_mean

__all__ = [
    "masked_mean",
    "whiten",
    "kl_penalized_token_rewards",
    "gae",
    "rloo_advantages",
    "adaptive_kl_update",
    "FixedKLController",
    "AdaptiveKLController",
]


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x − μ)/√(σ² + eps)`` over the masked entries (Ziegler/TRL ``whiten``), 0 off the mask.

    ``μ = Σ m·x / Σ m`` and ``σ² = Σ m·(x − μ)² / (Σ m − 1)`` (unbiased, as ``torch.var``).
    With ``shift_mean=False`` the mean is added back (only the scale changes).
    """
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    var = ((x - mean) ** 2 * m).sum() / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def kl_penalized_token_rewards(
    reward: Tensor, log_pi_old: Tensor, log_a: Tensor, mask: Tensor, kl_coef: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Per-token rewards of KL-regularised PPO (Ziegler et al. 2019, arXiv:1909.08593).

    ``r_t = −β·(log π_old(y_t|·) − log a(y_t|·)) + 1[t = T]·R(x, y)`` (β = ``kl_coef``), T the last completion
    token of the row. Returns ``(r, non_score)`` where ``non_score`` is the KL part alone.
    Summed over t, ``r`` is ``R − β·(log π_old(y) − log a(y))``, the k1-shaped reward of RL-KL.
    """
    m = mask.to(torch.float64)
    non_score = -kl_coef * (log_pi_old.detach().double() - log_a.detach().double()) * m
    last = (m.sum(-1).long() - 1).clamp(min=0)
    rewards = non_score.clone()
    rewards[torch.arange(m.shape[0], device=m.device), last] += reward.detach().double()
    return rewards, non_score


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438), per row of a completion.

    ``δ_t = r_t + γ·V_{t+1} − V_t`` with ``V_{T+1} = 0`` after the last completion token
    (the episode ends there), ``A_t = Σ_{l≥0} (γλ)^l δ_{t+l}`` (the recursion
    ``A_t = δ_t + γλ·A_{t+1}``), and returns ``R_t = A_t + V_t``. Both are 0 off the mask.
    """
    m = mask.to(torch.float64)
    r = rewards.detach().double() * m
    v = values.detach().double() * m
    adv = torch.zeros_like(r)
    last_gae = torch.zeros_like(r[:, 0])
    t_max = r.shape[1]
    for t in reversed(range(t_max)):
        next_v = v[:, t + 1] if t + 1 < t_max else torch.zeros_like(last_gae)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last_gae = (delta + gamma * lam * last_gae) * m[:, t]
        adv[:, t] = last_gae
    return adv, (adv + v) * m


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, arXiv:2402.14740).

    ``rewards`` holds ``k`` consecutive samples per context. ``A_i = R_i − (1/(k−1))·Σ_{j≠i} R_j``,
    the baseline of each sample using only the other samples of its context, so that it is
    independent of the sample and the policy gradient stays unbiased.
    """
    if k < 2:
        raise ValueError(f"RLOO needs k ≥ 2 samples per context, got {k}")
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards are not a whole number of groups of k = {k}")
    r = rewards.detach().double().reshape(-1, k)
    baseline = (r.sum(-1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(rewards.shape)


def adaptive_kl_update(kl_coef: float, kl: float, target: float, horizon: float, n_steps: int) -> float:
    """Ziegler et al.'s proportional controller (arXiv:1909.08593), β = ``kl_coef``:

    ``β ← β·(1 + clip(KL_obs/target − 1, −0.2, 0.2)·n_steps/horizon)``, with ``KL_obs`` the
    batch mean of Σ_t (log π − log a) and ``n_steps`` the number of samples of the batch.
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0 or not math.isfinite(kl_coef):
            raise ValueError(f"the KL coefficient must be a finite number ≥ 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """β adapted toward a target KL(π‖a) with :func:`adaptive_kl_update` (init 0.2, target 6, horizon 1e4)."""

    def __init__(self, kl_coef: float = 0.2, target: float = 6.0, horizon: float = 10000) -> None:
        super().__init__(kl_coef)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target} and {horizon}")
        self.target, self.horizon = float(target), float(horizon)

    def update(self, kl: float, n_steps: int) -> float:
        if math.isfinite(kl):
            self.value = adaptive_kl_update(self.value, kl, self.target, self.horizon, n_steps)
        return self.value
