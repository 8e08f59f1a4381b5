"""The f-DPG objectives of :class:`~lit_align.methods.DPG` (``divergence`` other than ``kl``).

f-DPG descends ``D_f(π‖p)`` with the pseudo-reward ``−f'(π/p)`` (Go et al., "Aligning language
models with preferences through f-divergence minimization", ICML 2023), here with a leave-one-out baseline of the pseudo-rewards. Reverse KL and reverse χ² have
an unbounded pseudo-reward where a hard pointwise constraint makes p = 0, so their target is
smoothed to ``a·(b + ε)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.f_divergences import FDPG_DEFAULT_EPSILON, fdpg_loss, fdpg_pseudo_reward, leave_one_out_baseline
from lit_align.models.rollout import Loss, Rollout
from lit_align.models.samples import Samples
from lit_align.targets import EBM, Pointwise


def smooth_for_divergence(target: EBM, divergence: str, epsilon: float | None = None) -> EBM:
    """The target with its hard pointwise factors smoothed to ``b + ε`` when ``divergence``'s
    pseudo-reward is unbounded where p = 0 (rkl, rchi2); else ``target`` itself."""
    hard = [p for p in target.potentials if isinstance(p, Pointwise) and p.epsilon == 0]
    if divergence not in FDPG_DEFAULT_EPSILON or not hard:
        return target
    eps = FDPG_DEFAULT_EPSILON[divergence] if epsilon is None else float(epsilon)
    if eps <= 0:
        raise ValueError(
            f"pointwise_epsilon must be > 0 for divergence {divergence!r} with the hard pointwise constraint(s) "
            f"{[p.scorer.name for p in hard]}: the pseudo-reward −f'(π/p) is −∞ where b(x) = 0"
        )
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(f"f-DPG {divergence!r}: hard pointwise constraint(s) {[p.scorer.name for p in hard]} smoothed "
                   f"to b + {eps:g} (pointwise_epsilon); the target is p_ε ∝ a·(b + ε)")
    return EBM([Pointwise(p.scorer, eps) if p in hard else p for p in target.potentials])


def fdpg_objective(rollout: Rollout, log_pi_all: Tensor, log_z: float, divergence: str, baseline: bool,
                   off_policy: bool, q_from_samples: bool) -> Loss:
    """The f-DPG minibatch loss; sets the rollout's advantages ``π/q·(R − b)`` and pseudo-rewards.

    ``log_pi_all``: the policy's log-probs of every sample (no gradient), for the pseudo-rewards.
    ``q_from_samples``: use the sampled ``log_q`` as q on-policy (low-precision passes).
    """
    log_P, log_q = rollout.log_P, rollout.log_q
    log_pi_all = log_pi_all.double()
    reward = fdpg_pseudo_reward(log_pi_all, log_P, log_z, divergence)
    ratio = torch.exp(log_pi_all - log_q) if off_policy else torch.ones_like(reward)
    base = leave_one_out_baseline(reward, ratio) if baseline else torch.zeros_like(reward)
    rollout.advantages = ratio * (reward - base)
    rollout.extras["pseudo_reward"] = reward

    def loss(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
        lq = log_q[rows] if off_policy or q_from_samples else log_pi.detach()
        return fdpg_loss(log_pi, log_P[rows], lq, log_z, divergence, base[rows])

    return loss
