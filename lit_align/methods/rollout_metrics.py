"""Metrics of a rollout: those of every on-policy method (KL to the base, length, NLL) and those
of DPG and CDPG (divergences to the target, Ẑ, ESS and moments).

The divergences ``KL(p‖π)``, ``TV(p, π)`` and ``JS(p, π)`` are importance-sampled with the
estimate Ẑ (Khalifa, Elsahar & Dymetman, "A distributional approach to controlled text
generation", ICLR 2021; Korbak's thesis, arXiv:2404.12150, ch. 3); for CDPG each context uses
its own Ẑ_c and the values are averaged over contexts (thesis ch. 4: Korbak et al., "Controlling
conditional language models without catastrophic forgetting", ICML 2022).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.models.rollout import Rollout
from lit_align.models.samples import Samples

DIVERGENCES = {
    "kl": estimators.kl_target_policy,
    "tv": estimators.tv_target_policy,
    "js": estimators.js_target_policy,
}


def common_metrics(samples: Samples, log_pi: Tensor, log_a: Tensor | None, log_q: Tensor | None, gather) -> dict:
    """KL(π‖a), sample length and entropy proxy, IS-weighted when samples come from q ≠ π
    (no KL(π‖a) or base NLL when the run keeps no base: ``log_a`` None)."""
    m = {"length": gather(samples.lengths.double()).mean()}
    if log_q is None:
        m["nll_policy"] = -log_pi.double().mean()
    if log_a is not None:
        m["kl_policy_base"] = estimators.kl_policy_base(log_pi, log_a, log_q)
        m["nll_base"] = -log_a.double().mean()
    return m


def dpg_metrics(rollout: Rollout, log_z: float, off_policy: bool, device) -> dict:
    """Divergences, Ẑ, ESS and IS-weighted scorer moments, reduced over ranks."""
    g = rollout.gather
    log_P, log_q, log_pi, log_a = (g(t.double()) for t in (rollout.log_P, rollout.log_q, rollout.log_pi,
                                                            rollout.log_a))
    lz = torch.tensor(log_z, dtype=torch.float64)
    finite_z = bool(torch.isfinite(lz))
    m: dict[str, float | Tensor] = {
        "z": math.exp(log_z) if finite_z else 0.0,
        "z_batch": torch.exp(estimators.log_z_hat(log_P, log_q)),
        "ess": estimators.effective_sample_size(log_P - log_q),
        "n_satisfying": torch.isfinite(log_P).double().sum(),
        "importance_ratio_policy_proposal": torch.exp(log_pi - log_q).mean(),
    }
    if finite_z:  # else nothing has satisfied the target yet (Ẑ = 0): z = 0 and n_satisfying = 0 say why
        for name, fn in DIVERGENCES.items():
            m[f"{name}_target_policy"] = fn(log_P, log_q, log_pi, lz)
        if off_policy:
            for name, fn in DIVERGENCES.items():
                m[f"{name}_target_proposal"] = fn(log_P, log_q, log_q, lz)
    return m, (log_pi, log_a, log_q)


def scorer_moments(rollout: Rollout, log_pi: Tensor, log_q: Tensor | None, device, proposal: bool) -> dict:
    """``scorer/<name>``: E_π of every scorer (IS-weighted when ``log_q`` is given)."""
    m = {}
    for s, values in rollout.scores.items():
        values = rollout.gather(values.to(device))
        m[f"scorer/{s.name}"] = estimators.policy_moments(values, log_pi, log_q)
        if proposal:
            m[f"proposal/scorer/{s.name}"] = values.mean()
    return m


def cdpg_divergences(rollout: Rollout, log_z_c: Tensor, off_policy: bool) -> dict[str, Tensor]:
    """Per-context KL/TV (and, off-policy, JS and the proposal's) with each context's Ẑ_c."""
    idx = rollout.context_index
    log_P, log_q, log_pi = (t.double() for t in (rollout.log_P, rollout.log_q, rollout.log_pi))
    kl, tv, js = estimators.kl_target_policy, estimators.tv_target_policy, estimators.js_target_policy
    per = {"kl_target_policy": estimators.per_context(kl, idx, log_z_c, log_P, log_q, log_pi),
           "tv_target_policy": estimators.per_context(tv, idx, log_z_c, log_P, log_q, log_pi)}
    if off_policy:
        per["kl_target_proposal"] = estimators.per_context(kl, idx, log_z_c, log_P, log_q, log_q)
        per["tv_target_proposal"] = estimators.per_context(tv, idx, log_z_c, log_P, log_q, log_q)
        per["js_target_policy"] = estimators.per_context(js, idx, log_z_c, log_P, log_q, log_pi)
        per["js_target_proposal"] = estimators.per_context(js, idx, log_z_c, log_P, log_q, log_q)
    return per


def cdpg_metrics(rollout: Rollout, log_z_c: Tensor, running_log_z: float, off_policy: bool, device) -> dict:
    """Per-context divergences with their own Ẑ_c, averaged over contexts (and over ranks)."""
    g, idx = rollout.gather, rollout.context_index
    log_P, log_q = rollout.log_P.double(), rollout.log_q.double()
    ess = torch.stack([estimators.effective_sample_size((log_P - log_q)[idx == c].cpu())
                       for c in range(log_z_c.numel())])
    z_c = g(torch.exp(log_z_c.double()).cpu().to(device))
    m: dict[str, float | Tensor] = {
        "z": z_c.mean(),  # Ẑ_c averaged over contexts
        "z_std_contexts": z_c.std() if z_c.numel() > 1 else torch.zeros((), dtype=torch.float64),
        "z_global": math.exp(running_log_z) if math.isfinite(running_log_z) else 0.0,
        "contexts_with_signal": (z_c > 0).double().mean(),
        "ess": g(ess.to(device)).mean(),
        "n_satisfying": g(torch.isfinite(log_P).double()).sum(),
    }
    for name, values in cdpg_divergences(rollout, log_z_c, off_policy).items():
        values = g(values.to(device))
        finite = values[torch.isfinite(values)]
        if finite.numel():  # contexts with Ẑ_c = 0 have no defined KL(p_c‖π)
            m[name] = finite.mean()
    return m


def validation_divergences(rollout: Rollout, log_z: float | None) -> dict:
    """On fresh policy samples (q = π): scorer means, and KL/TV to the target with the running Ẑ
    (``log_z``) or, when ``log_z`` is None (CDPG), with each validation context's own Ẑ_c.

    With a running Ẑ, samples that miss the target add 0 to the KL/TV estimates: a batch without any
    satisfying sample reads KL(p‖π) = 0 (the importance-sampled estimate is unbiased, not informative
    there). ``n_satisfying`` is logged beside it so such a reading can be told apart.
    """
    m = {f"scorer/{s.name}": v.mean() for s, v in rollout.scores.items()}
    log_P, lp = rollout.log_P, rollout.log_pi.double()
    m["n_satisfying"] = torch.isfinite(log_P).double().sum()
    if log_z is not None:
        if math.isfinite(log_z):
            m["kl_target_policy"] = estimators.kl_target_policy(log_P, lp, lp, log_z)
            m["tv_target_policy"] = estimators.tv_target_policy(log_P, lp, lp, log_z)
        return m
    idx = rollout.context_index
    log_z_c = estimators.log_z_per_context(log_P, lp, idx)
    m["z"] = torch.exp(log_z_c).mean()
    m["contexts_with_signal"] = torch.isfinite(log_z_c).double().mean()
    for name in ("kl_target_policy", "tv_target_policy"):
        fn = DIVERGENCES[name[:2]]
        values = estimators.per_context(fn, idx, log_z_c, log_P, lp, lp)
        finite = values[torch.isfinite(values)]
        if finite.numel():
            m[name] = finite.mean()
    return m
