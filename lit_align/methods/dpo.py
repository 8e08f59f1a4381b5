"""DPO and its IPO / hinge / label-smoothed variants.

Offline: trains on (prompt, chosen, rejected) pairs with ``h = Δ_π − Δ_π0``, where the
reference log-probs ``log π0`` of every pair are computed once by the method and cached
(keyed by the pairs' token ids and the reference model). With ``track_kl: false`` and no
judge, π0 is then released: training holds one model.
"""

from __future__ import annotations

from torch import Tensor

from lit_align.data.preference import PreferenceBatch
from lit_align.methods.preference_base import PreferenceModule
from lit_align.preference import DPO_LOSS_TYPES, dpo_loss, implicit_rewards


class DPO(PreferenceModule):
    """Direct preference optimisation (Rafailov et al. 2023, arXiv:2305.18290, eq. 7) and its
    IPO (Azar et al. 2024, arXiv:2310.12036), hinge (SLiC, Zhao et al. 2023, arXiv:2305.10425)
    and label-smoothed (conservative DPO) variants.

    Args:
        kl_coef: β of DPO and hinge (default 0.1). Population optimum with BT labels from r:
            π0·e^{r/β}/Z.
        tau: τ of IPO (``loss_type: ipo``; default 0.1). Optimum π0·e^{P(y≻μ)/τ}/Z.
        loss_type: ``sigmoid`` (DPO), ``ipo`` or ``hinge``.
        label_smoothing: ε of conservative DPO (sigmoid only).
        Other arguments: :class:`PreferenceModule`.
    """

    uses_reference_log_probs = True

    def __init__(self, kl_coef: float | None = None, tau: float | None = None, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0, **kwargs) -> None:
        if loss_type not in DPO_LOSS_TYPES:
            raise ValueError(f"DPO: loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
        if loss_type == "ipo" and kl_coef is not None:
            raise ValueError("DPO: loss_type 'ipo' takes tau (IPO's τ), not kl_coef")
        if loss_type != "ipo" and tau is not None:
            raise ValueError(f"DPO: tau is IPO's τ (loss_type 'ipo'); loss_type {loss_type!r} takes kl_coef")
        # the defaults are resolved here, so that the saved hyperparameters hold the value used
        if loss_type == "ipo":
            tau = 0.1 if tau is None else tau
        else:
            kl_coef = 0.1 if kl_coef is None else kl_coef
        name, value = ("tau", tau) if loss_type == "ipo" else ("kl_coef", kl_coef)
        if value <= 0:
            raise ValueError(f"DPO: {name} must be > 0, got {value}")
        if not 0 <= label_smoothing < 0.5 or (label_smoothing and loss_type != "sigmoid"):
            raise ValueError("DPO: label_smoothing must be in [0, 0.5) and needs loss_type 'sigmoid'")
        super().__init__(**kwargs)

    @property
    def coef(self) -> float:
        """β (``kl_coef``), or τ (``tau``) for IPO."""
        return self.hparams.tau if self.hparams.loss_type == "ipo" else self.hparams.kl_coef

    def _refs(self, batch: PreferenceBatch) -> tuple[Tensor, Tensor]:
        if batch.ref_chosen is None or batch.ref_rejected is None:
            raise ValueError("DPO needs the reference log-probs of the pairs; it computes them when it connects its "
                             "PreferenceDataModule (prepare_pairs; do not build batches by hand without them)")
        return batch.ref_chosen, batch.ref_rejected

    def pair_loss(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> Tensor:
        rc, rr = self._refs(batch)
        hp = self.hparams
        return dpo_loss(log_chosen, log_rejected, rc.to(log_chosen.dtype), rr.to(log_chosen.dtype),
                        self.coef, hp.loss_type, hp.label_smoothing)

    def pair_metrics(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> dict:
        rc, rr = self._refs(batch)
        r_c, r_r = implicit_rewards(log_chosen, rc, self.coef), implicit_rewards(log_rejected, rr, self.coef)
        m = super().pair_metrics(batch, log_chosen, log_rejected)
        m.update({"accuracy": (r_c > r_r).double().mean(), "rewards/chosen": r_c.mean(),
                  "rewards/rejected": r_r.mean(), "rewards/margin": (r_c - r_r).mean()})
        return m
