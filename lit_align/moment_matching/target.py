"""Distributional potentials and fitting their λ on samples (Khalifa et al. 2021,
arXiv:2012.11635; per-context targets: Korbak et al. 2022, arXiv:2112.00791).

:class:`Distributional` is ``exp(λ·φ)`` with desired moments μ̄; :func:`fit_target` fits the
λ of every such potential of a target jointly on samples of a proposal, and
:func:`fit_target_by_sampling` draws those samples with a method's engine (the base at fit
start, the policy when refitting). The dual itself is in :mod:`lit_align.moment_matching.dual`.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch
from torch import Tensor

from lit_align.moment_matching.dual import MomentFit, MomentMatchingError, _f64, check_moments_in_range, fit_lambdas
from lit_align.scorers.base import Scorer
from lit_align.targets import EBM, Exponential

__all__ = ["Distributional", "distributional_potentials", "fit_target", "fit_target_by_sampling", "default_contexts"]


# ---------------------------------------------------------------------------- the potential


class Distributional(Exponential):
    """``exp(λ·φ(x))`` whose λ is fitted so that the target's moments are ``E_p[φ] = μ̄``.

    Args:
        scorers: the features φ_k (any real-valued scorers; their ``low``/``high`` bound
            the reachable moments).
        moments: the desired moments μ̄_k, strictly inside each feature's range.
        coefficients: a known λ (skips fitting); None (default) leaves λ to be fitted.
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        moments: Sequence[float],
        coefficients: Sequence[float] | None = None,
    ) -> None:
        scorers = list(scorers)
        super().__init__(scorers, coefficients if coefficients is not None else [0.0] * len(scorers))
        self.moments = torch.as_tensor(list(moments), dtype=torch.float64).reshape(-1)
        if self.moments.numel() != len(self.features):
            raise ValueError(f"Distributional: {len(self.features)} scorers but {self.moments.numel()} moments")
        if len({s.name for s in self.features}) != len(self.features):
            raise ValueError("Distributional: scorers need distinct names (set `name:`), they label λ and moments")
        self.fitted = coefficients is not None
        self.last_fit: MomentFit | None = None
        check_moments_in_range(self.moments, self.names, self.low, self.high)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.features]

    @property
    def low(self) -> list[float]:
        return [float(s.low) for s in self.features]

    @property
    def high(self) -> list[float]:
        return [float(s.high) for s in self.features]

    def set_lambdas(self, lambdas: Tensor | Sequence[float]) -> None:
        self.coefficients = _f64(lambdas).reshape(-1).clone()
        self.fitted = True

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        if not self.fitted:
            raise RuntimeError(
                f"Distributional({self.names}): λ has not been fitted. DPG fits it at fit start; "
                "otherwise call lit_align.moment_matching.fit_target(...) or give `coefficients`."
            )
        return super().log_potential(texts, contexts)

    def log_potential_from(self, scores, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        if not self.fitted:
            return self.log_potential(texts, contexts)  # raises the error above
        return super().log_potential_from(scores, texts, contexts)

    def __repr__(self) -> str:
        return f"Distributional({self.names}, moments={self.moments.tolist()}, λ={self.coefficients.tolist()})"


def distributional_potentials(target: EBM) -> list[Distributional]:
    return [p for p in target.potentials if isinstance(p, Distributional)]


def fit_target(
    target: EBM,
    texts: Sequence[str],
    contexts: Sequence[str] | None,
    log_a: Tensor,
    log_q: Tensor,
    gather=None,
    groups: Tensor | None = None,
    **kwargs,
) -> MomentFit:
    """Fit λ of every :class:`Distributional` potential of ``target`` jointly, on samples of q.

    ``log_a``/``log_q``: base and proposal log-probs of the samples (equal when q = a). The
    other potentials (pointwise factors of a hybrid target) enter the λ-free weights.
    ``gather`` (a per-sample tensor → all-ranks tensor function) makes every rank fit on the
    union of the ranks' samples, so that all ranks get the same λ. ``groups`` (per-sample
    context ids, distinct across ranks) averages per-context normalised moments (conditional
    targets, see :mod:`~lit_align.moment_matching.dual`). Keyword arguments go to
    :func:`fit_lambdas`. Sets λ on the potentials (also when the fit raises for
    non-convergence it does not change them) and returns the fit.
    """
    dists = distributional_potentials(target)
    if not dists:
        raise ValueError("fit_target: the target has no Distributional potential")
    feats = torch.cat([d.features_matrix(texts, contexts) for d in dists], dim=-1)
    log_w0 = _f64(log_a) - _f64(log_q)
    for p in target.potentials:
        if not isinstance(p, Distributional):
            log_w0 = log_w0 + _f64(p.log_potential(texts, contexts))
    if gather is not None:
        feats, log_w0 = gather(feats), gather(log_w0)
        groups = None if groups is None else gather(groups.to(torch.float64)).round().long()
    desired = torch.cat([d.moments for d in dists])
    init = torch.cat([d.coefficients for d in dists])
    names = [n for d in dists for n in d.names]
    low = [x for d in dists for x in d.low]
    high = [x for d in dists for x in d.high]
    fit = fit_lambdas(feats, desired, log_w0, init, names=names, low=low, high=high, groups=groups, **kwargs)
    if not fit.converged:
        raise MomentMatchingError(
            "moment matching did not reach its tolerance (the desired moments may be jointly "
            "unreachable on this sample, e.g. outside the convex hull of the features):\n" + fit.report()
        )
    start = 0
    for d in dists:
        k = len(d.features)
        d.set_lambdas(fit.lambdas[start : start + k])
        d.last_fit = fit
        start += k
    return fit


# ------------------------------------------------------------------ with an engine's models


def default_contexts(datamodule, n_contexts: int = 32) -> list[str]:
    """The contexts moment matching samples from: ``n_contexts`` of a conditional data module's
    training contexts (a fixed random subset, seed 0), else its ``prompt`` (``""`` if none)."""
    dm = datamodule
    train = getattr(dm, "train_contexts", None)
    if train is None and hasattr(dm, "train_contexts") and hasattr(dm, "setup"):
        dm.setup("fit")
        train = dm.train_contexts
    if train:
        train = list(train)
        return train if len(train) <= n_contexts else random.Random(0).sample(train, n_contexts)
    return [getattr(dm, "prompt", "")]


@torch.no_grad()
def fit_target_by_sampling(
    target: EBM,
    engine,
    model=None,
    contexts: Sequence[str] | None = None,
    n_samples: int = 10240,
    batch_size: int = 512,
    strict: bool = True,
    gather=None,
    rank: int = 0,
    sample=None,
    **kwargs,
) -> MomentFit | None:
    """Draw ``n_samples`` from ``model`` (default: the engine's frozen base ``a``) and fit λ.

    ``engine`` is the method's :class:`~lit_align.models.engine.Engine` (sampling and the base
    log-probs). Samples from another model (e.g. the current policy, to reduce the SNIS bias)
    are importance-weighted with ``log a − log q``. ``contexts`` (see :func:`default_contexts`;
    ``[""]`` if None: unconditional, from BOS) share the samples evenly, and the moments
    matched are then the per-context normalised moments averaged over contexts,
    ``E_c E_{p_c}[φ]`` (CDPG's target is normalised per context: Korbak et al., "Controlling
    conditional language models without catastrophic forgetting", ICML 2022, arXiv:2112.00791, §2). ``gather``
    and ``rank`` make all ranks fit on the union of their samples; ``sample(contexts, n, model)``
    draws them (default: the engine's sampler; a method passes its own).

    With ``strict=False`` an unfittable target (a feature that never fires, e.g. a random
    tiny model in a smoke test) warns and keeps the current λ instead of raising.
    """
    import warnings

    if n_samples < 1 or batch_size < 1:
        raise ValueError("moment matching needs n_samples ≥ 1 and batch_size ≥ 1")
    base_model = engine.base
    model = base_model if model is None else model
    contexts = list(contexts or []) or [""]
    per_call = max(1, batch_size // len(contexts))
    texts, ctxs, log_a, log_q, groups = [], [], [], [], []
    offset = rank * len(contexts)  # group ids distinct across ranks
    drawn = 0
    while drawn < n_samples:
        n = min(per_call, -(-(n_samples - drawn) // len(contexts)))
        samples = (sample or engine.sample)(contexts, n, model)
        texts += samples.texts
        ctxs += samples.contexts
        groups.append(samples.context_index.cpu() + offset)
        lq = samples.log_q.double() if engine.policy.exact else engine.log_prob(model, samples).double()
        log_q.append(lq.cpu())
        log_a.append(lq.cpu() if model is base_model else engine.base_log_prob(samples).double().cpu())
        drawn += len(samples)
    try:
        return fit_target(target, texts, ctxs, torch.cat(log_a), torch.cat(log_q), gather=gather,
                          groups=torch.cat(groups) if len(contexts) > 1 else None, **kwargs)
    except MomentMatchingError as err:
        if strict:
            raise
        warnings.warn(f"moment matching failed; keeping λ = {[d.coefficients.tolist() for d in distributional_potentials(target)]} "
                      f"because moment_matching_strict is false: {err}", stacklevel=2)
        for d in distributional_potentials(target):
            d.fitted = True
        return None
