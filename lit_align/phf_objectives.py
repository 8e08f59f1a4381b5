"""The six objectives of pretraining with human feedback (Korbak et al. 2023, arXiv:2302.08582)
as one setting: which objective, its hyperparameters, checked once, and the summed loss of
a minibatch of scored tokens (:mod:`lit_align.phf_losses` holds the losses themselves).

MLE, filtering and conditional training are MLE on differently built streams (the data
module filters documents or adds control tokens); unlikelihood, RWR and AWR weight the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from lit_align import phf_losses

OBJECTIVES = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")


@dataclass(frozen=True)
class PHFObjective:
    """One objective and its settings (the arguments of :class:`lit_align.methods.PHF`)."""

    objective: str = "mle"
    threshold: float | None = None
    alpha: float = 1.0
    temperature: float = 1.0
    ul_mode: str = "hard"
    rwr_baseline: float = 0.0
    max_weight: float = 1000.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective in ("filtering", "conditional", "unlikelihood") and self.threshold is None:
            raise ValueError(f"objective {self.objective!r} needs a `threshold` (a misalignment score; the paper's "
                             "are in docs/phf.md)")
        if self.objective == "awr" and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"AWR's alpha must be in [0, 1], got {self.alpha}")
        if self.objective in ("rwr", "awr") and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.ul_mode not in ("hard", "soft", "released"):
            raise ValueError(f"ul_mode must be 'hard', 'soft' or 'released', got {self.ul_mode!r}")

    @property
    def needs_hidden(self) -> bool:
        """AWR's value head reads the last hidden state."""
        return self.objective == "awr"

    def terms(self, logp: Tensor, scores: Tensor, mask: Tensor, hidden: Tensor | None = None,
              value_head: Tensor | None = None) -> dict[str, Tensor]:
        """Summed loss (and diagnostics) of one minibatch; the caller divides by the batch's tokens.
        ``logp``, ``scores``, ``mask``: (B, L−1) per predicted token; R = −score."""
        out = {"original_loss": phf_losses.mle_loss(logp.detach(), mask, "sum")}
        beta, cap = self.temperature, self.max_weight
        if self.objective in ("mle", "filtering", "conditional"):
            out["loss"] = phf_losses.mle_loss(logp, mask, "sum")
        elif self.objective == "unlikelihood":
            out["loss"] = phf_losses.unlikelihood_loss(logp, scores, mask, float(self.threshold), self.alpha,
                                                       self.ul_mode, "sum")
        elif self.objective == "rwr":
            out["loss"] = phf_losses.rwr_loss(logp, scores, mask, beta, self.rwr_baseline, cap, "sum")
            out["weight"] = (phf_losses.awr_weights(-scores, self.rwr_baseline, beta, cap) * mask).sum()
        else:
            values = phf_losses.value_from_hidden(hidden.float(), value_head)
            out["loss"] = phf_losses.awr_loss(logp, scores, values, mask, self.alpha, beta, cap, "sum")
            out["value_loss"] = (((values - (-scores)) ** 2) * mask).sum().detach()
            out["value"] = (values * mask).sum().detach()
            out["weight"] = (phf_losses.awr_weights(-scores, values, beta, cap) * mask).sum()
        return out
