"""Sampler: draw from a target EBM without training (QRS, rejection, importance resampling).

``python -m lit_align predict --config qrs_amazing.yaml`` samples proposals from ``model`` (q),
scores them with the target ``P = a · Π potentials`` (``a`` is ``base``, or ``model`` itself),
keeps samples by the chosen rule (:mod:`.sampler_rules`; quasi-rejection sampling: Eikema,
Kruszewski, Dance, Aziz & Dymetman, "An approximate sampler for energy-based models with
divergence diagnostics", TMLR 2022) and appends them to a JSONL file, one row per proposal:
context, text, whether it was accepted, log P, log q, log a, acceptance probability and scorer
values. ``fit`` runs the same rounds on the training contexts (no parameter is updated).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from lit_align import moment_matching as mm
from lit_align.methods.moments import FitsMoments
from lit_align.methods.on_policy import OnPolicyModule
from lit_align.methods.sampler_rules import append_jsonl, proposal_rows, select
from lit_align.models.loading import load
from lit_align.models.policy import Samples, disable_dropout
from lit_align.models.rollout import Rollout
from lit_align.targets import EBM, Potential

_METHODS = ("qrs", "rejection", "importance", "proposal")


class Sampler(FitsMoments, OnPolicyModule):
    """Sample from ``P(x) = a(x)·Π potentials(x)`` using proposals from ``model``.

    Args:
        target: the potentials (as for DPG). Distributional potentials are fitted first.
        method: ``qrs`` (accept with min(1, P/(β q))), ``rejection`` (exact, needs P ≤ M q),
            ``importance`` (resample ``n_resample`` per context ∝ P/q) or ``proposal`` (keep all).
        log_beta: QRS's log β; None picks it per batch from ``acceptance_rate``.
        log_bound: log M for rejection sampling (0: pointwise target, q = a).
        n_resample: outputs per context for importance resampling (default n_samples).
        base: the base LM a when the proposal ``model`` is another LM; None: a = q = model.
        output: JSONL file the rows are appended to (one per rank: ``.rank{r}`` suffix).
        seed: seed of the accept/resample draws.
        moment_matching_samples, moment_matching_strict: fitting Distributional potentials.
    """

    def __init__(
        self, target: Sequence[Potential] | EBM, method: str = "qrs", log_beta: float | None = None,
        acceptance_rate: float = 0.1, log_bound: float = 0.0, n_resample: int | None = None, base: str | None = None,
        output: str = "samples.jsonl", seed: int = 0, moment_matching_samples: int = 10240,
        moment_matching_strict: bool = True, **kwargs,
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
        if not self.engine_settings.sampling.exact:
            raise ValueError("Sampler: the importance weights need exact ancestral sampling (temperature 1, no top-k/top-p)")
        self.generator = torch.Generator().manual_seed(seed)
        self.rows_written = self.n_proposed = self.n_accepted = 0

    def _hparams_ignore(self) -> list[str]:
        return ["target"]

    def on_models_ready(self) -> None:
        if self.hparams.base is not None:
            base, _ = load(self.hparams.base, seed=self.hparams.model_seed)
            disable_dropout(base)
            self.engine.base = self.engine.frozen_copy(base)

    def rollout_log_a(self, samples: Samples) -> Tensor:
        return samples.log_q if self.hparams.base is None else self.engine.base_log_prob(samples)

    def _prepare(self) -> None:
        self._move_frozen()
        self.fit_moments_if_needed()

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
        self.load_lambdas(state.get("lambdas", []))

    # ------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_round(self, contexts: list[str]) -> tuple[list[dict], dict[str, float], Rollout]:
        """One round: a rollout of proposals, a row per proposal (kept or not) and the metrics."""
        rollout = self.make_rollout(contexts)
        rows, metrics = self.keep(rollout)
        return rows, metrics, rollout

    def keep(self, rollout: Rollout) -> tuple[list[dict], dict[str, float]]:
        hp = self.hparams
        log_q, log_a, log_P = rollout.log_q.cpu(), rollout.log_a.cpu(), rollout.log_P.cpu()
        sel = select(hp.method, log_P, log_q, rollout.context_index, self.generator, hp.log_beta,
                     hp.acceptance_rate, hp.log_bound, hp.n_resample or hp.n_samples)
        self.n_proposed += len(rollout)
        self.n_accepted += int(sel.accepted.sum())
        rows = proposal_rows(rollout, sel, log_P, log_q, log_a)
        return rows, sel.metrics

    def write(self, rows: list[dict]) -> None:
        trainer = self.attached_trainer
        world = trainer.world_size if trainer is not None else 1
        self.rows_written += append_jsonl(self.hparams.output, rows, self.global_rank if world > 1 else None)

    def predict_step(self, batch: list[str], batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        rows, metrics, _ = self.sample_round(list(batch))
        self.write(rows)
        self.last_metrics = metrics
        return [r for r in rows if r["accepted"]]

    def on_predict_end(self) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        rate = self.n_accepted / max(self.n_proposed, 1)
        rank_zero_info(f"Sampler ({self.hparams.method}): accepted {self.n_accepted} of {self.n_proposed} proposals "
                       f"({rate:.3f}); {self.rows_written} rows in {self.hparams.output}")

    def loss_and_metrics(self, rollout: Rollout, state):
        """A sampling round on the training contexts: rows written, no loss (no parameter changes)."""
        rows, metrics = self.keep(rollout)
        self.write(rows)

        def all_metrics() -> dict:
            metrics.update(self.common_metrics(rollout.samples, rollout.log_q.cpu(), rollout.log_a.cpu(), None))
            metrics.update({f"scorer/{k}": float(v.mean()) for k, v in rollout.scores_by_name().items()})
            return metrics

        return None, all_metrics
