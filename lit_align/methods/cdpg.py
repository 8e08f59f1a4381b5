"""CDPG: DPG with one partition function per context (conditional distributional policy gradient).

Korbak et al., "Controlling conditional language models without catastrophic forgetting",
ICML 2022 (Korbak's thesis, arXiv:2404.12150, ch. 4): the target is one EBM per context, ``P_c(x) = a(x|c)·b(x, c)``,
the objective ``E_c KL(p_c‖π(·|c))``, descended with

    ∇ = −E_c E_{x~q(·|c)} [ (P_c(x)/(Ẑ_c q(x|c)) − [π/q]) ∇log π(x|c) ]

with the advantage detached (``detach_advantage: false`` mimics the released code, see
:func:`lit_align.losses.cdpg_loss`). Ẑ_c comes from this step's samples of c (``z_estimate:
batch``, the paper) or a running mean per context text (``running``, kept in the checkpoint);
contexts where no sample satisfies the target have Ẑ_c = 0 and contribute no gradient. The step,
the proposal and moment matching are DPG's; only the Z estimate, the loss and the metrics differ.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_align.losses import cdpg_loss
from lit_align.methods.dpg import DPG
from lit_align.methods.rollout_metrics import cdpg_metrics, scorer_moments, validation_divergences
from lit_align.methods.z_estimate import CDPGState
from lit_align.models.rollout import NoSignal, Rollout
from lit_align.models.samples import Samples
from lit_align.targets import EBM, Potential

_Z_ESTIMATES = ("batch", "running")


class CDPG(DPG):
    """Conditional DPG with a per-context partition function Ẑ_c.

    Args:
        target: potentials multiplied with the base LM, e.g. ``[Pointwise(NumeralConsistency())]``;
            scorers receive the contexts, so ``b`` may depend on ``c``.
        baseline: subtract the baseline (1 on-policy, π/q off-policy); the paper's runs use False.
        off_policy: sample from a frozen proposal q (False, as in every released CDPG config).
        z_estimate: ``batch`` (Ẑ_c from this step's samples of c, the paper) or ``running``.
        detach_advantage: True for the paper's estimator; False mimics the released code.
        Other arguments: see :class:`~lit_align.methods.DPG` and ``OnPolicyModule``.
    """

    def __init__(
        self, target: Sequence[Potential] | EBM, baseline: bool = False, off_policy: bool = False,
        z_estimate: str = "batch", detach_advantage: bool = True, **kwargs,
    ) -> None:
        if z_estimate not in _Z_ESTIMATES:
            raise ValueError(f"z_estimate must be one of {_Z_ESTIMATES}, got {z_estimate!r}")
        if off_policy and not detach_advantage:
            raise ValueError("detach_advantage=False (the released code's estimator) is defined on-policy only")
        if kwargs.get("divergence", "kl") != "kl":
            raise ValueError("CDPG descends the forward KL per context; `divergence` must be 'kl'")
        super().__init__(target=target, baseline=baseline, off_policy=off_policy, **kwargs)
        self.state = CDPGState()

    def loss_and_metrics(self, rollout: Rollout, state: CDPGState):
        hp, off = self.hparams, self.hparams.off_policy
        log_P, log_q = rollout.log_P, rollout.log_q
        log_w = log_P - log_q
        state.update_z(rollout.gather(log_w))  # global running Z: logged as z_global
        log_z_c = state.context_log_z(log_w, rollout.samples, hp.z_estimate == "running").to(self.device)
        row_log_z = log_z_c[rollout.context_index]
        rollout.satisfying = torch.isfinite(log_P)
        if not torch.isfinite(log_z_c).any():
            rollout.log_pi = self.engine.log_prob(self.model, rollout.samples) if off else log_q
            loss = NoSignal("CDPG: no context of the batch has a sample satisfying the target (every Ẑ_c = 0)")
        else:
            def loss(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
                lq = log_q[rows] if off or self.engine.low_precision else log_pi.detach()
                return cdpg_loss(log_pi, log_P[rows], lq, row_log_z[rows], hp.baseline, hp.detach_advantage)
        return loss, lambda: self.cdpg_step_metrics(rollout, state, log_z_c, row_log_z)

    def cdpg_step_metrics(self, rollout: Rollout, state: CDPGState, log_z_c: Tensor, row_log_z: Tensor) -> dict:
        off = self.hparams.off_policy
        if rollout.loss is not None:  # the advantage P_c/(Ẑ_c q) − [π/q] of each sample (0 where Ẑ_c = 0)
            signal = torch.isfinite(row_log_z)
            coef = torch.exp(rollout.log_P - rollout.log_q - torch.where(signal, row_log_z, torch.zeros_like(row_log_z)))
            base = torch.exp(rollout.log_pi.double() - rollout.log_q) if off else torch.ones_like(coef)
            adv = coef - base if self.hparams.baseline else coef
            rollout.advantages = torch.where(signal, adv, torch.zeros_like(adv))
        m = cdpg_metrics(rollout, log_z_c, state.log_z, off, self.device)
        g = rollout.gather
        log_pi, log_a, log_q = (g(t.double()) for t in (rollout.log_pi, rollout.log_a, rollout.log_q))
        m.update(self.common_metrics(rollout.samples, log_pi, log_a, log_q if off else None))
        m.update(scorer_moments(rollout, log_pi, log_q if off else None, self.device, proposal=False))
        return self.finish_metrics(m, rollout)

    def validation_metrics(self, rollout: Rollout) -> dict:
        """On fresh policy samples: Ẑ_c from each validation context's samples, per-context KL averaged."""
        return validation_divergences(rollout, None)
