"""DPG / GDC / GDC++ (KL-adaptive, off-policy) and f-DPG: distribution matching toward an EBM.

Descends the importance-weighted forward-KL gradient ``−E_q[(P/(Ẑq) − π/q) ∇log π]`` toward
``p ∝ P = a·Π potentials`` (Parshakova et al. 2019; Khalifa, Elsahar & Dymetman, "A
distributional approach to controlled text generation", ICLR 2021; the π/q baseline of GDC++:
Korbak et al., "On reinforcement learning and distribution matching for fine-tuning language
models with no catastrophic forgetting", NeurIPS 2022; Korbak's thesis, arXiv:2404.12150, ch. 3). Off-policy, every ``proposal_update_interval`` steps q ← π when D(p‖π) beat
D(p‖q) over the window. ``divergence`` other than ``kl`` gives f-DPG (:mod:`.fdpg`).
Distributional targets get λ fitted at fit start (:mod:`.moments`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.f_divergences import F_DIVERGENCES
from lit_align.losses import dpg_loss
from lit_align.methods.dpg_metrics import _DIVERGENCES, dpg_metrics, scorer_moments, validation_divergences
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
        self.target = target if isinstance(target, EBM) else EBM(list(target))
        if not self.target.potentials:
            raise ValueError("DPG: `target` needs at least one potential, e.g. Pointwise(scorer)")
        if proposal_update_metric not in _DIVERGENCES:
            raise ValueError(f"proposal_update_metric must be one of {sorted(_DIVERGENCES)}, got {proposal_update_metric!r}")
        if proposal_update_interval < 1:
            raise ValueError(f"proposal_update_interval must be ≥ 1, got {proposal_update_interval}")
        if not self.engine_settings.sampling.exact and not allow_warped_sampling:
            raise ValueError(
                "DPG's importance weights assume exact ancestral sampling (temperature 1, top_k 0, top_p 1). "
                "Set allow_warped_sampling: true to sample from the warped policy anyway (q is then the warped "
                "distribution and its log-probs are used as log q).")
        if divergence not in F_DIVERGENCES:
            raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
        self.target = smooth_for_divergence(self.target, divergence, pointwise_epsilon)
        if moment_matching_refit_every is not None and moment_matching_refit_every < 1:
            raise ValueError(f"moment_matching_refit_every must be ≥ 1 or null, got {moment_matching_refit_every}")
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

    # -------------------------------------------------------- moment matching
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.needs_fit():
            self.fit_moments(None)

    def fit_moments(self, model) -> None:
        """Fit λ on fresh samples of ``model`` (None: the base, at fit start; the policy when refitting)."""
        hp = self.hparams
        self.fit_target_moments(model, hp.moment_matching_samples, hp.moment_matching_strict,
                         batch_size=hp.moment_matching_batch, tolerance=hp.moment_matching_tolerance,
                         n_contexts=hp.get("moment_matching_contexts", 32))

    def prepare_step(self) -> None:
        every = self.hparams.moment_matching_refit_every
        if every and self.global_step and not self.global_step % every and self.lambdas_state():
            self.fit_moments(self.model)
            self.state.restart()  # P changed with λ

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
        if rollout.loss_value is not None:
            m["loss"] = rollout.loss_value
        m["step_skipped"] = float(not rollout.stepped)
        m.update(self.take_fit_metrics())
        if off:
            m["proposal_updated"] = float(self.maybe_update_proposal(m))
        return m

    def maybe_update_proposal(self, metrics: dict) -> bool:
        """Every ``proposal_update_interval`` steps, q ← π if D(p‖π) < D(p‖q) over the window."""
        name, window = self.hparams.proposal_update_metric, self.state.window
        if f"{name}_target_proposal" in metrics:
            window["policy"].append(float(metrics[f"{name}_target_policy"]))
            window["proposal"].append(float(metrics[f"{name}_target_proposal"]))
        if (self.global_step % self.hparams.proposal_update_interval) != 0 or not window["policy"]:
            return False
        better = sum(window["policy"]) < sum(window["proposal"])
        self.state.window = {"policy": [], "proposal": []}
        if better:
            self.engine.refresh(self.proposal)  # a full copy, or the adapters only (LoRA)
            self.state.proposal_updates += 1
        return better

    def validation_metrics(self, rollout: Rollout) -> dict:
        """On fresh policy samples (q = π): KL(p‖π), TV and E_π[φ] with the running Ẑ."""
        return validation_divergences(rollout, self.state.log_z)
