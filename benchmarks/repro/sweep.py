"""Run a claim's sweep (resumably) and read its results back."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.repro.runner import Run, execute, read_metrics


def sweep(runs: list[Run], root: Path, device: str = "cpu", threads: int = 1, max_runs: int | None = None,
          log=print) -> list[str]:
    """Run every run not done yet (at most ``max_runs`` of them); the keys of those run now."""
    ran: list[str] = []
    for i, run in enumerate(runs, 1):
        if max_runs is not None and len(ran) >= max_runs:
            break
        if run.is_done(root):
            continue
        log(f"[{i}/{len(runs)}] {run.key} ...", flush=True)
        if execute(run, root, device, threads):
            ran.append(run.key)
            if not run.keep_checkpoints:
                shutil.rmtree(root / run.key / "ckpt", ignore_errors=True)
    return ran


def pending(runs: list[Run], root: Path) -> list[Run]:
    return [r for r in runs if not r.is_done(root)]


def collect(runs: list[Run], root: Path) -> dict:
    """``{method: {lr: {seed: curves}}}`` of the done runs (the last stage of staged runs)."""
    results: dict = {}
    for run in runs:
        if not run.final or not run.is_done(root):
            continue
        results.setdefault(run.method, {}).setdefault(run.lr, {})[run.seed] = read_metrics(root / run.key)
    return results
