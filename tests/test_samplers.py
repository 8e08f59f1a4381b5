"""Sampling from the target without training (QRS: Eikema et al., arXiv:2112.05702): QRS, rejection, importance
resampling — output distributions by enumeration and goodness-of-fit on the toy space — and the
Sampler module through the CLI ``predict``."""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
import yaml

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align import samplers  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.scorers import Count, Regex  # noqa: E402


pytestmark = pytest.mark.usefixtures("single_thread")

PATTERN = "b.*d"


@pytest.fixture(scope="module")
def toy():
    space = ToySpace(4, 4)
    log_a = ex.base_log_probs(space, seed=0)
    log_q = ex.base_log_probs(space, seed=3)  # a proposal that is not the base
    # a graded target: P = a·exp(0.8·#d)·(0.1 + b), so P/q is unbounded-ish and varies
    log_P = log_a + 0.8 * Count("d")(space.texts) + torch.log(0.1 + Regex(PATTERN)(space.texts))
    return space, log_q, log_P


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson χ² goodness-of-fit p-value (bins with expected count < 5 pooled)."""
    from scipy.stats import chi2  # noqa: PLC0415 - scipy ships with the test environment

    assert counts[probs == 0].sum() == 0, "samples where the distribution has no mass"
    counts, probs = counts[probs > 0], probs[probs > 0]
    n = counts.sum()
    exp_counts = probs * n
    small = exp_counts < 5
    obs, exp_ = counts[~small], exp_counts[~small]
    if small.any():
        obs = torch.cat([obs, counts[small].sum().reshape(1)])
        exp_ = torch.cat([exp_, exp_counts[small].sum().reshape(1)])
    stat = float(((obs - exp_) ** 2 / exp_).sum())
    return float(chi2.sf(stat, obs.numel() - 1))


@pytest.mark.parametrize("log_beta_shift", [-1.0, 0.5, 3.0])
def test_qrs_distribution_by_enumeration(toy, log_beta_shift):
    """P(x accepted, x) = q(x)·min(1, P/(βq)) = min(P, βq)/β, so accepted x ~ min(P, βq)/Z_β."""
    space, log_q, log_P = toy
    log_w = log_P - log_q
    log_beta = float(log_w.median()) + log_beta_shift
    joint = torch.exp(log_q + samplers.qrs_log_acceptance(log_P, log_q, log_beta))
    expected = torch.minimum(torch.exp(log_P), math.exp(log_beta) * torch.exp(log_q))
    torch.testing.assert_close(joint, expected / math.exp(log_beta))
    # the IS estimators are means over samples of q; over the whole space they are exact for the
    # uniform proposal u (a mean over X is E_u): check them against the closed forms for q = u
    log_u = torch.full_like(log_q, -math.log(len(space)))
    log_beta_u = float((log_P - log_u).median()) + log_beta_shift
    est = samplers.qrs_estimates(log_P, log_u, log_beta_u)
    joint_u = torch.exp(log_u + samplers.qrs_log_acceptance(log_P, log_u, log_beta_u))
    m = torch.minimum(torch.exp(log_P), math.exp(log_beta_u) * torch.exp(log_u))
    p_beta, p = m / m.sum(), torch.exp(log_P - torch.logsumexp(log_P, 0))
    assert est.acceptance_rate == pytest.approx(float(joint_u.sum()), rel=1e-9)
    assert est.log_z == pytest.approx(float(torch.logsumexp(log_P, 0)), rel=1e-9)
    assert est.tv_target_qrs == pytest.approx(0.5 * float((p - p_beta).abs().sum()), rel=1e-9)
    assert est.kl_target_qrs == pytest.approx(ex.kl(torch.log(p), torch.log(p_beta)), rel=1e-9)
    assert est.tv_target_qrs > 1e-3


def test_qrs_sampling_goodness_of_fit(toy):
    space, log_q, log_P = toy
    gen = torch.Generator().manual_seed(0)
    log_beta = float((log_P - log_q).median())
    n = 200_000
    idx = ex.sample_indices(log_q, n, gen)
    acc = samplers.qrs_accept(log_P[idx], log_q[idx], log_beta, gen)
    counts = torch.bincount(idx[acc], minlength=len(space)).double()
    target = torch.minimum(log_P, log_q + log_beta)
    probs = torch.exp(target - torch.logsumexp(target, 0))
    assert _chi2_pvalue(counts, probs) > 1e-3
    # ... and it is not p itself at this β (the test can tell the two apart)
    p = torch.exp(log_P - torch.logsumexp(log_P, 0))
    assert _chi2_pvalue(counts, p) < 1e-6
    est = samplers.qrs_estimates(log_P[idx], log_q[idx], log_beta)
    assert est.acceptance_rate == pytest.approx(float(acc.double().mean()), abs=0.01)
    exact_tv = 0.5 * float((p - probs).abs().sum())
    assert est.tv_target_qrs == pytest.approx(exact_tv, abs=0.02)


def test_qrs_fidelity_grows_with_beta(toy):
    space, log_q, log_P = toy
    gen = torch.Generator().manual_seed(1)
    idx = ex.sample_indices(log_q, 50_000, gen)
    rates, tvs = [], []
    for rate in (0.8, 0.4, 0.1):
        lb = samplers.qrs_log_beta_for_acceptance(log_P[idx], log_q[idx], rate)
        est = samplers.qrs_estimates(log_P[idx], log_q[idx], lb)
        assert est.acceptance_rate == pytest.approx(rate, rel=1e-6)
        rates.append(est.acceptance_rate)
        tvs.append(est.tv_target_qrs)
    assert tvs[0] > tvs[1] > tvs[2]
    big = float((log_P - log_q).max()) + 1  # β ≥ max P/q: QRS is exact rejection sampling
    est = samplers.qrs_estimates(log_P[idx], log_q[idx], big)
    assert est.kl_target_qrs < 1e-12 and est.tv_target_qrs < 1e-12


def test_rejection_sampling_pointwise_is_exact(toy):
    space, _, _ = toy
    log_a = ex.base_log_probs(space, seed=0)
    b = Regex(PATTERN)(space.texts)
    tgt = ex.pointwise_target(log_a, b)
    gen = torch.Generator().manual_seed(2)
    idx = ex.sample_indices(log_a, 100_000, gen)
    acc = samplers.rejection_accept(tgt.log_P[idx], log_a[idx], 0.0, gen)
    assert acc.double().mean().item() == pytest.approx(tgt.Z, abs=0.01)  # acceptance = Z = E_a[b]
    counts = torch.bincount(idx[acc], minlength=len(space)).double()
    assert _chi2_pvalue(counts, tgt.p) > 1e-3
    _, log_q, log_P = toy
    with pytest.raises(ValueError, match="exceeds the bound"):
        samplers.rejection_accept(log_P, log_q, 0.0)


def test_importance_resampling(toy):
    space, log_q, log_P = toy
    gen = torch.Generator().manual_seed(3)
    idx = ex.sample_indices(log_q, 100_000, gen)
    out = idx[samplers.importance_resample(log_P[idx], log_q[idx], 100_000, gen)]
    counts = torch.bincount(out, minlength=len(space)).double()
    # given the proposals, resampling draws from the self-normalised weighted sample exactly ...
    weighted = torch.bincount(idx, weights=torch.softmax(log_P[idx] - log_q[idx], 0), minlength=len(space))
    assert _chi2_pvalue(counts, weighted) > 1e-3
    # ... which approximates p (importance-sampling error, shrinking with the number of proposals)
    p = torch.exp(log_P - torch.logsumexp(log_P, 0))
    tv = 0.5 * float((weighted - p).abs().sum())
    assert tv < 0.2
    uniform_weights = torch.bincount(idx, minlength=len(space)).double() / len(idx)
    assert 0.5 * float((uniform_weights - p).abs().sum()) > 2 * tv  # the weights do the work
    with pytest.raises(ValueError, match="every importance weight is 0"):
        samplers.importance_resample(torch.full((3,), -math.inf), torch.zeros(3), 2)


SAMPLER_YAML = """
seed_everything: 0
trainer: {{accelerator: cpu, devices: 1, logger: false}}
model:
  class_path: lit_align.methods.Sampler
  init_args:
    model: toy
    target:
      - class_path: lit_align.targets.Pointwise
        init_args:
          scorer: {{class_path: lit_align.scorers.Regex, init_args: {{pattern: "b.*d", name: bd}}}}
    method: {method}
    output: {output}
    n_samples: 512
    max_new_tokens: 4
data:
  class_path: lit_align.data.ToyDataModule
  init_args: {{val_steps: 4}}
"""


@pytest.mark.parametrize("method", ["rejection", "qrs"])
def test_cli_predict_writes_jsonl(in_tmp, run_cli, method):
    cfg = in_tmp / "sampler.yaml"
    out = in_tmp / "out" / "samples.jsonl"
    cfg.write_text(SAMPLER_YAML.format(method=method, output=out))
    run_cli("predict", "--config", str(cfg))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 * 512
    accepted = [r for r in rows if r["accepted"]]
    assert accepted and all(r["scores"]["bd"] == 1.0 for r in accepted)  # P = 0 is never accepted
    assert all(r["log_P"] is None for r in rows if r["scores"]["bd"] == 0.0)
    if method == "rejection":  # q = a, P/q = b: exactly the satisfying samples, rate ≈ Z ≈ 0.29
        assert len(accepted) == sum(r["scores"]["bd"] == 1.0 for r in rows)
        assert 0.25 < len(accepted) / len(rows) < 0.33
    assert {"context", "text", "log_q", "log_a", "log_acceptance", "copies"} <= set(rows[0])
