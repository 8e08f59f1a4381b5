"""Time the quickstart as the README runs it, and show that E[b] rises, for several seeds.

Each seed runs ``python -m lit_align fit --config quickstart.yaml --seed_everything S`` in its own
folder (``--workdir/seed<S>``: its ``runs/`` holds the TensorBoard log and ``last.ckpt``), then its
TensorBoard log is read. Per seed it prints the wall time of the whole command, the median step
time (between consecutive logged training steps, validation steps excluded), and E[b]
(``scorer/positive``, the share of samples with VADER compound ≥ 0.5) first → last, for training
(``train/``: E_π[b], importance-weighted from the proposal's samples when off-policy; ``proposal``:
b on those samples) and validation (fresh samples of the policy at each validation).

One seed per process is enough: a seed whose ``seed<S>.json`` exists in ``--out`` is not rerun,
so ``for s in 1 2 3; do python benchmarks/quickstart_timing.py --seeds $s; done`` can be stopped
and restarted. ``--summarize`` only prints the table of the seeds already done. Timings are only
comparable on a quiet machine (nothing else running); say whether the machine was loaded.

    python benchmarks/quickstart_timing.py --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRIC = "scorer/positive"


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, value, wall_time), ...]}`` of every TensorBoard event file under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float, float]]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value, e.wall_time) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in out.items()}


def median_step_time(train: list[tuple[int, float, float]], val_steps: set[int]) -> float | None:
    """Median wall time between consecutive training steps, leaving out steps that ran a validation."""
    gaps = [b[2] - a[2] for a, b in zip(train, train[1:]) if b[0] == a[0] + 1 and a[0] + 1 not in val_steps]
    return statistics.median(gaps) if gaps else None


def run_seed(seed: int, workdir: Path, config: str, extra: list[str]) -> dict:
    folder = workdir / f"seed{seed}"
    shutil.rmtree(folder / "runs", ignore_errors=True)  # an interrupted earlier try's logs would mix in
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "lit_align", "fit", "--config", config, "--seed_everything", str(seed), *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with (folder / "fit.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    scalars = read_scalars(folder / "runs")
    train, val = scalars.get(f"train/{METRIC}", []), scalars.get(f"val/{METRIC}", [])
    return {
        "seed": seed, "command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall,
        "step_s": median_step_time(train, {s for s, _, _ in val}), "steps": len(train),
        "train": [(s, v) for s, v, _ in train], "val": [(s, v) for s, v, _ in val],
        # off-policy, train/ is importance-weighted (E_π[b] from q's samples); this is b on q's samples
        "proposal": [(s, v) for s, v, _ in scalars.get(f"train/proposal/{METRIC}", [])],
        "cpu_count": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def first_last(points: list, k: int = 3) -> str:
    """Mean of the first k → mean of the last k values (single values when fewer than 2k)."""
    values = [v for _, v in points]
    if not values:
        return "-"
    if len(values) < 2 * k:
        return f"{values[0]:.2f} → {values[-1]:.2f}"
    return f"{statistics.mean(values[:k]):.2f} → {statistics.mean(values[-k:]):.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| seed | rc | wall | step (median) | steps | train E[b] first 3 → last 3 | proposal b first 3 → last 3 "
             "| val E[b] each validation |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step = f"{r['step_s']:.1f} s" if r["step_s"] else "-"
        val = " → ".join(f"{v:.2f}" for _, v in r["val"]) or "-"
        lines.append(f"| {r['seed']} | {r['returncode']} | {r['wall_s'] / 60:.1f} min | {step} | {r['steps']} | "
                     f"{first_last(r['train'])} | {first_last(r.get('proposal', []))} | {val} |")
    return "\n".join(lines)


def sweep(names: list[str], out: Path, table, run=None) -> list[dict]:
    """Run ``run(name)`` for each name without ``out/<name>.json`` (None: run nothing), write that
    JSON, print the row as it lands; return the rows of every name done so far (resumable sweeps)."""
    for name in names if run is not None else []:
        path = out / f"{name}.json"
        if not path.exists():
            row = run(name)
            path.write_text(json.dumps(row, indent=1) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
    return [json.loads((out / f"{n}.json").read_text()) for n in names if (out / f"{n}.json").exists()]


def add_sweep_arguments(ap: argparse.ArgumentParser, name: str, what: str) -> None:
    """``--workdir runs/<name>``, ``--out benchmarks/results/<name>``, ``--summarize`` and the fit arguments after ``--``."""
    ap.add_argument("--workdir", type=Path, default=Path("runs") / name,
                    help=f"where each {what} runs (its checkpoint is large: not under benchmarks/)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results" / name)
    ap.add_argument("--summarize", action="store_true", help=f"only print the {what}s already done")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more fit arguments")


def parse_sweep_arguments(ap: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The parsed arguments (``--out`` created) and the extra fit arguments."""
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args, args.extra[1:] if args.extra[:1] == ["--"] else args.extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--config", default="quickstart.yaml")
    add_sweep_arguments(ap, "quickstart_timing", "seed")
    ap.set_defaults(out=ROOT / "benchmarks/results/quickstart")
    args, extra = parse_sweep_arguments(ap, argv)
    rows = sweep([f"seed{s}" for s in args.seeds], args.out, table, None if args.summarize else
                 lambda name: run_seed(int(name[4:]), args.workdir.resolve(), args.config, extra))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
