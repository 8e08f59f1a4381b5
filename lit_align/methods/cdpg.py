"""CDPG: conditional distributional policy gradient (Korbak et al., ICML 2022; methods.md §4).

The target is one EBM per context, ``P_c(x) = a(x|c)·b(x, c)``, and the objective is
``E_c KL(p_c‖π(·|c))``. Each step takes a batch of contexts, draws ``n_samples``
completions per context (rows grouped by context, ``Samples.context_index``), estimates
``Z_c`` for every context from that context's own samples, and descends

    ∇ = −E_c E_{x~q(·|c)} [ (P_c(x)/(Ẑ_c q(x|c)) − [π/q]) ∇log π(x|c) ]

with the advantage *detached* (the paper's estimator; ``detach_advantage: false``
mimics the released code, see :func:`lit_align.losses.cdpg_loss`). A single global Z
instead (plain :class:`~lit_align.methods.DPG` on conditional data) rescales each
context's update by ``Z_c/Z`` (§4.1).

Ẑ_c is the Monte Carlo estimate of the current batch (``z_estimate: batch``, as in the
paper, self-normalising the weights of a context), or a per-context running mean over every
sample ever drawn for that context text (``z_estimate: running``, disco's per-context
moving average; it is kept in the checkpoint). Contexts where no sample satisfies the
target have Ẑ_c = 0 and contribute no gradient.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.losses import cdpg_loss
from lit_align.methods.dpg import DPG
from lit_align.models.policy import Samples
from lit_align.targets import EBM, Potential

_Z_ESTIMATES = ("batch", "running")


class CDPG(DPG):
    """Conditional DPG with a per-context partition function Ẑ_c.

    Args:
        target: potentials multiplied with the base LM, e.g. ``[Pointwise(NumeralConsistency())]``;
            scorers receive the contexts, so ``b`` may depend on ``c``.
        baseline: subtract the baseline (1 on-policy, π/q off-policy); the paper's runs use False.
        off_policy: sample from a frozen proposal q updated when the per-context KL improves
            (False, as in every released CDPG config: q = π).
        z_estimate: ``batch`` (Ẑ_c from this step's samples of c, the paper) or ``running``.
        detach_advantage: True for the paper's estimator; False mimics the released code.
        Other arguments: see :class:`~lit_align.methods.DPG` and ``BasePolicyModule``.
    """

    def __init__(
        self,
        target: Sequence[Potential] | EBM,
        baseline: bool = False,
        off_policy: bool = False,
        z_estimate: str = "batch",
        detach_advantage: bool = True,
        **kwargs,
    ) -> None:
        if z_estimate not in _Z_ESTIMATES:
            raise ValueError(f"z_estimate must be one of {_Z_ESTIMATES}, got {z_estimate!r}")
        if off_policy and not detach_advantage:
            raise ValueError("detach_advantage=False (the released code's estimator) is defined on-policy only")
        if kwargs.get("divergence", "kl") != "kl":
            raise ValueError("CDPG descends the forward KL per context; `divergence` must be 'kl'")
        super().__init__(target=target, baseline=baseline, off_policy=off_policy, **kwargs)
        self.context_z: dict[str, tuple[float, int]] = {}  # context → (log Σ P/q, count) for z_estimate=running

    # ------------------------------------------------------------------ Ẑ_c
    def context_log_z(self, log_w: Tensor, samples: Samples) -> Tensor:
        """``log Ẑ_c`` (C,) for the contexts of this batch, in ``context_index`` order."""
        idx = samples.context_index
        n_ctx = int(idx.max()) + 1
        batch = estimators.log_z_per_context(log_w, torch.zeros_like(log_w), idx, n_ctx)
        if self.hparams.z_estimate == "batch":
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

    def extra_state(self) -> dict:
        state = super().extra_state()
        state["context_z"] = dict(self.context_z)
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.context_z = dict(state.get("context_z", {}))

    # -------------------------------------------------------------------- step
    def training_step(self, batch: list[str], batch_idx: int) -> None:
        if hasattr(self, "maybe_refit_moments"):  # distributional targets: λ re-fitted on the policy
            self.maybe_refit_moments()
        samples = self.sample(batch, model=self.sampling_model())
        log_a = self.base_log_prob(samples)
        with self.timer("scoring"):
            log_P = self.target.log_score(log_a, samples.texts, samples.contexts).to(self.device)
        log_q = samples.log_q.double()
        log_w = log_P - log_q
        self.update_z(self.gather(log_w))  # global running Z: logged as z_global (the DPG baseline's Z)
        log_z_c = self.context_log_z(log_w, samples).to(self.device)
        row_log_z = log_z_c[samples.context_index]
        off = self.hparams.off_policy
        if not torch.isfinite(log_z_c).any():
            log_pi = self.log_prob_no_grad(self.model, samples) if off else log_q
            self.skip_step_without_signal("CDPG: no context of the batch has a sample satisfying the target "
                                          "(every Ẑ_c = 0)")
            stepped = False
        else:
            def loss_fn(mb: Samples, log_pi: Tensor, rows: slice) -> Tensor:
                lq = log_q[rows] if off or self.grad_dtype_set else log_pi.detach()
                return cdpg_loss(log_pi, log_P[rows], lq, row_log_z[rows], self.hparams.baseline,
                                 self.hparams.detach_advantage)

            log_pi, loss = self.accumulate(samples, loss_fn)
            # the advantage P_c/(Ẑ_c q) − [π/q] of each sample (0 where Ẑ_c = 0), for diagnostics
            signal = torch.isfinite(row_log_z)
            coef = torch.exp(log_w - torch.where(signal, row_log_z, torch.zeros_like(row_log_z)))
            base = torch.exp(log_pi.double() - log_q) if off else torch.ones_like(coef)
            adv = coef - base if self.hparams.baseline else coef
            self.last_advantages = torch.where(signal, adv, torch.zeros_like(adv))
            self.last_satisfying = torch.isfinite(log_P)
            stepped = self.optimizer_step_guarded()
            self.log("train/loss", float(loss), batch_size=1)
        self.last_samples = samples
        metrics = self.cdpg_metrics(samples, log_P, log_q, log_pi.double(), log_a, log_z_c)
        metrics["step_skipped"] = float(not stepped)
        metrics.update(getattr(self, "pending_fit_metrics", {}))
        self.pending_fit_metrics = {}
        if off:
            metrics["proposal_updated"] = float(self.maybe_update_proposal(metrics))
        self.log_metrics(metrics, "train", prog_bar=False)
        if "kl_target_policy" in metrics:
            self.log("kl", metrics["kl_target_policy"], prog_bar=True, batch_size=1, logger=False)
        self.log("z", metrics["z"], prog_bar=True, batch_size=1, logger=False)

    def cdpg_metrics(self, samples: Samples, log_P: Tensor, log_q: Tensor, log_pi: Tensor, log_a: Tensor,
                     log_z_c: Tensor) -> dict:
        """Per-context divergences with their own Ẑ_c, averaged over contexts (and over ranks)."""
        idx = samples.context_index
        off = self.hparams.off_policy
        log_P, log_q, log_pi, log_a = (t.double() for t in (log_P, log_q, log_pi, log_a))
        per = {
            "kl_target_policy": estimators.per_context(estimators.kl_target_policy, idx, log_z_c, log_P, log_q, log_pi),
            "tv_target_policy": estimators.per_context(estimators.tv_target_policy, idx, log_z_c, log_P, log_q, log_pi),
        }
        if off:
            per["kl_target_proposal"] = estimators.per_context(
                estimators.kl_target_policy, idx, log_z_c, log_P, log_q, log_q)
            per["tv_target_proposal"] = estimators.per_context(
                estimators.tv_target_policy, idx, log_z_c, log_P, log_q, log_q)
            per["js_target_policy"] = estimators.per_context(
                estimators.js_target_policy, idx, log_z_c, log_P, log_q, log_pi)
            per["js_target_proposal"] = estimators.per_context(
                estimators.js_target_policy, idx, log_z_c, log_P, log_q, log_q)
        ess = torch.stack([estimators.effective_sample_size((log_P - log_q)[idx == c].cpu())
                           for c in range(log_z_c.numel())])
        z_c = self.gather(torch.exp(log_z_c.double()).cpu().to(self.device))
        m: dict[str, float | Tensor] = {
            "z": z_c.mean(),  # Ẑ_c averaged over contexts (design.md: per context for CDPG, averaged)
            "z_std_contexts": z_c.std() if z_c.numel() > 1 else torch.zeros((), dtype=torch.float64),
            "z_global": math.exp(self.log_z) if math.isfinite(self.log_z) else 0.0,
            "contexts_with_signal": (z_c > 0).double().mean(),
            "ess": self.gather(ess.to(self.device)).mean(),
            "n_satisfying": self.gather(torch.isfinite(log_P).double()).sum(),
        }
        for name, values in per.items():
            values = self.gather(values.to(self.device))
            finite = values[torch.isfinite(values)]
            if finite.numel():  # contexts with Ẑ_c = 0 have no defined KL(p_c‖π)
                m[name] = finite.mean()
        gathered = [self.gather(t) for t in (log_pi, log_a, log_q)]
        m.update(self.common_metrics(samples, gathered[0], gathered[1], gathered[2] if off else None))
        for s in self.target.scorers():
            values = self.gather(s(samples.texts, samples.contexts).to(self.device))
            m[f"scorer/{s.name}"] = estimators.policy_moments(values, gathered[0], gathered[2] if off else None)
        return m

    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        """On fresh policy samples: Ẑ_c from each validation context's samples, per-context KL averaged."""
        log_P = self.target.log_score(log_a, samples.texts, samples.contexts).to(log_pi.device)
        lp = log_pi.double()
        idx = samples.context_index
        log_z_c = estimators.log_z_per_context(log_P, lp, idx)
        m = {f"scorer/{s.name}": s(samples.texts, samples.contexts).mean() for s in self.target.scorers()}
        m["z"] = torch.exp(log_z_c).mean()
        m["contexts_with_signal"] = torch.isfinite(log_z_c).double().mean()
        for name, fn in (("kl_target_policy", estimators.kl_target_policy), ("tv_target_policy", estimators.tv_target_policy)):
            values = estimators.per_context(fn, idx, log_z_c, log_P, lp, lp)
            finite = values[torch.isfinite(values)]
            if finite.numel():
                m[name] = finite.mean()
        return m
