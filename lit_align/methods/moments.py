"""Fitting the λ of distributional constraints for a method that samples (DPG, CDPG, Sampler).

The target ``a(x)·exp(λ·φ(x))`` of a distributional constraint ``E_p[φ] = μ̄`` is the
information projection of ``a`` onto the constraint set; λ is fitted by moment matching on
samples before training (Khalifa et al., "A distributional approach to controlled text
generation", ICLR 2021; Korbak's thesis, arXiv:2404.12150, ch. 3), see :mod:`lit_align.moment_matching`.
"""

from __future__ import annotations

from lit_align import moment_matching as mm


class FitsMoments:
    """Mixed into an :class:`~lit_align.methods.on_policy.OnPolicyModule` with a ``target``; reads
    its ``moment_matching_*`` hparams (samples, strict; optional batch, tolerance, contexts, refit_every)."""

    pending_fit_metrics: dict

    def fit_moments(self, model) -> None:
        """Fit λ on fresh samples of ``model`` (None: the base) over the data module's contexts."""
        hp = self.hparams
        trainer = self.attached_trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        extra = {"tolerance": hp.moment_matching_tolerance} if "moment_matching_tolerance" in hp else {}
        fit = mm.fit_target_by_sampling(
            self.target, self.engine, model, mm.default_contexts(datamodule, hp.get("moment_matching_contexts", 32)),
            n_samples=hp.moment_matching_samples, batch_size=hp.get("moment_matching_batch", 512),
            strict=hp.moment_matching_strict, gather=self.gather if trainer is not None else None,
            rank=self.global_rank, sample=self.sample, **extra)
        if fit is not None:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(fit.report())
            self.pending_fit_metrics = fit.metrics()

    def fit_moments_if_needed(self) -> None:
        """Fit λ on the base unless every Distributional potential has one (e.g. from a checkpoint)."""
        dists = mm.distributional_potentials(self.target)
        if dists and not all(d.fitted for d in dists):
            self.fit_moments(None)

    def refit_moments_if_due(self) -> bool:
        """Every ``moment_matching_refit_every`` steps, re-fit λ on the policy's samples."""
        every = self.hparams.get("moment_matching_refit_every")
        if not every or self.global_step == 0 or self.global_step % every or not mm.distributional_potentials(self.target):
            return False
        self.fit_moments(self.model)
        return True

    def lambdas_state(self) -> list:
        return [d.coefficients.tolist() if d.fitted else None for d in mm.distributional_potentials(self.target)]

    def load_lambdas(self, lambdas: list) -> None:
        for d, lam in zip(mm.distributional_potentials(self.target), lambdas):
            if lam is not None:
                d.set_lambdas(lam)

    def take_fit_metrics(self) -> dict:
        metrics, self.pending_fit_metrics = getattr(self, "pending_fit_metrics", {}), {}
        return metrics
