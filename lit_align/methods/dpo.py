"""DPO and its IPO / hinge / label-smoothed variants.

Offline: trains on (prompt, chosen, rejected) pairs with ``h = Δ_π − Δ_π0``, where the
reference log-probs ``log π0`` of every pair are computed once by the method and cached
(keyed by the pairs' token ids and the reference model). With ``track_kl: false`` and no
judge, π0 is then released: training holds one model.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

from lit_align.data.preference import Pair, PreferenceBatch, PreferenceDataModule
from lit_align.data.preference_pairs import cached_reference_log_probs, set_reference_log_probs
from lit_align.models.policy import model_device
from lit_align.methods.preference_base import PreferenceModule, soft_label_metrics
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

    # ------------------------------------------------------------- reference π0
    def reference_id(self) -> str:
        """What identifies π0 and the numerics of its pass (the cache key of its log-probs on the pairs)."""
        hp = self.hparams
        key = f"model={hp.model}|tokenizer={hp.tokenizer}|seed={hp.model_seed}"
        resolved = {"frozen_dtype": self.engine_settings.frozen_copy_dtype, "grad_dtype": self.engine_settings.grad_dtype}
        for option, value in resolved.items():  # both change the cached numbers
            if value not in (None, "float32"):
                key += f"|{option}={value}"
        return key

    def needs_reference_model(self) -> bool:
        """Whether π0 must stay in memory after the reference pass: for the KL diagnostic, or for
        a callback that says it reads π0 (``needs_reference``, e.g. WinRate)."""
        return bool(self.hparams.track_kl) or self.callbacks_read_base()

    @property
    def needs_base(self) -> bool:
        """No frozen copy when π0 serves only the reference pass: the policy itself, still untrained
        then, is π0 (~0.5 GB less peak memory on SmolLM2), released after the pass."""
        return self.needs_reference_model() or bool(self.engine_settings.frozen_copy_dtype)

    def on_models_ready(self) -> None:
        if self.engine.base is None:
            self.engine.base = self.engine.model

    def prepare_pairs(self, datamodule: PreferenceDataModule) -> None:
        """Tokenise the pairs, compute their reference log-probs under π0, then release π0 when
        nothing else needs it, so training holds one model."""
        super().prepare_pairs(datamodule)
        if datamodule.train_pairs and math.isnan(datamodule.train_pairs[0].ref_chosen):
            for pairs in (datamodule.train_pairs, datamodule.val_pairs):
                if pairs:
                    set_reference_log_probs(pairs, *self.reference_log_probs(pairs, datamodule.reference_cache_dir()))
        if not self.needs_reference_model():
            self.engine.base = None

    def reference_log_probs(self, pairs: list[Pair], cache_dir: Path | None) -> tuple[Tensor, Tensor]:
        """``(log π0(chosen), log π0(rejected))`` of ``pairs`` (read from ``cache_dir`` when cached),
        in the context of the gradient passes (``grad_dtype`` autocast, attention kernel): log π0 of
        a pair then has the numerics of log π in the loss, and h = Δπ − Δπ0 starts at 0."""
        model = self.engine.base
        device = model_device(model)
        if self.device != device:  # models built on the Trainer's device (its tensor_init_context)
            self.to(device)
        with self.engine.grad_autocast(model):
            chosen, rejected, _ = cached_reference_log_probs(model, self.policy, pairs, self.reference_id(), cache_dir,
                                                             self.hparams.minibatch_size, device)
        return chosen, rejected

    # -------------------------------------------------------------------- loss
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
                  "rewards/rejected": r_r.mean(), "rewards/margin": (r_c - r_r).mean(),
                  **soft_label_metrics(batch, r_c - r_r)})  # ranked by the implicit reward
        return m
