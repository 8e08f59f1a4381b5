"""Step time of two checkouts on identical work: did the house refactor (issue 17) slow a step?

Runs the same ``python -m lit_align fit`` command (one config file, the same overrides) in each
checkout, alternating, each in its own process; reads the per-phase seconds that ``PerfMonitor``
logs (``perf/*_s``) and reports the median step time after the first step, per side and as a
ratio old / new (> 1: the new checkout is faster).

    python benchmarks/house_speed.py --old /path/to/old/checkout            # SmolLM2 DPG, 6 steps
    python benchmarks/house_speed.py --old OLD --config OLD/configs/quickstart.yaml --repeats 2

Run it alone on a quiet machine: it measures wall-clock time.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ["--model.init_args.model=smollm2", "--model.init_args.n_samples=16", "--model.init_args.minibatch_size=8",
        "--model.init_args.max_new_tokens=32", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"]


def step_times(checkout: Path, config: str, steps: int, extra: list[str]) -> list[float]:
    """Seconds of each training step (the sum of PerfMonitor's phases) of one fit in ``checkout``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lit_align", "fit", "--config", config, *WORK, *extra,
               f"--trainer.max_steps={steps}", f"--trainer.default_root_dir={tmp}",
               "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp}",
               "--trainer.logger.name=run"]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"fit failed in {checkout}:\n{proc.stderr[-3000:]}")
        rows = list(csv.DictReader(next(Path(tmp).rglob("metrics.csv")).open()))
    per_step: dict[int, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("perf/") and key.endswith("_s") and value not in ("", None):
                per_step[int(row["step"])] = per_step.get(int(row["step"]), 0.0) + float(value)
    return [per_step[s] for s in sorted(per_step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    ap.add_argument("--new", type=Path, default=ROOT)
    ap.add_argument("--config", default=None, help="config file given to both (default: OLD/configs/quickstart.yaml)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="fits per side, alternating")
    ap.add_argument("extra", nargs="*", help="more CLI overrides for both sides")
    args = ap.parse_args()
    config = args.config or str(args.old / "configs" / "quickstart.yaml")
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.repeats):
        for side, checkout in (("old", args.old), ("new", args.new)):
            t = step_times(checkout.resolve(), config, args.steps, args.extra)[1:]  # the first step warms up
            times[side] += t
            print(f"repeat {r} {side}: " + " ".join(f"{x:.2f}" for x in t), flush=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"median step: old {old:.2f} s, new {new:.2f} s; old/new = {old / new:.3f} "
          f"(threads {os.environ.get('OMP_NUM_THREADS', 'default')}, {len(times['new'])} steps per side)")


if __name__ == "__main__":
    main()
