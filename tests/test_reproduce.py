"""The reproduction runner (benchmarks/reproduce.py): CIs, the verdict rule, resumable sweeps."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.repro import claims_toy  # noqa: E402
from benchmarks.repro.analysis import at_matched, best_lr, paired  # noqa: E402
from benchmarks.repro.runner import execute  # noqa: E402
from benchmarks.repro.stats import (  # noqa: E402
    INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Estimate, combine, estimate, t_quantile_975, verdict_of)
from benchmarks.repro.sweep import collect, sweep  # noqa: E402


# ----------------------------------------------------------------------------- statistics
def test_ci_matches_hand_computed_values():
    # [1, 2, 3]: mean 2, sd 1, t_{0.975,2} = 4.302653 → half width 4.302653/√3 = 2.484138
    e = estimate([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.n == 3
    assert e.low == pytest.approx(2 - 2.484138, abs=1e-6) and e.high == pytest.approx(2 + 2.484138, abs=1e-6)
    # [0.1, 0.3]: mean 0.2, sd 0.1·√2, half width 12.706205·0.1·√2/√2 = 1.2706205
    e = estimate([0.1, 0.3])
    assert (e.low, e.high) == (pytest.approx(0.2 - 1.2706205), pytest.approx(0.2 + 1.2706205))
    # five equal values: zero width
    e = estimate([0.5] * 5)
    assert (e.low, e.mean, e.high) == (0.5, 0.5, 0.5)


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706205 and t_quantile_975(30) == 2.042272
    assert t_quantile_975(60) == pytest.approx(2.000298, abs=1e-5)
    assert t_quantile_975(10**6) == pytest.approx(1.959966, abs=1e-5)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_one_seed_has_no_ci_and_no_verdict():
    e = estimate([3.0])
    assert e.low == -math.inf and e.high == math.inf
    assert verdict_of(e) == INCONCLUSIVE
    assert verdict_of(estimate([])) == INCONCLUSIVE


def test_verdict_rule():
    assert verdict_of(Estimate(1.0, 0.1, 1.9, 3)) == REPRODUCED
    assert verdict_of(Estimate(1.0, -0.1, 2.1, 3)) == INCONCLUSIVE          # the CI contains 0: no verdict
    assert verdict_of(Estimate(-1.0, -1.9, 0.0, 3)) == NOT_REPRODUCED       # at or below the margin
    assert verdict_of(Estimate(0.95, 0.91, 0.99, 3), margin=0.9) == REPRODUCED
    assert verdict_of(Estimate(0.95, 0.85, 0.99, 3), margin=0.9) == INCONCLUSIVE
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([]) == INCONCLUSIVE


def test_matched_reading_interpolates_at_the_first_crossing():
    curves = {"x": [(0, 0.0), (10, 1.0), (20, 2.0), (30, 1.0)], "y": [(0, 0.0), (10, 10.0), (20, 30.0), (30, 0.0)]}
    assert at_matched(curves, "x", "y", 1.5) == pytest.approx(20.0)
    assert at_matched(curves, "x", "y", 1.0) == pytest.approx(10.0)
    assert math.isnan(at_matched(curves, "x", "y", 2.5))  # never reached


def test_best_lr_and_pairing():
    runs = {0.1: {0: {"k": [(0, 3.0)]}, 1: {"k": [(0, 1.0)]}}, 0.3: {0: {"k": [(0, 1.5)]}, 1: {"k": [(0, 1.5)]}}}
    read = lambda c: c["k"][-1][1]  # noqa: E731
    assert best_lr(runs, read) == 0.3                       # mean 1.5 < mean 2.0
    assert best_lr(runs, read, lower_is_better=False) == 0.1
    assert paired({0: 1.0, 1: 2.0, 2: 5.0}, {1: 0.5, 0: 0.25, 3: 9.0}) == [0.75, 1.5]  # common seeds, in order


# -------------------------------------------------------------------------- real runs
def test_sweep_resumes_and_reports(tmp_path: Path):
    """An interrupted sweep runs only what is left: run 0 finished; run 1 was killed after its
    checkpoint at step 2 (no done.json) and continues from ``last.ckpt`` to step 3. The verdict is
    the rule's verdict of the per-seed values read back from the CSV logs, which start at the
    exact closed-form KL(p‖a)."""
    runs = [replace(r, ckpt_every=2) for r in claims_toy.toy_runs("tilt", "quick", [0, 1], steps=3)
            if r.method == "RL-KL"]
    quiet = lambda *a, **k: None  # noqa: E731
    assert sweep(runs, tmp_path, max_runs=1, log=quiet) == [runs[0].key]
    first = (tmp_path / runs[0].key / "done.json").read_text()
    assert json.loads(first)["fingerprint"] == runs[0].fingerprint
    killed = replace(runs[1], overrides={**runs[1].overrides, "trainer.max_steps": 2})
    assert execute(killed, tmp_path)
    (tmp_path / killed.key / "done.json").unlink()  # as if killed right after the checkpoint at step 2

    assert sweep(runs, tmp_path, log=quiet) == [runs[1].key]
    assert sweep(runs, tmp_path, log=quiet) == []
    assert (tmp_path / runs[0].key / "done.json").read_text() == first
    resumed = tmp_path / runs[1].key
    assert "restor" in (resumed / "log.txt").read_text().lower()
    with open(resumed / "logs" / "version_1" / "metrics.csv", newline="") as f:
        assert {int(row["step"]) for row in csv.DictReader(f) if row.get("exact/kl_p_pi")} == {3}

    ref = claims_toy.reference("tilt", claims_toy.POINTWISE, claims_toy.CH2_BETA)
    results = collect(runs, tmp_path)
    assert [s for s, _ in results["RL-KL"][0.1][1]["exact/kl_p_pi"]] == [0, 2, 3]
    for curves in results["RL-KL"][0.1].values():
        kl = curves["exact/kl_p_pi"]
        assert kl[0] == (0, pytest.approx(ref["kl_p_a"], abs=1e-9))
        assert kl[-1][0] == 3 and kl[-1][1] < ref["kl_p_a"]
    analysis = claims_toy.analyse_ch2(results, "quick")
    closed = [1 - v / ref["kl_p_a"] for v in analysis["methods"]["RL-KL"]["per_seed"]["KL(p‖π) end"].values()]
    assert analysis["effects"][0]["estimate"] == estimate(closed)
    assert analysis["verdict"] == verdict_of(estimate(closed), 0.9)


# ----------------------------------------------------------- readings of the LM claims
def fake_run(kl_slope: float, b_slope: float, noise: float, steps: int = 20) -> dict:
    return {"train/kl_policy_base": [(s, kl_slope * s) for s in range(steps + 1)],
            "train/scorer/numeral_consistency": [(s, b_slope * s + noise) for s in range(steps + 1)]}


def test_ch4_reading_compares_at_matched_kl():
    """CDPG gains b twice as fast per nat of KL(π‖a) and moves half as far: reproduced. The
    matched level is the largest KL every method reaches (CDPG's 0.1·20 = 2, smoothed: 1.8)."""
    from benchmarks.repro.claims_lm import analyse_ch4

    seeds = {0: -0.01, 1: 0.0, 2: 0.02}
    results = {"CDPG": {1e-5: {s: fake_run(0.1, 0.02, e) for s, e in seeds.items()}}}
    for base in ("DPG (global Z)", "PPO (Ziegler)", "REINFORCE"):
        results[base] = {1e-5: {s: fake_run(0.2, 0.02, 2 * e) for s, e in seeds.items()}}
    analysis = analyse_ch4(results, "quick")
    assert analysis["verdict"] == REPRODUCED
    cdpg = analysis["methods"]["CDPG"]["metrics"]
    key = next(k for k in cdpg if k.startswith("E_π[b] at KL(π‖a)="))
    assert key == "E_π[b] at KL(π‖a)=1.8"
    # CDPG reaches KL 1.8 at (smoothed) step 20 → b = 0.02·18 + noise; the baselines at step 11 → 0.02·9
    assert cdpg[key].mean == pytest.approx(0.36 + sum(seeds.values()) / 3, abs=1e-9)
    base = analysis["methods"]["REINFORCE"]["metrics"][key]
    assert base.mean == pytest.approx(0.18 + 2 * sum(seeds.values()) / 3, abs=1e-9)

    # the random-b control travels less far (0.05 a step): it is summarised beside the methods but
    # neither lowers the matched level nor enters the effects
    from benchmarks.repro.claims_lm import CONTROL

    results[CONTROL] = {1e-5: {s: fake_run(0.05, 0.0, e) for s, e in seeds.items()}}
    with_control = analyse_ch4(results, "quick")
    assert key in with_control["methods"]["CDPG"]["metrics"]
    assert with_control["verdict"] == REPRODUCED
    assert [e["name"] for e in with_control["effects"]] == [e["name"] for e in analysis["effects"]]
    assert with_control["methods"][CONTROL]["metrics"]["KL(π‖a) end"].mean == pytest.approx(0.05 * 18, abs=1e-9)
    from benchmarks.repro.claims import all_claims
    from benchmarks.repro.report import markdown

    text = markdown(all_claims()["ch4-translate"], with_control, "quick", [0, 1, 2], "cmd")
    assert f"| {CONTROL} |" in text and "Not a method of the claim" in text
    assert "Not a method of the claim" not in markdown(all_claims()["ch4-translate"], analysis, "quick", [0, 1, 2], "cmd")


def test_random_bit_control_is_a_fixed_unstructured_constraint():
    """The control's b is a function of (context, text): the same pair always scores the same, about
    ``rate`` of all pairs satisfy it, and it changes with the context (no learnable text feature)."""
    from benchmarks.repro.control import RandomBit

    bit = RandomBit(rate=0.25)
    texts = [f"la phrase numéro {i}" for i in range(4000)]
    first, again = bit(texts, ["c"] * 4000), bit(texts, ["c"] * 4000)
    assert torch.equal(first, again) and set(first.tolist()) <= {0.0, 1.0}
    assert abs(first.mean().item() - 0.25) < 0.03  # binomial s.e. 0.007
    other = bit(texts, ["d"] * 4000)
    assert (first != other).float().mean().item() > 0.25  # independent bits differ in 2·0.25·0.75 = 0.375
    with pytest.raises(ValueError, match="rate"):
        RandomBit(rate=1.0)


def test_ch4_control_targets_a_random_bit_and_keeps_the_task_scorer():
    """The control run is CDPG's own section with b replaced by the random bit; the task's scorer
    stays with coefficient 0 (logged, no effect on the target)."""
    from benchmarks.repro.claims_lm import CONTROL, ch4_runs

    runs = ch4_runs("translate")("quick", [0])
    control = next(r for r in runs if r.method == CONTROL)
    cdpg = next(r for r in runs if r.method == "CDPG")
    assert control.overrides["model"]["class_path"] == cdpg.overrides["model"]["class_path"]
    point, zero = control.overrides["model"]["init_args"]["target"]
    assert point["init_args"]["scorer"]["class_path"] == "benchmarks.repro.control.RandomBit"
    assert zero["init_args"]["coefficients"] == [0.0]
    assert zero["init_args"]["scorers"][0] == cdpg.overrides["model"]["init_args"]["target"][0]["init_args"]["scorer"]


def test_partial_report_says_so_before_its_numbers():
    """A report of a sweep that is still running is marked partial above its table, with the
    count of runs left; a finished sweep's report is not."""
    from benchmarks.repro.claims import all_claims
    from benchmarks.repro.claims_lm import analyse_ch4
    from benchmarks.repro.report import markdown

    results = {m: {1e-5: {s: fake_run(0.1, 0.02, 0.01 * s) for s in range(3)}}
               for m in ("CDPG", "DPG (global Z)", "PPO (Ziegler)", "REINFORCE")}
    claim = all_claims()["ch4-translate"]
    done = markdown(claim, analyse_ch4(results, "quick"), "quick", [0, 1, 2], "cmd")
    assert "Partial" not in done
    analysis = {**analyse_ch4(results, "quick"), "verdict": "inconclusive",
                "incomplete": "3 of 12 runs not done; rerun the command to continue"}
    partial = markdown(claim, analysis, "quick", [0, 1, 2], "cmd")
    assert partial.startswith("# ch4-translate: inconclusive")
    assert partial.index("**Partial report**: 3 of 12 runs not done") < partial.index("| method |")


def test_ch5_and_yun_readings():
    from benchmarks.repro.claims_lm import analyse_ch5
    from benchmarks.repro.claims_yun import analyse_yun

    def phf(score, loss):
        return {"eval/unconditional/score": [(100, score)], "val/loss": [(100, loss)]}
    results = {o: {8e-4: {s: phf(0.02 + 0.001 * s, 1.75) for s in range(3)}}
               for o in ("mle", "filtering", "unlikelihood", "rwr", "awr", "mle→conditional")}
    results["conditional"] = {8e-4: {s: phf(0.01 + 0.001 * s, 1.76) for s in range(3)},
                              4e-4: {s: phf(0.03, 1.7) for s in range(3)}}
    a = analyse_ch5(results, "quick")
    assert a["methods"]["conditional"]["best_lr"] == 8e-4
    assert a["verdict"] == REPRODUCED  # 0.01 lower everywhere (zero spread), LM-loss cost 0.01 < 0.1
    results["filtering"] = {8e-4: {s: phf(0.01 + 0.001 * s, 1.75) for s in range(3)}}
    assert analyse_ch5(results, "quick")["verdict"] == NOT_REPRODUCED  # filtering ties exactly

    def toy(kl):
        return {"exact/kl_p_pi": [(0, 1.7), (10, kl)], "exact/kl_pi_a": [(10, 0.5)]}
    res = {m: {0.05: {s: toy(k + 0.01 * s) for s in range(3)}}
           for m, k in (("DPO", 0.4), ("RLHF (RM + RL-KL) β=0.1", 0.6), ("RLHF (RM + RL-KL) β=0.5", 0.4),
                        ("PMLE", 0.1), ("distill", 0.1), ("reverse KL (RM + RLOO) β=0.01", 0.1),
                        ("reverse KL (RM + RLOO) β=0.2", 0.9))}
    y = analyse_yun(res, "quick")
    assert len(y["effects"]) == 6 and y["verdict"] == REPRODUCED
    # the best β of each grid stands for its method: RLHF at β = 0.5 (0.4 < 0.6), reverse KL at 0.01
    names = [e["name"] for e in y["effects"]]
    assert "KL(π*‖π): RLHF (RM + RL-KL) β=0.5 − reverse KL (RM + RLOO) β=0.01" in names
    assert not any("β=0.1 " in n or "β=0.2" in n for n in names)
    res["reverse KL (RM + RLOO) β=0.01"] = res["reverse KL (RM + RLOO) β=0.2"]  # now every β of it is worse
    assert analyse_yun(res, "quick")["verdict"] == NOT_REPRODUCED


def test_ch5_second_stage_keeps_the_first_stage_architecture():
    """MLE→conditional: the second stage builds the same overridden architecture (from_scratch)
    and takes the first stage's weights (init_from); with from_scratch false PHF loads the config's
    model by name and refuses the overrides, so the stage never started."""
    from benchmarks.repro.claims_lm import ch5_runs

    runs = ch5_runs("quick", [0])
    first = next(r for r in runs if r.stage == "mle")
    second = next(r for r in runs if r.stage == "finetune")
    assert second.overrides.get("model.init_args.from_scratch", True) is not False
    arch = "model.init_args.config_overrides"
    assert second.overrides[arch] == first.overrides[arch]
    assert second.overrides["model.init_args.init_from"].endswith(f"{first.key}/ckpt/last.ckpt")


def test_lm_budgets_give_ppo_autocast_instead_of_grad_dtype():
    """PPO refuses ``grad_dtype`` (its π/π_old ratio needs one precision): in a budget with a dtype
    it runs under the trainer's bf16-mixed autocast (where bf16 is native), every other method
    takes grad/sample dtype; a budget without a dtype changes neither."""
    from benchmarks.repro.claims_lm import ch3_lm_runs, ch4_runs
    from lit_align.models.settings import resolve_dtype

    def init_args(run):
        if "model" in run.overrides:
            return run.overrides["model"]["init_args"]
        return {k.rsplit(".", 1)[-1]: v for k, v in run.overrides.items() if k.startswith("model.init_args.")}

    native = resolve_dtype("auto") == "bfloat16"
    for runs in (ch4_runs("translate")("cpu", [0]), ch3_lm_runs("cpu", [0])):
        for run in runs:
            args = init_args(run)
            if run.method == "PPO (Ziegler)":
                assert "grad_dtype" not in args and "sample_dtype" not in args
                assert run.overrides.get("trainer.precision") == ("bf16-mixed" if native else None)
            else:
                assert args["grad_dtype"] == args["sample_dtype"] == "auto"
                assert "trainer.precision" not in run.overrides
    for run in ch4_runs("translate")("quick", [0]):
        assert "grad_dtype" not in init_args(run) and "trainer.precision" not in run.overrides


def test_ch4_task_budget_overrides_reach_runs_and_analysis():
    """A task's own budget (code prompts are long: 2 contexts a step at cpu) reaches every fit of that
    task — data, PPO's minibatch — and the analysis's samples-seen axis; the other task keeps the shared budget."""
    from benchmarks.repro.claims_lm import CH4_BUDGETS, ch4_budget, ch4_runs

    for task, want in (("code_compile", 2), ("translate", CH4_BUDGETS["cpu"]["contexts"])):
        assert ch4_budget(task, "cpu")["contexts"] == want
        for run in ch4_runs(task)("cpu", [0]):
            assert run.overrides["data.init_args.contexts_per_step"] == want
            args = run.overrides["model"]["init_args"]
            if "ppo_minibatch_size" in args:
                assert args["ppo_minibatch_size"] == want * CH4_BUDGETS["cpu"]["samples"]
    assert ch4_budget("code_compile", "gpu") == CH4_BUDGETS["gpu"]
