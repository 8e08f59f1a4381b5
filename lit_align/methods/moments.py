"""Fitting the λ of distributional constraints for a method that samples (DPG, CDPG, Sampler).

The target ``a(x)·exp(λ·φ(x))`` of a distributional constraint ``E_p[φ] = μ̄`` is the
information projection of ``a`` onto the constraint set; λ is fitted by moment matching on
samples before training (Khalifa et al., "A distributional approach to controlled text
generation", ICLR 2021; Korbak's thesis, arXiv:2404.12150, ch. 3), see :mod:`lit_align.moment_matching`.
"""

from __future__ import annotations

from lit_align import moment_matching as mm


class FitsMoments:
    """Mixed into an :class:`~lit_align.methods.on_policy.OnPolicyModule` with a ``target``."""

    pending_fit_metrics: dict

    def fit_target_moments(self, model, n_samples: int, strict: bool, **kwargs) -> None:
        """Fit λ on fresh samples of ``model`` (None: the base) over the data module's contexts."""
        trainer = self.attached_trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        n_contexts = kwargs.pop("n_contexts", 32)
        fit = mm.fit_target_by_sampling(
            self.target, self.engine, model, contexts=mm.default_contexts(datamodule, n_contexts),
            n_samples=n_samples, strict=strict, gather=self.gather if trainer is not None else None,
            rank=self.global_rank, **kwargs)
        if fit is not None:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(fit.report())
            self.pending_fit_metrics = fit.metrics()

    def needs_fit(self) -> bool:
        dists = mm.distributional_potentials(self.target)
        return bool(dists) and not all(d.fitted for d in dists)  # (a resumed run has λ from its checkpoint)

    def lambdas_state(self) -> list:
        return [d.coefficients.tolist() if d.fitted else None for d in mm.distributional_potentials(self.target)]

    def load_lambdas(self, lambdas: list) -> None:
        for d, lam in zip(mm.distributional_potentials(self.target), lambdas):
            if lam is not None:
                d.set_lambdas(lam)

    def take_fit_metrics(self) -> dict:
        metrics, self.pending_fit_metrics = getattr(self, "pending_fit_metrics", {}), {}
        return metrics
