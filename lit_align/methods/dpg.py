"""DPG / GDC / GDC++ (KL-adaptive, off-policy): distribution matching toward an EBM.

methods.md §1.2–1.4 and §3.2. Each step draws ``n_samples`` per context from the proposal
q (the policy itself on-policy; a frozen snapshot of it off-policy), scores them with the
target ``log P = log a + Σ log potentials``, updates the running estimate of Z with every
sample ever drawn, and descends the importance-weighted forward-KL gradient. Off-policy,
every ``proposal_update_interval`` steps q is replaced by the policy when the estimated
KL(p‖π) beats KL(p‖q) over that window (``proposal_update_metric`` picks kl, tv or js).

``divergence`` selects the f-DPG loss (methods.md §7: kl, rkl, js, tv, chi2, rchi2; kl is
DPG/GDC++ itself). Distributional and hybrid targets (:class:`~lit_align.moment_matching.Distributional`)
get λ fitted by moment matching at fit start, stored in the checkpoint.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lit_align import estimators
from lit_align import moment_matching as mm
from lit_align.f_divergences import F_DIVERGENCES, FDPG_DEFAULT_EPSILON, fdpg_loss, fdpg_pseudo_reward, leave_one_out_baseline
from lit_align.losses import dpg_loss
from lit_align.methods.base import BasePolicyModule
from lit_align.models.policy import Samples
from lit_align.targets import EBM, Pointwise, Potential

_DIVERGENCES = {
    "kl": estimators.kl_target_policy,
    "tv": estimators.tv_target_policy,
    "js": estimators.js_target_policy,
}


def smooth_for_divergence(target: EBM, divergence: str, epsilon: float | None = None) -> EBM:
    """The target with its hard pointwise factors smoothed to ``b + ε`` when ``divergence``'s
    pseudo-reward is unbounded where p = 0 (rkl, rchi2; methods.md §7); else ``target`` itself."""
    hard = [p for p in target.potentials if isinstance(p, Pointwise) and p.epsilon == 0]
    if divergence not in FDPG_DEFAULT_EPSILON or not hard:
        return target
    eps = FDPG_DEFAULT_EPSILON[divergence] if epsilon is None else float(epsilon)
    if eps <= 0:
        raise ValueError(
            f"pointwise_epsilon must be > 0 for divergence {divergence!r} with the hard pointwise constraint(s) "
            f"{[p.scorer.name for p in hard]}: the pseudo-reward −f'(π/p) is −∞ where b(x) = 0 (methods.md §7)"
        )
    from lightning.pytorch.utilities import rank_zero_info

    rank_zero_info(f"f-DPG {divergence!r}: hard pointwise constraint(s) {[p.scorer.name for p in hard]} smoothed "
                   f"to b + {eps:g} (pointwise_epsilon); the target is p_ε ∝ a·(b + ε)")
    return EBM([Pointwise(p.scorer, eps) if p in hard else p for p in target.potentials])


class DPG(BasePolicyModule):
    """Distributional Policy Gradient.

    Args:
        target: the potentials multiplied with the base LM, e.g. ``[Pointwise(scorer)]``.
        baseline: subtract the baseline π/q (GDC++); False gives plain DPG/GDC.
        off_policy: sample from a frozen proposal q updated adaptively (KL-adaptive DPG);
            False samples from the policy itself.
        proposal_update_interval: steps between proposal-update checks.
        proposal_update_metric: the divergence compared for the update: kl, tv or js.
        normalize: divide the importance weights by Ẑ (disco); False keeps the GDC code's
            unnormalised weights, whose scale Z acts like a learning-rate factor.
        allow_warped_sampling: acknowledge that temperature/top-k/top-p sampling makes the
            policy differ from the proposal q the weights assume (refused otherwise).
        divergence: the f-divergence D_f(π‖p) descended (f-DPG, methods.md §7): ``kl``
            (forward KL, DPG; uses ``dpg_loss``), ``rkl``, ``js``, ``tv``, ``chi2``, ``rchi2``.
            For the others, ``baseline`` subtracts a leave-one-out mean pseudo-reward.
            ``rkl``/``rchi2`` need a smoothed pointwise target: see ``pointwise_epsilon``.
        pointwise_epsilon: for ``rkl``/``rchi2``, whose pseudo-reward is −∞ where a hard
            pointwise constraint makes p = 0 (methods.md §7 pitfall), hard ``Pointwise``
            potentials become ``b + ε`` with this ε; None takes the divergence's default
            (``FDPG_DEFAULT_EPSILON``: rkl 1e-4 as in CDPG, rchi2 1e-2, whose reward
            2(π/p − 1) grows like 1/ε). The target, its Ẑ and the logged divergences are then
            those of the smoothed target p_ε. Ignored for the other divergences (finite there).
        moment_matching_samples: base samples on which λ of Distributional potentials is
            fitted at fit start (GDC: 10240).
        moment_matching_batch: samples per sampling call while drawing them.
        moment_matching_tolerance: max |E[φ] − μ̄| on that sample (SNIS).
        moment_matching_refit_every: re-fit λ every N steps on fresh samples of the current
            policy (less SNIS bias when μ̄ is far from E_a[φ]); the running Ẑ restarts then.
        moment_matching_strict: False warns instead of refusing when λ cannot be fitted
            (smoke tests with random models only).
        moment_matching_contexts: with a conditional data module, the number of its training
            contexts the λ-fitting samples are spread over (per-context moments averaged).
    """

    def __init__(
        self,
        target: Sequence[Potential] | EBM,
        baseline: bool = True,
        off_policy: bool = True,
        proposal_update_interval: int = 10,
        proposal_update_metric: str = "kl",
        normalize: bool = True,
        allow_warped_sampling: bool = False,
        divergence: str = "kl",
        moment_matching_samples: int = 10240,
        moment_matching_batch: int = 512,
        moment_matching_tolerance: float = 1e-5,
        moment_matching_refit_every: int | None = None,
        moment_matching_strict: bool = True,
        moment_matching_contexts: int = 32,
        pointwise_epsilon: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target if isinstance(target, EBM) else EBM(list(target))
        if not self.target.potentials:
            raise ValueError("DPG: `target` needs at least one potential, e.g. Pointwise(scorer)")
        if proposal_update_metric not in _DIVERGENCES:
            raise ValueError(f"proposal_update_metric must be one of {sorted(_DIVERGENCES)}, got {proposal_update_metric!r}")
        if proposal_update_interval < 1:
            raise ValueError(f"proposal_update_interval must be ≥ 1, got {proposal_update_interval}")
        exact = self.hparams.temperature == 1.0 and self.hparams.top_k == 0 and self.hparams.top_p == 1.0
        if not exact and not allow_warped_sampling:
            raise ValueError(
                "DPG's importance weights assume exact ancestral sampling (temperature 1, top_k 0, top_p 1). "
                "Set allow_warped_sampling: true to sample from the warped policy anyway (q is then the warped "
                "distribution and its log-probs are used as log q)."
            )
        if divergence not in F_DIVERGENCES:
            raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
        self.target = smooth_for_divergence(self.target, divergence, pointwise_epsilon)
        if moment_matching_refit_every is not None and moment_matching_refit_every < 1:
            raise ValueError(f"moment_matching_refit_every must be ≥ 1 or null, got {moment_matching_refit_every}")
        self.pending_fit_metrics: dict[str, float] = {}
        self.last_advantages: Tensor | None = None
        self.log_z_sum = -math.inf  # log Σ_i P_i/q_i over every sample drawn so far
        self.z_count = 0
        self.window: dict[str, list[float]] = {"policy": [], "proposal": []}
        self.proposal_updates = 0

    def _hparams_ignore(self) -> list[str]:
        return ["target"]

    # ------------------------------------------------------------------ state
    def on_models_ready(self) -> None:
        if self.hparams.off_policy:
            self.proposal = self.frozen_copy(self.model)

    @property
    def log_z(self) -> float:
        return self.log_z_sum - math.log(self.z_count) if self.z_count else -math.inf

    def update_z(self, log_w: Tensor) -> None:
        """Running mean of P/q over all samples ever drawn (every one is unbiased for Z)."""
        self.log_z_sum = float(torch.logaddexp(torch.tensor(self.log_z_sum, dtype=torch.float64),
                                               torch.logsumexp(log_w.double().cpu(), 0)))
        self.z_count += log_w.numel()

    def extra_state(self) -> dict:
        return {"log_z_sum": self.log_z_sum, "z_count": self.z_count, "window": self.window,
                "proposal_updates": self.proposal_updates,
                "lambdas": [d.coefficients.tolist() if d.fitted else None
                            for d in mm.distributional_potentials(self.target)]}

    def load_extra_state(self, state: dict) -> None:
        self.log_z_sum = state.get("log_z_sum", -math.inf)
        self.z_count = state.get("z_count", 0)
        self.window = state.get("window", {"policy": [], "proposal": []})
        self.proposal_updates = state.get("proposal_updates", 0)
        for d, lam in zip(mm.distributional_potentials(self.target), state.get("lambdas", [])):
            if lam is not None:
                d.set_lambdas(lam)

    # -------------------------------------------------------- moment matching
    def on_fit_start(self) -> None:
        super().on_fit_start()
        dists = mm.distributional_potentials(self.target)
        if dists and not all(d.fitted for d in dists):  # (a resumed run has λ from its checkpoint)
            self.fit_moments(self.base_model)

    def fit_moments(self, model) -> None:
        """Fit λ on fresh samples of ``model`` (the base at fit start; the policy when refitting)."""
        hp = self.hparams
        fit = mm.fit_module_target(self, model, n_samples=hp.moment_matching_samples,
                                   batch_size=hp.moment_matching_batch, strict=hp.moment_matching_strict,
                                   tolerance=hp.moment_matching_tolerance,
                                   n_contexts=hp.get("moment_matching_contexts", 32))
        if fit is not None:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(fit.report())
            self.pending_fit_metrics = fit.metrics()

    def maybe_refit_moments(self) -> None:
        every = self.hparams.moment_matching_refit_every
        if not every or self.global_step == 0 or self.global_step % every or not mm.distributional_potentials(self.target):
            return
        self.fit_moments(self.model)
        # P changed with λ: Z, and the divergence window of the proposal update, start again
        self.log_z_sum, self.z_count = -math.inf, 0
        self.window = {"policy": [], "proposal": []}

    # -------------------------------------------------------------------- step
    def sampling_model(self):
        return self.proposal if self.hparams.off_policy else self.model

    def training_step(self, batch: list[str], batch_idx: int) -> None:
        self.maybe_refit_moments()
        samples = self.sample(batch, model=self.sampling_model())
        log_a = self.base_log_prob(samples)
        with self.timer("scoring"):
            log_P = self.target.log_score(log_a, samples.texts, samples.contexts).to(self.device)
        log_q = samples.log_q.double()
        self.update_z(self.gather(log_P - log_q))
        log_z = self.log_z
        if log_z == -math.inf:
            log_pi = self.log_prob_no_grad(self.model, samples)
            self.skip_step_without_signal("DPG: no sample has satisfied the target yet (Ẑ = 0)")
            stepped = False
        elif self.hparams.divergence != "kl":
            loss_fn = self.fdpg_loss_fn(samples, log_P, log_q, log_z)
            log_pi, loss = self.accumulate(samples, loss_fn)
            stepped = self.optimizer_step_guarded()
            self.log("train/loss", float(loss), batch_size=1)
        else:
            def loss_fn(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
                lq = log_q[rows] if self.hparams.off_policy or self.grad_dtype_set else log_pi.detach()
                return dpg_loss(log_pi, log_P[rows], lq, log_z, self.hparams.baseline, self.hparams.normalize)

            log_pi, loss = self.accumulate(samples, loss_fn)
            coef = torch.exp(log_P - log_q - log_z)  # the DPG advantage P/(Ẑq) − π/q (GDC++)
            base = torch.exp(log_pi.double() - log_q) if self.hparams.off_policy else torch.ones_like(coef)
            self.last_advantages = coef - base if self.hparams.baseline else coef
            self.last_satisfying = torch.isfinite(log_P)
            stepped = self.optimizer_step_guarded()
            self.log("train/loss", float(loss), batch_size=1)
        self.last_samples = samples
        metrics = self.dpg_metrics(samples, log_P, log_q, log_pi.double(), log_a)
        metrics["step_skipped"] = float(not stepped)
        metrics.update(self.pending_fit_metrics)
        self.pending_fit_metrics = {}
        if self.hparams.off_policy:
            metrics["proposal_updated"] = float(self.maybe_update_proposal(metrics))
        self.log_metrics(metrics, "train", prog_bar=False)
        if "kl_target_policy" in metrics:
            self.log("kl", metrics["kl_target_policy"], prog_bar=True, batch_size=1, logger=False)
        self.log("z", metrics["z"], prog_bar=True, batch_size=1, logger=False)

    def fdpg_loss_fn(self, samples: Samples, log_P: Tensor, log_q: Tensor, log_z: float):
        """The f-DPG minibatch loss with a leave-one-out baseline of the pseudo-rewards."""
        off = self.hparams.off_policy
        log_pi_all = (self.log_prob_no_grad(self.model, samples) if off or not self.policy.exact
                      else samples.log_q).double()
        div = self.hparams.divergence
        reward = fdpg_pseudo_reward(log_pi_all, log_P, log_z, div)
        ratio = torch.exp(log_pi_all - log_q) if off else torch.ones_like(reward)
        base = leave_one_out_baseline(reward, ratio) if self.hparams.baseline else torch.zeros_like(reward)
        self.last_advantages = ratio * (reward - base)
        self.last_satisfying = torch.isfinite(log_P)
        self.last_pseudo_reward = reward

        def loss_fn(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
            lq = log_q[rows] if off or self.grad_dtype_set else log_pi.detach()
            return fdpg_loss(log_pi, log_P[rows], lq, log_z, div, base[rows])

        return loss_fn

    def dpg_metrics(self, samples: Samples, log_P: Tensor, log_q: Tensor, log_pi: Tensor, log_a: Tensor) -> dict:
        """The divergence, Z, ESS and moment estimates of design.md, reduced over ranks."""
        log_P, log_q, log_pi, log_a = (self.gather(t.double()) for t in (log_P, log_q, log_pi, log_a))
        off = self.hparams.off_policy
        log_z = torch.tensor(self.log_z, dtype=torch.float64)
        finite_z = bool(torch.isfinite(log_z))
        m: dict[str, float | Tensor] = {
            "z": math.exp(self.log_z) if finite_z else 0.0,
            "z_batch": torch.exp(estimators.log_z_hat(log_P, log_q)),
            "ess": estimators.effective_sample_size(log_P - log_q),
            "n_satisfying": torch.isfinite(log_P).double().sum(),
            "importance_ratio_policy_proposal": torch.exp(log_pi - log_q).mean(),
        }
        if finite_z:
            m["kl_target_policy"] = estimators.kl_target_policy(log_P, log_q, log_pi, log_z)
            m["tv_target_policy"] = estimators.tv_target_policy(log_P, log_q, log_pi, log_z)
            m["js_target_policy"] = estimators.js_target_policy(log_P, log_q, log_pi, log_z)
            if off:
                m["kl_target_proposal"] = estimators.kl_target_policy(log_P, log_q, log_q, log_z)
                m["tv_target_proposal"] = estimators.tv_target_policy(log_P, log_q, log_q, log_z)
                m["js_target_proposal"] = estimators.js_target_policy(log_P, log_q, log_q, log_z)
        # else: nothing has satisfied the target yet (Ẑ = 0): the divergences are undefined and
        # not logged; z = 0 and n_satisfying = 0 say why
        m.update(self.common_metrics(samples, log_pi, log_a, log_q if off else None))
        if off:
            m["kl_proposal_base"] = estimators.kl_policy_base(log_q, log_a)
        texts, contexts = samples.texts, samples.contexts
        for s in self.target.scorers():
            values = self.gather(s(texts, contexts).to(self.device))
            m[f"scorer/{s.name}"] = estimators.policy_moments(values, log_pi, log_q if off else None)
            if off:
                m[f"proposal/scorer/{s.name}"] = values.mean()
        return m

    def maybe_update_proposal(self, metrics: dict) -> bool:
        """Every ``proposal_update_interval`` steps, q ← π if D(p‖π) < D(p‖q) over the window."""
        name = self.hparams.proposal_update_metric
        if f"{name}_target_proposal" in metrics:
            self.window["policy"].append(float(metrics[f"{name}_target_policy"]))
            self.window["proposal"].append(float(metrics[f"{name}_target_proposal"]))
        if (self.global_step % self.hparams.proposal_update_interval) != 0 or not self.window["policy"]:
            return False
        better = sum(self.window["policy"]) < sum(self.window["proposal"])
        self.window = {"policy": [], "proposal": []}
        if better:
            self.refresh_snapshot(self.proposal)  # a full copy, or the adapters only (LoRA)
            self.proposal_updates += 1
        return better

    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        """On fresh policy samples (q = π): KL(p‖π), TV and E_π[φ] with the running Ẑ."""
        log_P = self.target.log_score(log_a, samples.texts, samples.contexts).to(self.device)
        m = {f"scorer/{s.name}": s(samples.texts, samples.contexts).mean() for s in self.target.scorers()}
        if math.isfinite(self.log_z):
            lp = log_pi.double()
            m["kl_target_policy"] = estimators.kl_target_policy(log_P, lp, lp, self.log_z)
            m["tv_target_policy"] = estimators.tv_target_policy(log_P, lp, lp, self.log_z)
        return m
