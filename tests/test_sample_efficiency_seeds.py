"""Sample efficiency over seeds (benchmarks/peers/sample_efficiency_seeds.py): paired means and intervals."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))

import sample_efficiency_seeds as ses  # noqa: E402
from benchmarks.repro.stats import t_quantile_975  # noqa: E402

WORK = {"model": "tiny", "steps": 2, "samples": 8, "tokens": 8, "minibatch": 8, "lr": 1e-5, "pattern": "e",
        "curve": 1, "curve_samples": 32}


def run(tmp_path, seed, ours, theirs, **work):
    def curve(vals):
        return [{"step": s, "samples_seen": 8 * s, "E_pi_b": v, "kl_p_pi_sn": 1 - v, "kl_pi_a": v / 2}
                for s, v in enumerate(vals)]
    path = tmp_path / f"seed{seed}.json"
    path.write_text(json.dumps({"args": {**WORK, **work, "seed": seed}, "log_z": -1.0,
                                "lit_align": {"curve": curve(ours)}, "disco": {"curve": curve(theirs)}}))
    return str(path)


def test_means_and_paired_differences_over_seeds(tmp_path):
    paths = [run(tmp_path, 0, [0.1, 0.3], [0.1, 0.2]), run(tmp_path, 1, [0.1, 0.5], [0.1, 0.2])]
    rows = ses.curves(ses.load(paths))
    last = rows[-1]["E_pi_b"]
    assert last["lit_align"][0] == pytest.approx(0.4) and last["disco"] == (pytest.approx(0.2), 0.0)
    # differences 0.1 and 0.3: mean 0.2, sd 0.1414, half-width t(1) · sd / √2 = t(1) · 0.1 (t(1) = 12.706)
    assert last["diff"][0] == pytest.approx(0.2)
    assert last["diff"][1] == pytest.approx(t_quantile_975(1) * 0.1)
    assert rows[-1]["kl_p_pi_sn"]["diff"][0] == pytest.approx(-0.2)  # KL = 1 − E[b] in these curves
    assert math.isnan(ses.mean_ci([0.3])[1])


def test_runs_of_different_work_or_the_same_seed_are_refused(tmp_path):
    a = run(tmp_path, 0, [0.1], [0.1])
    with pytest.raises(SystemExit, match="lr"):
        ses.load([a, run(tmp_path, 1, [0.1], [0.1], lr=2e-5)])
    with pytest.raises(SystemExit, match="distinct seeds"):
        ses.load([a, a])


def test_one_number_per_metric_over_the_whole_curve(tmp_path):
    runs = ses.load([run(tmp_path, 0, [0.1, 0.3, 0.5], [0.1, 0.2, 0.2]), run(tmp_path, 1, [0.1, 0.2, 0.2], [0.1, 0.2, 0.4])])
    per_seed, (m, h) = ses.pooled(runs, [0, 1, 2], "E_pi_b")
    # seed 0: (0.1 + 0.3) / 2 = 0.2; seed 1: (0 − 0.2) / 2 = −0.1 (step 0 left out)
    assert per_seed == [pytest.approx(0.2), pytest.approx(-0.1)]
    assert m == pytest.approx(0.05) and h == pytest.approx(t_quantile_975(1) * 0.3 / 2)
