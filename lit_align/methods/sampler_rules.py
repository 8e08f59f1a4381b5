"""Which proposals the :class:`~lit_align.methods.Sampler` keeps: QRS, rejection, importance
resampling or everything (the rules themselves are the pure functions of :mod:`lit_align.samplers`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from lit_align import samplers
from lit_align.models.rollout import Rollout


@dataclass
class Selection:
    """Per proposal: log acceptance probability, accepted or not, copies kept; and the round's metrics."""

    log_acceptance: Tensor
    accepted: Tensor
    copies: Tensor
    metrics: dict = field(default_factory=dict)


def select(method: str, log_P: Tensor, log_q: Tensor, context_index: Tensor, generator: torch.Generator,
           log_beta: float | None = None, acceptance_rate: float = 0.1, log_bound: float = 0.0,
           n_resample: int = 1) -> Selection:
    """Apply ``method`` (``qrs``, ``rejection``, ``importance``, ``proposal``) to one round of proposals."""
    n = log_P.numel()
    out = Selection(torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.long))
    finite = torch.isfinite(log_P - log_q)
    if method in ("qrs", "rejection", "importance") and not finite.any():
        out.accepted, out.copies = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
        out.metrics["qrs/acceptance_rate"] = 0.0
    elif method == "qrs":
        if log_beta is None:
            log_beta = samplers.qrs_log_beta_for_acceptance(log_P, log_q, acceptance_rate)
        out.log_acceptance = samplers.qrs_log_acceptance(log_P, log_q, log_beta)
        out.accepted = samplers.qrs_accept(log_P, log_q, log_beta, generator)
        out.metrics.update(samplers.qrs_estimates(log_P, log_q, log_beta).metrics())
        out.metrics["qrs/log_beta"] = log_beta
    elif method == "rejection":
        out.log_acceptance = torch.clamp(log_P - log_q - log_bound, max=0.0)
        out.accepted = samplers.rejection_accept(log_P, log_q, log_bound, generator)
    elif method == "importance":
        out.copies = torch.zeros(n, dtype=torch.long)
        for c in context_index.unique().tolist():
            rows = (context_index.cpu() == c).nonzero().squeeze(-1)
            if torch.isfinite(log_P[rows]).any():
                idx = samplers.importance_resample(log_P[rows], log_q[rows], n_resample, generator)
                out.copies.index_add_(0, rows[idx], torch.ones_like(idx))
        out.accepted = out.copies > 0
        out.log_acceptance = torch.log_softmax(log_P - log_q, 0)
    out.metrics["accepted_fraction"] = float(out.accepted.double().mean())
    out.metrics["n_accepted"] = float(out.accepted.sum())
    return out


def proposal_rows(rollout: Rollout, sel: Selection, log_P: Tensor, log_q: Tensor, log_a: Tensor) -> list[dict]:
    """One JSON-able row per proposal: context, text, kept or not, its log-quantities and scores."""
    scores = {s.name: v.tolist() for s, v in rollout.scores.items()}
    s = rollout.samples
    return [{"context": s.contexts[i], "text": s.texts[i], "accepted": bool(sel.accepted[i]),
             "copies": int(sel.copies[i]), "log_P": _num(log_P[i]), "log_q": _num(log_q[i]),
             "log_a": _num(log_a[i]), "log_acceptance": _num(sel.log_acceptance[i]),
             "scores": {k: v[i] for k, v in scores.items()}} for i in range(len(s))]


def append_jsonl(output: str, rows: list[dict], rank: int | None = None) -> int:
    """Append ``rows`` to ``output`` (``.rank{r}`` suffix when ``rank`` is given); returns their number."""
    path = Path(output)
    if rank is not None:
        path = path.with_name(f"{path.name}.rank{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def _num(x: Tensor) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None
