"""The peers' benchmark reads its goals right: met / not met from the rows' ratios (benchmarks/peers/goals.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))

import goals  # noqa: E402


def row(work, ours_rate, peer_rate, ours_mb, peer_mb, step_s=None, unit="samples", phases=None):
    ours = {f"{unit}_per_s": ours_rate, "peak_rss_mb": ours_mb, "step_s": step_s or 32 / ours_rate, "phases": phases}
    return {"work": work, "model": "smollm2", "ours": ours,
            "peer": {"name": "peer", f"{unit}_per_s": peer_rate, "peak_rss_mb": peer_mb}}


def line(lines, start):
    return next(x for x in lines if x.startswith(f"- {start}"))


def test_dpg_goals_read_speed_step_time_and_memory():
    rows = [row(goals.DPG_BF16, 4.4, 1.0, 3000, 5000, step_s=7.3),
            row(goals.DPG_BF16_NO_LOOP, 4.2, 2.0, 2400, 5000, step_s=7.6),
            row(goals.DPG_MB32, 5.0, 2.2, 4000, 6000, step_s=5.4)]
    out = goals.goal_lines(rows, [])
    assert line(out, "DPG bf16 ≥ 4×").endswith("4.40× at micro-batch 8 — **met**")
    # judged where both sides run their fastest configuration (one micro-batch of 32)
    assert line(out, "DPG bf16 ≥ 2×").endswith("2.10× at micro-batch 8, 2.27× at micro-batch 32 — **met**")
    slow_mb32 = [rows[1], row(goals.DPG_MB32, 5.0, 2.6, 4000, 6000)]
    assert line(goals.goal_lines(slow_mb32, []), "DPG bf16 ≥ 2×").endswith("1.92× at micro-batch 32 — **not met**")
    step = line(out, "DPG bf16 step")
    assert "5.40 s" in step and "micro-batch 32" in step and "**met**" in step
    mem = line(out, "DPG peak memory")
    assert "0.48 at best" in mem and "**met**" in mem  # 2400 / 5000, the smallest ratio of the three


def test_unmet_goals_say_so_with_their_floor():
    rows = [row(goals.DPG_BF16, 3.9, 1.0, 3700, 5000, step_s=7.5),
            row("RLOO, fp32 both", 2.2, 1.5, 4000, 3600, phases={"forward_backward": 6.0, "sampling": 4.0, "log_probs": 1.5}),
            row("RLOO, bf16 both", 4.0, 2.0, 3700, 3800),
            row(goals.DPO[0], 1.3, 0.8, 4100, 4130, unit="pairs"),  # fast enough (1.62×), too much memory
            row(goals.DPO[1], 1.1, 0.8, 3270, 4170, unit="pairs")]  # lean enough, too slow
    out = goals.goal_lines(rows, ["ratio lit_align/generate: time (median) 0.80x  tokens/s 1.25x  samples/s 1.25x",
                                  "ratio lit_align-bf16/generate: time (median) 0.52x  tokens/s 1.93x  samples/s 1.93x"])
    assert "**not met**" in line(out, "DPG bf16 ≥ 4×")
    assert "**not met**: the step's matrix multiplies" in line(out, "DPG bf16 step")
    # trl's step 32 / 1.5 = 21.33 s: a 2× step is 10.67 s, of which the gradient pass alone takes 6 s
    rloo = line(out, "RLOO, fp32 both")
    assert "**not met**: a 2× step would take 10.67 s" in rloo and "takes 6.00 s of it, leaving 4.67 s" in rloo
    assert "that take 5.50 s here" in rloo  # sampling 4 s + base pass 1.5 s
    assert line(out, "RLOO, bf16 both").endswith("2.00× at micro-batch 8 — **met**")
    dpo = line(out, "DPO ≥ 1.5×")
    assert "memory bar DPO, fp32 both, checkpointing both, 1.38× at 0.78" in dpo and "**not met**" in dpo
    assert "leanest row at the speed bar DPO, fp32 both (trl: its default checkpointing), 1.62× at 0.99" in dpo
    assert "1.25× — **met**" in line(out, "sampling with log-probs, lit_align ≥ 1.2× generate")
    assert line(out, "sampling with log-probs in bf16 ≥ 2.0×").endswith("lit_align-bf16 1.93× — **not met**")
    assert not any("generate-bf16" in x for x in out)  # a ratio the run did not print is left out


def test_a_dpo_row_meeting_both_bars_meets_the_goal():
    rows = [row(goals.DPO[4], 1.6, 1.0, 3900, 5200, unit="pairs")]
    assert "1.60× at 0.75 — **met**" in line(goals.goal_lines(rows, []), "DPO ≥ 1.5×")


def test_speed_goals_are_judged_on_each_sides_fastest_configuration():
    """Where a micro-batch-32 row was run (each side's fastest configuration) it decides the goal; the
    micro-batch-8 row is shown beside it."""
    rows = [row(goals.DPG_BF16, 3.0, 1.0, 3700, 5500),
            row(goals.DPG_MB32_SHIPPED, 6.3, 1.5, 4200, 6800),
            row(goals.DPG_MB32.replace("bf16", "bf16 + checkpointing"), 5.8, 3.0, 3300, 6800, step_s=5.5),
            row("RLOO, fp32 both", 3.2, 2.3, 4200, 3600),
            row("RLOO, micro-batch 32 both, fp32 both", 3.9, 2.4, 4800, 4400,
                phases={"forward_backward": 4.0, "sampling": 2.9, "log_probs": 1.2}),
            row("RLOO, bf16 both", 4.3, 2.6, 3900, 3800),
            row("RLOO, micro-batch 32 both, bf16 both", 6.3, 2.8, 4300, 4400)]
    sampling = ["ratio lit_align-bf16/generate: time (median) 0.55x  tokens/s 1.82x  samples/s 1.82x",
                "ratio lit_align-bf16-cast/generate: time (median) 0.46x  tokens/s 2.18x  samples/s 2.18x",
                "ratio lit_align-bf16-cast/generate-bf16-cast: time (median) 0.63x  tokens/s 1.59x  samples/s 1.59x"]
    out = goals.goal_lines(rows, sampling)
    assert line(out, "DPG bf16 ≥ 4×").endswith("3.00× at micro-batch 8, 4.20× at micro-batch 32 — **met**")
    assert "0.49 at best" in line(out, "DPG peak memory") and "**met**" in line(out, "DPG peak memory")
    fp32 = line(out, "RLOO, fp32 both")
    assert "1.39× at micro-batch 8, 1.62× at micro-batch 32 — **not met**" in fp32
    assert "a 2× step would take 6.67 s" in fp32  # trl's micro-batch-32 step, 32 / 2.4 s, halved
    assert line(out, "RLOO, bf16 both").endswith("1.65× at micro-batch 8, 2.25× at micro-batch 32 — **met**")
    assert line(out, "sampling with log-probs in bf16 ≥ 2.0×").endswith(
        "lit_align-bf16 1.82×, lit_align-bf16-cast 2.18× — **met**")
    assert "1.59× — **met**" in line(out, "sampling with log-probs, lit_align-bf16-cast ≥ 1.2× generate-bf16-cast")
