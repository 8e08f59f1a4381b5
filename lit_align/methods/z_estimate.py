"""The partition-function estimates of DPG and CDPG, and the state they keep between steps.

DPG estimates one Z of the target EBM with a running mean of ``P/q`` over every sample ever
drawn (each is unbiased for Z; Khalifa, Elsahar & Dymetman, "A distributional approach to
controlled text generation", ICLR 2021, Algorithm 1). CDPG estimates one ``Z_c`` per context
(Korbak et al., "Controlling conditional language models without catastrophic forgetting",
ICML 2022; Korbak's thesis, arXiv:2404.12150, ch. 4): from this step's samples of c (``batch``) or as a running mean per context
text (``running``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.methods.checkpoint_state import MethodState
from lit_align.models.samples import Samples


def _empty_window() -> dict[str, list[float]]:
    return {"policy": [], "proposal": []}


@dataclass
class DPGState(MethodState):
    """Running Ẑ (log Σ P/q over all samples, their count), the divergence window of the
    proposal update and the number of proposal updates."""

    log_z_sum: float = -math.inf
    z_count: int = 0
    window: dict = field(default_factory=_empty_window)
    proposal_updates: int = 0

    @property
    def log_z(self) -> float:
        return self.log_z_sum - math.log(self.z_count) if self.z_count else -math.inf

    def update_z(self, log_w: Tensor) -> None:
        """Add samples' ``log P/q`` to the running mean of P/q."""
        self.log_z_sum = float(torch.logaddexp(torch.tensor(self.log_z_sum, dtype=torch.float64),
                                               torch.logsumexp(log_w.double().cpu(), 0)))
        self.z_count += log_w.numel()

    def window_prefers_policy(self, metrics: dict, name: str, check: bool) -> bool:
        """Add this step's D(p‖π) and D(p‖q) (``name``: kl, tv, js) to the window; on a ``check``
        step, whether π beat q over the window (the window then starts again)."""
        if f"{name}_target_proposal" in metrics:
            self.window["policy"].append(float(metrics[f"{name}_target_policy"]))
            self.window["proposal"].append(float(metrics[f"{name}_target_proposal"]))
        if not check or not self.window["policy"]:
            return False
        better = sum(self.window["policy"]) < sum(self.window["proposal"])
        self.window = _empty_window()
        return better

    def restart(self) -> None:
        """P changed (λ re-fitted): Ẑ and the proposal-update window start again."""
        self.log_z_sum, self.z_count = -math.inf, 0
        self.window = _empty_window()


@dataclass
class CDPGState(DPGState):
    """DPG's state plus, for ``z_estimate: running``, context text → (log Σ P/q, count)."""

    context_z: dict = field(default_factory=dict)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.context_z = dict(state.get("context_z", {}))

    def context_log_z(self, log_w: Tensor, samples: Samples, running: bool) -> Tensor:
        """``log Ẑ_c`` (C,) for the contexts of this batch, in ``context_index`` order."""
        idx = samples.context_index
        n_ctx = int(idx.max()) + 1
        batch = estimators.log_z_per_context(log_w, torch.zeros_like(log_w), idx, n_ctx)
        if not running:
            return batch
        counts = torch.bincount(idx.cpu(), minlength=n_ctx)
        first = {int(c): i for i, c in reversed(list(enumerate(idx.tolist())))}
        out = torch.empty_like(batch)
        for c in range(n_ctx):
            key = str(samples.contexts[first[c]])
            s, n = self.context_z.get(key, (-math.inf, 0))
            s_new = float(torch.logaddexp(torch.tensor(s, dtype=torch.float64),
                                          batch[c].cpu() + math.log(int(counts[c]))))
            n_new = n + int(counts[c])
            self.context_z[key] = (s_new, n_new)
            out[c] = s_new - math.log(n_new)
        return out
