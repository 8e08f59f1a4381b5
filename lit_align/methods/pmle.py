"""Preference maximum likelihood (Yun et al. 2025, arXiv:2506.01523, eqs. 4–5).

The LM is its own preference model: ``L = −ln σ(γ·Δ_π(x, a⁺, a⁻)) + β·KL(π‖π0)``, with no
reference inside the sigmoid and the KL(π‖π0) term estimated on fresh samples from π
(``n_samples`` per prompt for ``kl_prompts`` prompts of each batch; score-function gradient).
With β = 0 and labels from π* at the same γ, the population optimum is π* (checked exactly on the toy space: tests/test_preference_toy.py).
"""

from __future__ import annotations

from torch import Tensor

from lit_align.data.preference import PreferenceBatch
from lit_align.methods.preference_base import PreferenceModule
from lit_align.preference import pmle_loss


class PMLE(PreferenceModule):
    """Preference MLE.

    Args:
        gamma: γ, the temperature of the LM-as-preference-model σ(γ·Δ_π).
        kl_coef: β, weight of KL(π‖π0) (0: no regulariser; π0 is then only a diagnostic).
        Other arguments: :class:`PreferenceModule`.
    """

    def __init__(self, gamma: float = 0.5, kl_coef: float = 0.0, **kwargs) -> None:
        if gamma <= 0 or kl_coef < 0:
            raise ValueError(f"PMLE: gamma must be > 0 and kl_coef ≥ 0, got {gamma} and {kl_coef}")
        super().__init__(**kwargs)

    def pair_loss(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> Tensor:
        return pmle_loss(log_chosen, log_rejected, self.hparams.gamma)

    def sampled_kl_coef(self) -> float:
        return float(self.hparams.kl_coef)
