"""DPG / GDC / GDC++ (KL-adaptive, off-policy) and f-DPG: distribution matching toward an EBM.

Descends the importance-weighted forward-KL gradient ``−E_q[(P/(Ẑq) − π/q) ∇log π]`` toward
``p ∝ P = a·Π potentials`` (Parshakova et al. 2019; Khalifa et al., "A distributional approach to
controlled text generation", ICLR 2021; GDC++'s π/q baseline: Korbak et al., NeurIPS 2022; Korbak's
thesis, arXiv:2404.12150, ch. 3). Off-policy, every ``proposal_update_interval`` steps q ← π when
D(p‖π) beat D(p‖q) over the window. ``divergence`` other than ``kl`` gives f-DPG (:mod:`.fdpg`).
Distributional targets get λ fitted at fit start (:mod:`.moments`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.losses import dpg_loss
from lit_align.methods.dpg_checks import check_dpg_arguments
from lit_align.methods.rollout_metrics import dpg_metrics, scorer_moments, validation_divergences
from lit_align.methods.fdpg import fdpg_objective, smooth_for_divergence
from lit_align.methods.moments import FitsMoments
from lit_align.methods.on_policy import OnPolicyModule
from lit_align.methods.z_estimate import DPGState
from lit_align.models.rollout import NoSignal, Rollout
from lit_align.models.samples import Samples
from lit_align.targets import EBM, Potential


class DPG(FitsMoments, OnPolicyModule):
    """Distributional Policy Gradient.

    Args:
        target: the potentials multiplied with the base LM, e.g. ``[Pointwise(scorer)]``.
        baseline: subtract the baseline π/q (GDC++); False gives plain DPG/GDC.
        off_policy: sample from a frozen proposal q updated adaptively (KL-adaptive DPG).
        proposal_update_interval, proposal_update_metric: steps between q ← π checks; the
            divergence compared (kl, tv or js).
        normalize: divide the importance weights by Ẑ; False keeps the GDC code's unnormalised ones.
        allow_warped_sampling: acknowledge that warped sampling makes q differ from π (refused otherwise).
        divergence: f-divergence D_f(π‖p) descended: ``kl`` (DPG), ``rkl``, ``js``, ``tv``, ``chi2``, ``rchi2``.
        pointwise_epsilon: ε of the smoothed ``b + ε`` for ``rkl``/``rchi2`` (None: their default).
        moment_matching_samples, moment_matching_batch, moment_matching_tolerance,
            moment_matching_contexts: fitting λ of Distributional potentials at fit start.
        moment_matching_refit_every: re-fit λ every N steps on the policy's samples (Ẑ restarts).
        moment_matching_strict: False warns instead of refusing an unfittable λ (smoke tests).
    """

    progress_bar = {"kl": "kl_target_policy", "z": "z"}

    def __init__(
        self, target: Sequence[Potential] | EBM, baseline: bool = True, off_policy: bool = True,
        proposal_update_interval: int = 10, proposal_update_metric: str = "kl", normalize: bool = True,
        allow_warped_sampling: bool = False, divergence: str = "kl", moment_matching_samples: int = 10240,
        moment_matching_batch: int = 512, moment_matching_tolerance: float = 1e-5,
        moment_matching_refit_every: int | None = None, moment_matching_strict: bool = True,
        moment_matching_contexts: int = 32, pointwise_epsilon: float | None = None, **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target = check_dpg_arguments(target, proposal_update_metric, proposal_update_interval, divergence,
                                          self.engine_settings.sampling.exact or allow_warped_sampling,
                                          moment_matching_refit_every)
        self.target = smooth_for_divergence(self.target, divergence, pointwise_epsilon)
        self.pending_fit_metrics: dict[str, float] = {}
        self.state = DPGState()

    def _hparams_ignore(self) -> list[str]:
        return ["target"]

    def on_models_ready(self) -> None:
        if self.hparams.off_policy:
            self.proposal = self.engine.frozen_copy(self.model)

    def sampling_model(self):
        return self.proposal if self.hparams.off_policy else self.model

    def extra_state(self) -> dict:
        return {**self.state.state_dict(), "lambdas": self.lambdas_state()}

    def load_extra_state(self, state: dict) -> None:
        self.state.load_state_dict(state)
        self.load_lambdas(state.get("lambdas", []))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.fit_moments_if_needed()

    def prepare_step(self) -> None:
        if self.refit_moments_if_due():
            self.state.restart()  # P changed with λ: Ẑ and the proposal-update window start again

    # -------------------------------------------------------------- objective
    def loss_and_metrics(self, rollout: Rollout, state: DPGState):
        hp, off = self.hparams, self.hparams.off_policy
        log_P, log_q = rollout.log_P, rollout.log_q
        state.update_z(rollout.gather(log_P - log_q))
        log_z = state.log_z
        rollout.satisfying = torch.isfinite(log_P)
        if log_z == -math.inf:
            rollout.log_pi = self.engine.log_prob(self.model, rollout.samples)
            loss = NoSignal("DPG: no sample has satisfied the target yet (Ẑ = 0)")
        elif hp.divergence != "kl":
            log_pi_all = self.engine.log_prob(self.model, rollout.samples) if off or not self.policy.exact \
                else rollout.samples.log_q
            loss = fdpg_objective(rollout, log_pi_all, log_z, hp.divergence, hp.baseline, off,
                                  self.engine.low_precision)
        else:
            def loss(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
                lq = log_q[rows] if off or self.engine.low_precision else log_pi.detach()
                return dpg_loss(log_pi, log_P[rows], lq, log_z, hp.baseline, hp.normalize)
        return loss, lambda: self.step_metrics(rollout, state)

    def step_metrics(self, rollout: Rollout, state: DPGState) -> dict:
        off = self.hparams.off_policy
        if rollout.loss is not None and rollout.advantages is None:
            coef = torch.exp(rollout.log_P - rollout.log_q - state.log_z)  # P/(Ẑq) − π/q (GDC++)
            base = torch.exp(rollout.log_pi.double() - rollout.log_q) if off else torch.ones_like(coef)
            rollout.advantages = coef - base if self.hparams.baseline else coef
        m, (log_pi, log_a, log_q) = dpg_metrics(rollout, state.log_z, off, self.device)
        m.update(self.common_metrics(rollout.samples, log_pi, log_a, log_q if off else None))
        if off:
            m["kl_proposal_base"] = estimators.kl_policy_base(log_q, log_a)
        m.update(scorer_moments(rollout, log_pi, log_q if off else None, self.device, proposal=off))
        return self.finish_metrics(m, rollout)

    def finish_metrics(self, m: dict, rollout: Rollout) -> dict:
        """``m`` plus the loss, step_skipped, λ-fit metrics and (off-policy) proposal_updated."""
        if rollout.loss_value is not None:
            m["loss"] = rollout.loss_value
        m["step_skipped"] = float(not rollout.stepped)
        m.update(self.take_fit_metrics())
        if self.hparams.off_policy:
            m["proposal_updated"] = float(self.maybe_update_proposal(m))
        return m

    def maybe_update_proposal(self, metrics: dict) -> bool:
        """Every ``proposal_update_interval`` steps, q ← π if D(p‖π) < D(p‖q) over the window."""
        hp = self.hparams
        better = self.state.window_prefers_policy(metrics, hp.proposal_update_metric,
                                                  self.global_step % hp.proposal_update_interval == 0)
        if better:
            self.engine.refresh(self.proposal)  # a full copy, or the adapters only (LoRA)
            self.state.proposal_updates += 1
        return better

    def validation_metrics(self, rollout: Rollout) -> dict:
        """On fresh policy samples (q = π): KL(p‖π), TV and E_π[φ] with the running Ẑ."""
        return validation_divergences(rollout, self.state.log_z)
