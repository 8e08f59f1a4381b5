"""The performance goals of the peers' benchmark, checked against one run of ``run.py``.

Each goal names the row (or the sampling ratio line) it reads, the measured value, met or not
and, for a goal not met, the measured floor and why (the reasons measured elsewhere in
``benchmarks/``, named in each line). Read by ``run.py``; no timing happens here.
"""

from __future__ import annotations

import re

# The peer row each DPG goal reads (names from run.pairs).
DPG_BF16 = "DPG, lit_align bf16"
DPG_BF16_NO_LOOP = "DPG, lit_align bf16, disco without its warp loop"
DPG_MB32 = "DPG, micro-batch 32 both: lit_align bf16, disco without its warp loop"
RLOO = ("RLOO, fp32 both", "RLOO, bf16 both")
DPO = ("DPO, fp32 both (trl: its default checkpointing)", "DPO, fp32 both, checkpointing both",
       "DPO, fp32 both, checkpointing neither", "DPO, bf16 both (trl: its default checkpointing)",
       "DPO, bf16 both, checkpointing neither")

DPG_STEP_BOUND_S = 5.5  # within 2× of ≈ 2.8 s, the bf16 matrix-unit bound of one SmolLM2 DPG step (1.7 TFLOP)

FLOORS = {
    "dpg_step": "the step's matrix multiplies run at ≈ 310 GFLOP/s, half this CPU's bf16 peak, and sampling is "
                "bound by the per-operator cost of 32 decoding steps through the HF model; a compiled decoding "
                "step was slower on this CPU (benchmarks/results/perf/profile_dpg.md, compile_decode.md)",
    "memory": "a full fine-tune with fp32 weights, gradients and Adam (2.2 GB for 135 M parameters) plus the bf16 "
              "frozen base (0.27 GB) is 2.4 GB ≈ 0.49 of disco before the process itself (≈ 0.4 GB); the rest is "
              "autocast's bf16 weight copies and one micro-batch's activations. LoRA r16 (other work) is 0.42",
    "rloo_fp32": "in fp32 the sampler runs at this CPU's fp32 matmul bound (76% of sampling time is aten::mm), "
                 "so it cannot gain much over trl's generate; bf16 sampling can",
    "dpo": "both sides run the same policy forward+backward; lit_align saves trl's per-step reference forward "
           "(one of ≈ 4 forward-equivalents of a step: ≈ 1.33× from that alone, cached once) and its second "
           "model; the memory bar is met where both sides checkpoint or neither does, the speed bar only where "
           "trl checkpoints and lit_align does not",
}


def _row(rows: list[dict], work: str, model: str) -> dict | None:
    return next((r for r in rows if r["work"] == work and r["model"] == model), None)


def _speed(r: dict) -> float:
    a, b = r["ours"], r["peer"]
    unit = next(k for k in a if k.endswith("_per_s"))
    return a[unit] / b[unit]


def _memory(r: dict) -> float:
    return r["ours"]["peak_rss_mb"] / r["peer"]["peak_rss_mb"]


def _verdict(ok: bool, floor: str | None) -> str:
    return "**met**" if ok else "**not met**" + (f": {floor}" if floor else "")


def sampling_ratio(lines: list[str], x: str, y: str) -> float | None:
    """tokens/s of ``x`` over ``y`` from sampler_vs_generate's ``ratio x/y:`` line."""
    for line in lines:
        if line.startswith(f"ratio {x}/{y}:"):
            m = re.search(r"tokens/s ([0-9.]+)x", line)
            return float(m.group(1)) if m else None
    return None


def goal_lines(rows: list[dict], sampling: list[str], model: str = "smollm2") -> list[str]:
    """One Markdown bullet per goal the run measured (goals whose rows were not run are left out)."""
    out = []
    r = _row(rows, DPG_BF16_NO_LOOP, model)
    if r:
        out.append(f"DPG bf16 ≥ 2× disco without its warp loop: {_speed(r):.2f}× — {_verdict(_speed(r) >= 2, None)}")
    r = _row(rows, DPG_BF16, model)
    if r:
        out.append(f"DPG bf16 ≥ 4× disco as shipped: {_speed(r):.2f}× — {_verdict(_speed(r) >= 4, None)}")
        steps = [x for x in (r, _row(rows, DPG_BF16_NO_LOOP, model), _row(rows, DPG_MB32, model)) if x]
        best = min(steps, key=lambda x: x["ours"]["step_s"])
        s = best["ours"]["step_s"]
        out.append(f"DPG bf16 step ≤ {DPG_STEP_BOUND_S} s: {s:.2f} s (fastest DPG bf16 row, {best['work']}) — "
                   + _verdict(s <= DPG_STEP_BOUND_S, FLOORS["dpg_step"]))
    dpg = [x for x in rows if x["work"].startswith("DPG") and x["model"] == model]
    if dpg:
        best = min(dpg, key=_memory)
        out.append(f"DPG peak memory ≤ 0.5 of disco's (full fine-tune): {_memory(best):.2f} at best ({best['work']}) — "
                   + _verdict(_memory(best) <= 0.5, FLOORS["memory"]))
    for work in RLOO:
        r = _row(rows, work, model)
        if r:
            floor = FLOORS["rloo_fp32"] if "fp32" in work else None
            out.append(f"{work}: ≥ 2× trl's RLOOTrainer: {_speed(r):.2f}× — {_verdict(_speed(r) >= 2, floor)}")
    dpo = [x for x in (_row(rows, w, model) for w in DPO) if x]
    if dpo:
        ok = [x for x in dpo if _speed(x) >= 1.5 and _memory(x) <= 0.8]
        best = max(dpo, key=lambda x: (_memory(x) <= 0.8, _speed(x)))
        out.append(f"DPO ≥ 1.5× trl's DPOTrainer at ≤ 0.8 of its memory: best row {best['work']}, "
                   f"{_speed(best):.2f}× at {_memory(best):.2f} — {_verdict(bool(ok), FLOORS['dpo'])}")
    for x, y, goal in (("lit_align", "generate", 1.2), ("lit_align-bf16", "generate-bf16", 1.2),
                       ("lit_align-bf16", "generate", 2.0)):
        v = sampling_ratio(sampling, x, y)
        if v is not None:
            out.append(f"sampling with log-probs, {x} ≥ {goal}× {y} (tokens/s): {v:.2f}× — {_verdict(v >= goal, None)}")
    return [f"- {line}" for line in out]
