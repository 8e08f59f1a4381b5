"""Run a claim's sweep (resumably, optionally several fits at once) and read its results back."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.repro.runner import Run, execute, read_metrics


def sweep(runs: list[Run], root: Path, device: str = "cpu", threads: int = 1, max_runs: int | None = None,
          jobs: int = 1, log=print) -> list[str]:
    """Run every run not done yet, wave after wave (at most ``max_runs`` of them, ``jobs`` at a
    time); the keys of those run now. A failure stops the sweep (the runs done so far stay done)."""
    todo = [r for r in runs if not r.is_done(root)]
    if max_runs is not None:
        todo = todo[:max_runs]
    ran: list[str] = []

    def one(run: Run) -> str:
        log(f"[{runs.index(run) + 1}/{len(runs)}] {run.key} ...", flush=True)
        execute(run, root, device, threads)
        if not run.keep_checkpoints:
            shutil.rmtree(root / run.key / "ckpt", ignore_errors=True)
        return run.key

    for wave in sorted({r.wave for r in todo}):
        batch = [r for r in todo if r.wave == wave]
        if jobs <= 1:
            ran += [one(r) for r in batch]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                ran += list(pool.map(one, batch))
    return ran


def pending(runs: list[Run], root: Path) -> list[Run]:
    return [r for r in runs if not r.is_done(root)]


def collect(runs: list[Run], root: Path) -> dict:
    """``{method: {lr: {seed: curves}}}`` of the done runs (the final stage of staged runs)."""
    results: dict = {}
    for run in runs:
        if not run.final or not run.is_done(root):
            continue
        results.setdefault(run.method, {}).setdefault(run.lr, {})[run.seed] = read_metrics(root / run.key)
    return results
