"""DPG's arguments, checked before any model is loaded (docs/bad_inputs.md)."""

from __future__ import annotations

from typing import Sequence

from lit_align.f_divergences import F_DIVERGENCES
from lit_align.methods.rollout_metrics import DIVERGENCES
from lit_align.targets import EBM, Potential


def check_dpg_arguments(target: Sequence[Potential] | EBM, proposal_update_metric: str, proposal_update_interval: int,
                        divergence: str, exact_or_allowed: bool, moment_matching_refit_every: int | None) -> EBM:
    """Refuse bad DPG arguments, naming each; returns the target as an :class:`EBM`."""
    target = target if isinstance(target, EBM) else EBM(list(target))
    if not target.potentials:
        raise ValueError("DPG: `target` needs at least one potential, e.g. Pointwise(scorer)")
    if proposal_update_metric not in DIVERGENCES:
        raise ValueError(f"proposal_update_metric must be one of {sorted(DIVERGENCES)}, got {proposal_update_metric!r}")
    if proposal_update_interval < 1:
        raise ValueError(f"proposal_update_interval must be ≥ 1, got {proposal_update_interval}")
    if not exact_or_allowed:
        raise ValueError(
            "DPG's importance weights assume exact ancestral sampling (temperature 1, top_k 0, top_p 1). "
            "Set allow_warped_sampling: true to sample from the warped policy anyway (q is then the warped "
            "distribution and its log-probs are used as log q).")
    if divergence not in F_DIVERGENCES:
        raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
    if moment_matching_refit_every is not None and moment_matching_refit_every < 1:
        raise ValueError(f"moment_matching_refit_every must be ≥ 1 or null, got {moment_matching_refit_every}")
    return target
