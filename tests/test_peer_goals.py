"""The peers' benchmark reads its goals right: met / not met from the rows' ratios (benchmarks/peers/goals.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))

import goals  # noqa: E402


def row(work, ours_rate, peer_rate, ours_mb, peer_mb, step_s=None, unit="samples"):
    ours = {f"{unit}_per_s": ours_rate, "peak_rss_mb": ours_mb, "step_s": step_s or 32 / ours_rate}
    return {"work": work, "model": "smollm2", "ours": ours,
            "peer": {"name": "peer", f"{unit}_per_s": peer_rate, "peak_rss_mb": peer_mb}}


def line(lines, start):
    return next(x for x in lines if x.startswith(f"- {start}"))


def test_dpg_goals_read_speed_step_time_and_memory():
    rows = [row(goals.DPG_BF16, 4.4, 1.0, 3000, 5000, step_s=7.3),
            row(goals.DPG_BF16_NO_LOOP, 4.2, 2.0, 2400, 5000, step_s=7.6),
            row(goals.DPG_MB32, 5.0, 2.2, 4000, 6000, step_s=5.4)]
    out = goals.goal_lines(rows, [])
    assert "4.40× — **met**" in line(out, "DPG bf16 ≥ 4×")
    assert "2.10× — **met**" in line(out, "DPG bf16 ≥ 2×")
    step = line(out, "DPG bf16 step")
    assert "5.40 s" in step and "micro-batch 32" in step and "**met**" in step
    mem = line(out, "DPG peak memory")
    assert "0.48 at best" in mem and "**met**" in mem  # 2400 / 5000, the smallest ratio of the three


def test_unmet_goals_say_so_with_their_floor():
    rows = [row(goals.DPG_BF16, 3.9, 1.0, 3700, 5000, step_s=7.5),
            row("RLOO, fp32 both", 2.2, 1.5, 4000, 3600),
            row("RLOO, bf16 both", 4.0, 2.0, 3700, 3800),
            row(goals.DPO[0], 1.3, 0.8, 4100, 4130, unit="pairs"),  # fast enough, too much memory
            row(goals.DPO[1], 1.1, 0.8, 3270, 4170, unit="pairs")]  # lean enough, too slow
    out = goals.goal_lines(rows, ["ratio lit_align/generate: time (median) 0.80x  tokens/s 1.25x  samples/s 1.25x",
                                  "ratio lit_align-bf16/generate: time (median) 0.52x  tokens/s 1.93x  samples/s 1.93x"])
    assert "**not met**" in line(out, "DPG bf16 ≥ 4×")
    assert "**not met**: the step's matrix multiplies" in line(out, "DPG bf16 step")
    assert "**not met**: in fp32" in line(out, "RLOO, fp32 both")
    assert line(out, "RLOO, bf16 both").endswith("2.00× — **met**")
    dpo = line(out, "DPO ≥ 1.5×")
    assert "checkpointing both, 1.38× at 0.78" in dpo and "**not met**" in dpo  # the best row within the memory bar
    assert "1.25× — **met**" in line(out, "sampling with log-probs, lit_align ≥ 1.2× generate")
    assert "1.93× — **not met**" in line(out, "sampling with log-probs, lit_align-bf16 ≥ 2.0× generate")
    assert not any("generate-bf16" in x for x in out)  # a ratio the run did not print is left out


def test_a_dpo_row_meeting_both_bars_meets_the_goal():
    rows = [row(goals.DPO[4], 1.6, 1.0, 3900, 5200, unit="pairs")]
    assert "1.60× at 0.75 — **met**" in line(goals.goal_lines(rows, []), "DPO ≥ 1.5×")
