"""Sampler: draw from a target EBM without training (QRS, rejection, importance resampling).

``python -m lit_align predict --config qrs_amazing.yaml`` samples proposals from ``model``
(q), scores them with the target ``P = a · Π potentials`` (``a`` is ``base``, or ``model``
itself), keeps samples by the chosen rule (:mod:`lit_align.samplers`) and appends them to
a JSONL file, one row per proposal: context, text, whether it was accepted, its log P,
log q, log a, acceptance probability and scorer values. The acceptance rate, Ẑ and the
QRS fidelity estimates (KL and TV between p and p_β) are logged.

``fit`` runs the same sampling rounds on the training contexts (no parameter is updated),
so that a sampler config can also be smoke-tested like any other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from lit_align import moment_matching as mm
from lit_align import samplers
from lit_align.methods.base import BasePolicyModule
from lit_align.models.loading import load
from lit_align.models.policy import Samples, disable_dropout
from lit_align.targets import EBM, Potential

_METHODS = ("qrs", "rejection", "importance", "proposal")


class Sampler(BasePolicyModule):
    """Sample from ``P(x) = a(x)·Π potentials(x)`` using proposals from ``model``.

    Args:
        target: the potentials (as for DPG). Distributional potentials are fitted first.
        method: ``qrs`` (accept with min(1, P/(β q))), ``rejection`` (exact, needs P ≤ M q:
            a pointwise target with the base as proposal), ``importance`` (resample
            ``n_resample`` per context ∝ P/q) or ``proposal`` (keep everything; scores only).
        log_beta: QRS's log β; None picks it per batch from ``acceptance_rate``.
        acceptance_rate: the target acceptance rate when ``log_beta`` is None.
        log_bound: log M for rejection sampling (0: pointwise target, q = a).
        n_resample: outputs per context for importance resampling (default n_samples).
        base: the base LM a when the proposal ``model`` is another LM (e.g. a DPG-trained
            policy saved with save_pretrained); None: a = q = model.
        output: JSONL file the rows are appended to (one per rank: ``.rank{r}`` suffix).
        seed: seed of the accept/resample draws.
        moment_matching_samples: base samples for fitting Distributional potentials.
        moment_matching_strict: False warns instead of refusing an unfittable λ (smoke tests).
    """

    def __init__(
        self,
        target: Sequence[Potential] | EBM,
        method: str = "qrs",
        log_beta: float | None = None,
        acceptance_rate: float = 0.1,
        log_bound: float = 0.0,
        n_resample: int | None = None,
        base: str | None = None,
        output: str = "samples.jsonl",
        seed: int = 0,
        moment_matching_samples: int = 10240,
        moment_matching_strict: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target if isinstance(target, EBM) else EBM(list(target))
        if method not in _METHODS:
            raise ValueError(f"Sampler: method must be one of {_METHODS}, got {method!r}")
        if method == "rejection" and base is not None and log_bound == 0.0:
            raise ValueError("Sampler: rejection sampling with a proposal other than the base needs log_bound "
                             "with P ≤ exp(log_bound)·q everywhere; use method: qrs instead")
        if not 0 < acceptance_rate <= 1:
            raise ValueError(f"Sampler: acceptance_rate must be in (0, 1], got {acceptance_rate}")
        if not self.policy_exact_requested():
            raise ValueError("Sampler: the importance weights need exact ancestral sampling (temperature 1, no top-k/top-p)")
        self.generator = torch.Generator().manual_seed(seed)
        self.rows_written = 0
        self.n_proposed = 0
        self.n_accepted = 0

    def policy_exact_requested(self) -> bool:
        hp = self.hparams
        return hp.temperature == 1.0 and hp.top_k == 0 and hp.top_p == 1.0

    def _hparams_ignore(self) -> list[str]:
        return ["target"]

    def on_models_ready(self) -> None:
        if self.hparams.base is not None:
            base, _ = load(self.hparams.base, seed=self.hparams.model_seed)
            disable_dropout(base)
            self.__dict__["_base_model"] = self.frozen_copy(base)

    def _prepare(self) -> None:
        self._move_frozen()
        dists = mm.distributional_potentials(self.target)
        if dists and not all(d.fitted for d in dists):
            fit = mm.fit_module_target(self, None, n_samples=self.hparams.moment_matching_samples,
                                       strict=self.hparams.moment_matching_strict)
            if fit is not None:
                from lightning.pytorch.utilities import rank_zero_info

                rank_zero_info(fit.report())

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._setup_ranks()  # each rank draws its own samples
        self._prepare()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._prepare()

    def extra_state(self) -> dict:
        return {"lambdas": [d.coefficients.tolist() for d in mm.distributional_potentials(self.target)]}

    def load_extra_state(self, state: dict) -> None:
        for d, lam in zip(mm.distributional_potentials(self.target), state.get("lambdas", [])):
            d.set_lambdas(lam)

    # ------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_round(self, contexts: list[str]) -> tuple[list[dict], dict[str, float], Samples, Tensor, Tensor, Tensor]:
        hp = self.hparams
        samples = self.sample(contexts)
        log_q = samples.log_q.double().cpu()
        log_a = log_q if hp.base is None else self.base_log_prob(samples).double().cpu()
        log_P = self.target.log_score(log_a, samples.texts, samples.contexts).cpu()
        scores = {s.name: s(samples.texts, samples.contexts).tolist() for s in self.target.scorers()}
        n = len(samples)
        log_acc = torch.zeros(n, dtype=torch.float64)
        accepted = torch.ones(n, dtype=torch.bool)
        copies = torch.ones(n, dtype=torch.long)
        metrics: dict[str, float] = {}
        finite = torch.isfinite(log_P - log_q)
        if hp.method in ("qrs", "rejection", "importance") and not finite.any():
            accepted = torch.zeros(n, dtype=torch.bool)
            copies = torch.zeros(n, dtype=torch.long)
            metrics["qrs/acceptance_rate"] = 0.0
        elif hp.method == "qrs":
            log_beta = hp.log_beta if hp.log_beta is not None else samplers.qrs_log_beta_for_acceptance(
                log_P, log_q, hp.acceptance_rate)
            log_acc = samplers.qrs_log_acceptance(log_P, log_q, log_beta)
            accepted = samplers.qrs_accept(log_P, log_q, log_beta, self.generator)
            metrics.update(samplers.qrs_estimates(log_P, log_q, log_beta).metrics())
            metrics["qrs/log_beta"] = log_beta
        elif hp.method == "rejection":
            log_acc = torch.clamp(log_P - log_q - hp.log_bound, max=0.0)
            accepted = samplers.rejection_accept(log_P, log_q, hp.log_bound, self.generator)
        elif hp.method == "importance":
            k = hp.n_resample or hp.n_samples
            copies = torch.zeros(n, dtype=torch.long)
            for c in samples.context_index.unique().tolist():
                rows = (samples.context_index.cpu() == c).nonzero().squeeze(-1)
                if torch.isfinite(log_P[rows]).any():
                    idx = samplers.importance_resample(log_P[rows], log_q[rows], k, self.generator)
                    copies.index_add_(0, rows[idx], torch.ones_like(idx))
            accepted = copies > 0
            log_acc = torch.log_softmax(log_P - log_q, 0)
        metrics["accepted_fraction"] = float(accepted.double().mean())
        metrics["n_accepted"] = float(accepted.sum())
        self.n_proposed += n
        self.n_accepted += int(accepted.sum())
        rows = []
        for i in range(n):
            rows.append({
                "context": samples.contexts[i], "text": samples.texts[i], "accepted": bool(accepted[i]),
                "copies": int(copies[i]), "log_P": _num(log_P[i]), "log_q": _num(log_q[i]), "log_a": _num(log_a[i]),
                "log_acceptance": _num(log_acc[i]), "scores": {k: v[i] for k, v in scores.items()},
            })
        return rows, metrics, samples, log_q, log_a, log_P

    def write(self, rows: list[dict]) -> None:
        path = Path(self.hparams.output)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            path = path.with_name(f"{path.name}.rank{self.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        self.rows_written += len(rows)

    def predict_step(self, batch: list[str], batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        rows, metrics, *_ = self.sample_round(list(batch))
        self.write(rows)
        self.last_metrics = metrics
        return [r for r in rows if r["accepted"]]

    def on_predict_end(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        rate = self.n_accepted / max(self.n_proposed, 1)
        rank_zero_info(f"Sampler ({self.hparams.method}): accepted {self.n_accepted} of {self.n_proposed} proposals "
                       f"({rate:.3f}); {self.rows_written} rows in {self.hparams.output}")

    def training_step(self, batch: list[str], batch_idx: int) -> None:
        """A sampling round on the training contexts; no parameter changes (see module docstring)."""
        rows, metrics, samples, log_q, log_a, log_P = self.sample_round(list(batch))
        self.write(rows)
        self.last_samples = samples
        metrics.update(self.common_metrics(samples, log_q, log_a, None))
        for name in {s.name for s in self.target.scorers()}:
            metrics[f"scorer/{name}"] = float(torch.tensor([r["scores"][name] for r in rows], dtype=torch.float64).mean())
        self.skip_step()
        self.log_metrics(metrics, "train")


def _num(x: Tensor) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None
