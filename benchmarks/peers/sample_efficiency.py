"""Sample efficiency of lit_align's DPG against disco's DPGTuner (disco-generation 1.1.1) on identical work.

    python benchmarks/peers/sample_efficiency.py                       # SmolLM2, 40 steps × 32 samples, lr 1e-5
    python benchmarks/peers/sample_efficiency.py --model tiny --steps 3 --curve 1 --curve-samples 32 \\
        --samples 8 --tokens 8 --pattern e --z-samples 64 --force --out /tmp/se_dry   # dry run

Target p(x) ∝ a(x)·b(x): a the base LM after "The movie was", b(x) = 1 if ``--pattern`` matches
the completion. First log Z = log E_a[b] is estimated once from ``--z-samples`` base samples
(lit_align's sampler, fixed seed); then each side trains on-policy DPG (fp32, same model folder,
prompt, samples per step, new tokens, micro-batch, lr, threads), each in its own process: lit_align
with the project's Python, disco in its venv without its no-op per-position logits loop (its best
configuration; see dpg_disco.py). At step 0 and every ``--curve`` steps each side draws
``--curve-samples`` fresh samples of its policy and prints E_π[b], KL(p‖π) and KL(π‖a), with the
same estimator (``_measure.target_distances``) and the same log Z. Writes OUT.md (settings, log Z,
both curves, the samples each side needed to first reach a few KL(p‖π) levels), OUT.json (the raw
CURVE and RESULT lines) and OUT.png (matplotlib, if importable).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
PROMPT = "The movie was"
POSITIVE = r"\b(good|great|best|amazing|fun|funny|love|loved|enjoy\w*)\b"
Z_BOUNDS = (0.02, 0.9)  # outside: almost no training signal, or almost nothing to learn
LEVELS = (0.25, 0.5, 0.75, 0.9)
# KL(p‖π) read everywhere in the report: the self-normalised importance-sampling estimate (divided by
# the mean weight: exactly −log Z at step 0, lower variance; the plain estimate is in the JSON)
KL = "kl_p_pi_sn"  # KL(p‖π) levels: these fractions of the way from −log Z to the best reached


def estimate_log_z(folder: str, pattern: str, n: int, tokens: int, seed: int, threads: int) -> tuple[float, float]:
    """(log Z, Z's binomial standard error), Z = mean b over ``n`` samples of the base (lit_align's sampler)."""
    import torch

    from lit_align.models import Policy, load

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, tok = load(folder)
    policy, rx, hits = Policy(tok, max_new_tokens=tokens), re.compile(pattern), 0
    for start in range(0, n, 64):
        samples = policy.sample(model, [PROMPT], min(64, n - start))
        hits += sum(rx.search(t) is not None for t in samples.texts)
    z = hits / n
    return (math.log(z) if z > 0 else -math.inf), math.sqrt(z * (1 - z) / n)


def run_side(python: Path | str, script: str, args: list[str], threads: int) -> dict:
    """Run one driver; its CURVE lines (echoed as they come), its RESULT and its wall time."""
    cmd = [str(python), str(HERE / script), *args]
    print("  $", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)}
    curve, result, t0 = [], None, time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
        tail = []
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if line.startswith("CURVE "):
                curve.append(json.loads(line[6:]))
                print("   ", line.strip(), flush=True)
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        if proc.wait() or result is None:
            err.seek(0)
            raise RuntimeError(f"{script} failed:\n{''.join(tail)}\n{err.read()[-4000:]}")
    return {"curve": curve, "result": result, "wall_s": time.perf_counter() - t0}


def first_reach(curve: list[dict], level: float) -> int | None:
    """Training samples seen at the first evaluation with KL(p‖π) ≤ ``level`` (None: never)."""
    return next((c["samples_seen"] for c in curve if c[KL] <= level), None)


def command_of(args) -> str:
    """The flags that set the work (to print the command that regenerates a report)."""
    return (f"--model {args.model} --steps {args.steps} --samples {args.samples} --tokens {args.tokens} "
            f"--minibatch {args.minibatch} --lr {args.lr:g} --curve {args.curve} --curve-samples {args.curve_samples} "
            f"--pattern '{args.pattern}'" + (f" --seed {args.seed}" if getattr(args, "seed", 0) else ""))


def report(args, log_z: float, z_se: float, sides: dict[str, dict]) -> str:
    """The Markdown report: settings, log Z, both curves, samples to reach KL(p‖π) levels."""
    ours, peer = sides["lit_align"]["curve"], sides["disco"]["curve"]
    lines = [
        "# Sample efficiency: lit_align DPG vs disco DPGTuner",
        "",
        f"Measured by `python benchmarks/peers/sample_efficiency.py {command_of(args)}` ({machine()}).",
        "",
        f"- model `{args.model}`, prompt \"{PROMPT}\", target p(x) ∝ a(x)·b(x), b(x) = 1 if `{args.pattern}` "
        "matches the completion (re.search)",
        f"- on-policy DPG with the π/q baseline (GDC++) on both sides, fp32, {args.steps} steps × {args.samples} "
        f"samples × {args.tokens} new tokens, micro-batch {args.minibatch}, Adam lr {args.lr:g}, "
        f"{args.threads} thread(s) per side; disco 1.1.1 DPGTuner without its no-op per-position logits loop",
        f"- evaluation at step 0 and every {args.curve} steps: {args.curve_samples} fresh samples of the policy, "
        "E_π[b], KL(p‖π) by importance sampling from π (Khalifa et al. 2021, arXiv:2012.11635) and KL(π‖a), "
        "one estimator for both sides (`_measure.target_distances`); not counted in the step times",
        f"- **log Z = {log_z:.4f}** (Z = E_a[b] = {math.exp(log_z):.4f}"
        + (" given with --log-z" if math.isnan(z_se) else f" ± {z_se:.4f} from {args.z_samples} base samples, seed {args.z_seed}")
        + f"); KL(p‖a) = −log Z = {-log_z:.4f}",
        "",
        "| step | samples seen | lit_align E_π[b] | lit_align KL(p‖π) | lit_align KL(π‖a) "
        "| disco E_π[b] | disco KL(p‖π) | disco KL(π‖a) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_step = {c["step"]: c for c in peer}
    for c in ours:
        d = by_step.get(c["step"])
        theirs = (f"{d['E_pi_b']:.3f} | {d[KL]:.3f} | {d['kl_pi_a']:.3f}" if d else "– | – | –")
        lines.append(f"| {c['step']} | {c['samples_seen']} | {c['E_pi_b']:.3f} | {c[KL]:.3f} | "
                     f"{c['kl_pi_a']:.3f} | {theirs} |")
    start = max([-log_z] + [c[0][KL] for c in (ours, peer) if c])  # no level "reached" by step-0 noise
    best = min(c[KL] for c in ours + peer)
    last = args.steps * args.samples
    lines += ["", f"Samples each side needed to first reach KL(p‖π) ≤ level (levels between {start:.3f}, the "
              f"larger of −log Z and both step-0 estimates, and the best reached, {best:.3f}; resolution: one "
              f"evaluation every {args.curve * args.samples} samples; \"> r\" or \"< r\": disco or lit_align did not reach it "
              f"in {last} samples):", "", "| KL(p‖π) level | lit_align samples | disco samples | disco / lit_align |",
              "|---|---|---|---|"]
    for f in LEVELS if best < start else ():
        level = start - f * (start - best)
        a, b = first_reach(ours, level), first_reach(peer, level)
        if a and b:
            ratio = f"{b / a:.2f}"
        elif a and b is None:
            ratio = f"> {last / a:.2f}"
        elif b and a is None:
            ratio = f"< {b / last:.2f}"
        else:
            ratio = "–"
        lines.append(f"| {level:.3f} | {a if a is not None else 'not reached'} | "
                     f"{b if b is not None else 'not reached'} | {ratio} |")
    if best >= start:
        lines.append("| – | no side went below the start level | | |")
    step_s = {k: v["result"]["step_s"] for k, v in sides.items()}
    lines += ["", f"Median step time (s, evaluations excluded): lit_align {step_s['lit_align']:.2f}, "
              f"disco {step_s['disco']:.2f}; wall time of each process (loading and evaluations included): "
              f"lit_align {sides['lit_align']['wall_s']:.0f} s, disco {sides['disco']['wall_s']:.0f} s.",
              "", "Each KL(p‖π) value is the self-normalised importance-sampling estimate from "
              f"{args.curve_samples} samples (the plain estimate divided by the mean weight w_mean: exactly −log Z at "
              "step 0, biased but of lower variance); noisy where few samples satisfy b, so a \"first reach\" can "
              "move by an evaluation or two between seeds. The JSON file beside this one holds the plain estimate "
              "(kl_p_pi) and w_mean."]
    return "\n".join(lines) + "\n"


def write_report(out: Path, args, log_z: float, z_se: float, sides: dict[str, dict]) -> str:
    """Write OUT.md (the report, then the PNG's link) and OUT.png; the report's text."""
    text = report(args, log_z, z_se, sides) + "\n" + plot(sides, log_z, out.with_suffix(".png")) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


def plot(sides: dict[str, dict], log_z: float, path: Path) -> str:
    """E_π[b] and KL(p‖π) against training samples seen; a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no PNG"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, side in sides.items():
        x = [c["samples_seen"] for c in side["curve"]]
        ax1.plot(x, [c["E_pi_b"] for c in side["curve"]], marker="o", label=name)
        ax2.plot(x, [c[KL] for c in side["curve"]], marker="o", label=name)
    ax1.set(xlabel="training samples seen", ylabel="E_π[b]", title="constraint satisfaction")
    ax2.axhline(-log_z, color="grey", lw=0.8, ls="--", label="KL(p‖a) = −log Z")
    ax2.set(xlabel="training samples seen", ylabel="KL(p‖π)", title="distance to the target")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"![curves]({path.name})"


def machine() -> str:
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="tiny or smollm2 (benchmarks/peers/models.py)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--samples", type=int, default=32, help="training samples per step")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per sample")
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-5,
                    help="Adam lr, both sides (1e-4 drove KL(π‖a) to 6 nats in 6 steps: a full fine-tune diverges)")
    ap.add_argument("--pattern", default=POSITIVE,
                    help="regex b(x) on the completion (default: a positive word; Z ≈ 0.06 on SmolLM2)")
    ap.add_argument("--curve", type=int, default=5, help="evaluate every N steps (and at step 0)")
    ap.add_argument("--curve-samples", type=int, default=256)
    ap.add_argument("--z-samples", type=int, default=1024, help="base samples estimating Z = E_a[b]")
    ap.add_argument("--z-seed", type=int, default=0)
    ap.add_argument("--log-z", type=float, default=None, help="skip the estimate: log Z measured before (Z's SE unknown)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0, help="training seed of both sides (and of the curve's samples)")
    ap.add_argument("--force", action="store_true", help=f"run even if Z is outside {Z_BOUNDS} (dry runs)")
    ap.add_argument("--out", default=str(HERE / "sample_efficiency"), help="writes OUT.md, OUT.json, OUT.png")
    ap.add_argument("--report-only", action="store_true", help="rewrite OUT.md and OUT.png from OUT.json")
    args = ap.parse_args()
    if args.report_only:
        out = Path(args.out)
        saved = json.loads(out.with_suffix(".json").read_text())
        run_args = argparse.Namespace(**saved["args"])
        sides = {k: saved[k] for k in ("lit_align", "disco")}
        print(write_report(out, run_args, saved["log_z"], saved["z_se"], sides))
        return
    sys.path.insert(0, str(HERE))
    import models
    from run import peer_python

    folder = str(models.folder(args.model))
    if args.log_z is None:
        print(f"estimating Z = E_a[b] for {args.pattern!r} from {args.z_samples} base samples ...", flush=True)
        log_z, z_se = estimate_log_z(folder, args.pattern, args.z_samples, args.tokens, args.z_seed, args.threads)
    else:
        log_z, z_se = args.log_z, math.nan
    z = math.exp(log_z)
    print(f"base rate Z = {z:.4f} ± {z_se:.4f}, log Z = {log_z:.4f}", flush=True)
    if z == 0:
        raise SystemExit(f"no base sample matches {args.pattern!r}: Z = 0, DPG has no signal; choose another pattern")
    if not Z_BOUNDS[0] <= z <= Z_BOUNDS[1] and not args.force:
        raise SystemExit(f"base rate Z = {z:.4f} of {args.pattern!r} is outside {Z_BOUNDS}: "
                         + ("too few satisfying samples for a training signal" if z < Z_BOUNDS[0]
                            else "the base already satisfies it, nothing to learn")
                         + "; choose another --pattern (or --force)")
    common = [folder, "--steps", str(args.steps), "--samples", str(args.samples), "--tokens", str(args.tokens),
              "--minibatch", str(args.minibatch), "--threads", str(args.threads), f"--lr={args.lr!r}",
              f"--pattern={args.pattern}", "--curve", str(args.curve), "--curve-samples", str(args.curve_samples),
              f"--log-z={log_z!r}", "--seed", str(args.seed)]
    sides = {}
    print("lit_align:", flush=True)
    sides["lit_align"] = run_side(sys.executable, "dpg_lit_align.py", common, args.threads)
    print("disco:", flush=True)
    sides["disco"] = run_side(peer_python("disco"), "dpg_disco.py", common + ["--skip-warp-loop"], args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "log_z": log_z, "z_se": z_se, **sides}, indent=1))
    text = write_report(out, args, log_z, z_se, sides)
    print("\n" + text + f"\nwritten: {out.with_suffix('.md')}", flush=True)


if __name__ == "__main__":
    main()
