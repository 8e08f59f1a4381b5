"""Sample efficiency over several seeds: lit_align DPG against disco DPGTuner, curves averaged.

    python benchmarks/peers/sample_efficiency.py --seed 1 --out benchmarks/peers/sample_efficiency_seed1 ...
    python benchmarks/peers/sample_efficiency_seeds.py benchmarks/peers/sample_efficiency.json \\
        benchmarks/peers/sample_efficiency_seed1.json --out benchmarks/peers/sample_efficiency_seeds

Reads the JSON of runs of ``sample_efficiency.py`` that differ only in ``--seed`` (the same work
otherwise: checked) and writes OUT.md and OUT.png: at each evaluation, each side's mean E_π[b],
KL(p‖π) and KL(π‖a) over the seeds, and the paired difference lit_align − disco of each with a
95% t-interval (seeds are the pairs: both sides of one seed share its log Z and evaluation seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, run as a script

from benchmarks.repro.stats import estimate  # noqa: E402

KL = "kl_p_pi_sn"
METRICS = (("E_pi_b", "E_π[b]"), (KL, "KL(p‖π)"), ("kl_pi_a", "KL(π‖a)"))
SAME_WORK = ("model", "steps", "samples", "tokens", "minibatch", "lr", "pattern", "curve", "curve_samples")


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (nan with one value): the reproductions' estimator."""
    e = estimate(xs)
    return e.mean, (e.high - e.mean) if e.n > 1 else math.nan


def load(paths: list[str]) -> list[dict]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no such file: {', '.join(missing)} (write it with sample_efficiency.py --seed N --out …)")
    if len(paths) < 2:
        raise SystemExit("give the JSON of at least two seeds")
    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]["args"]
    for p, r in zip(paths, runs):
        diff = [k for k in SAME_WORK if r["args"].get(k) != first.get(k)]
        if diff:
            raise SystemExit(f"{p}: not the same work as {paths[0]} ({', '.join(diff)} differ)")
    seeds = [r["args"].get("seed", 0) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the runs must have distinct seeds, got {seeds}")
    return runs


def curves(runs: list[dict]) -> list[dict]:
    """Per evaluation step present in every run and on both sides: each side's values and the differences."""
    steps = set.intersection(*({c["step"] for c in r[side]["curve"]} for r in runs for side in ("lit_align", "disco")))
    out = []
    for step in sorted(steps):
        at = [{side: next(c for c in r[side]["curve"] if c["step"] == step) for side in ("lit_align", "disco")}
              for r in runs]
        row = {"step": step, "samples_seen": at[0]["lit_align"]["samples_seen"]}
        for key, _ in METRICS:
            ours, theirs = [a["lit_align"][key] for a in at], [a["disco"][key] for a in at]
            row[key] = {"lit_align": mean_ci(ours), "disco": mean_ci(theirs),
                        "diff": mean_ci([x - y for x, y in zip(ours, theirs)])}
        out.append(row)
    return out


def pooled(runs: list[dict], steps: list[int], key: str) -> tuple[list[float], tuple[float, float]]:
    """Each seed's mean difference lit_align − disco of ``key`` over the evaluations after step 0, and
    the mean of those over seeds with its 95% t-interval: one number for the whole curve."""
    per_seed = []
    for r in runs:
        at = {side: {c["step"]: c[key] for c in r[side]["curve"]} for side in ("lit_align", "disco")}
        per_seed.append(statistics.fmean(at["lit_align"][s] - at["disco"][s] for s in steps if s > 0))
    return per_seed, mean_ci(per_seed)


def fmt(m: float, h: float) -> str:
    return f"{m:.3f}" if math.isnan(h) else f"{m:.3f} ± {h:.3f}"


def report(runs: list[dict], rows: list[dict], paths: list[str], out: Path) -> str:
    a = runs[0]["args"]
    seeds = [r["args"].get("seed", 0) for r in runs]
    lines = [
        "# Sample efficiency over seeds: lit_align DPG vs disco DPGTuner", "",
        f"`python benchmarks/peers/sample_efficiency_seeds.py {' '.join(paths)} --out {out}`: {len(runs)} runs of "
        f"`sample_efficiency.py` (seeds {', '.join(map(str, seeds))}), each {a['steps']} steps × {a['samples']} "
        f"samples × {a['tokens']} new tokens, Adam lr {a['lr']:g}, b = `{a['pattern']}` on model `{a['model']}`, "
        f"log Z = {runs[0]['log_z']:.4f}; {a['curve_samples']} fresh samples per evaluation. Means over seeds "
        "± the half-width of a 95% t-interval; the difference is lit_align − disco, paired by seed.", "",
    ]
    steps = [r["step"] for r in rows]
    lines += ["Averaged over the evaluations after step 0 (each seed's mean difference lit_align − disco, then the "
              "mean over seeds ± its 95% t-interval; KL(p‖π) lower is closer to the target):", ""]
    for key, name in METRICS:
        per_seed, (m, h) = pooled(runs, steps, key)
        lines.append(f"- {name}: {fmt(m, h)} (seeds: {', '.join(f'{x:+.3f}' for x in per_seed)})")
    lines.append("")
    for key, name in METRICS:
        lines += [f"### {name}", "", "| step | samples seen | lit_align | disco | lit_align − disco |", "|---|---|---|---|---|"]
        for r in rows:
            v = r[key]
            lines.append(f"| {r['step']} | {r['samples_seen']} | {fmt(*v['lit_align'])} | {fmt(*v['disco'])} | "
                         f"{fmt(*v['diff'])} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no PNG"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = [r["samples_seen"] for r in rows]
    for ax, (key, name) in zip(axes, METRICS):
        for side in ("lit_align", "disco"):
            m = [r[key][side][0] for r in rows]
            h = [0.0 if math.isnan(r[key][side][1]) else r[key][side][1] for r in rows]
            ax.plot(x, m, marker="o", label=side)
            ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)], alpha=0.2)
        ax.set(xlabel="training samples seen", ylabel=name, title=f"{name}, mean over seeds (95% CI)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"![curves]({path.name})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="JSON files written by sample_efficiency.py")
    ap.add_argument("--out", default=str(Path(__file__).parent / "sample_efficiency_seeds"))
    args = ap.parse_args()
    runs = load(args.runs)
    rows = curves(runs)
    out = Path(args.out)
    text = report(runs, rows, args.runs, out) + "\n" + plot(rows, out.with_suffix(".png")) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
