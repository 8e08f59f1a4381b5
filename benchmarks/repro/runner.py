"""Launch one fit per (method, learning rate, seed) through the lit_align CLI, resumably.

Each run is ``python -m lit_align fit --config RUN/config.yaml`` in a subprocess — the command
a user runs — with ``--ckpt_path last`` when an interrupted attempt left a checkpoint.
``RUN/config.yaml`` is a shipped config with the claim's overrides, plus what the runner needs:
a CSV logger in ``RUN/logs`` (the metrics it reads back), an ``AtomicCheckpoint`` in
``RUN/ckpt`` (what ``--ckpt_path last`` continues from) and the seed. A finished run writes
``RUN/done.json``; a sweep started again skips the runs that have one (with the same settings),
so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DONE = "done.json"


class RunFailed(RuntimeError):
    """A fit exited with an error; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Run:
    """One fit: ``config`` (a shipped config name or a path) with dotted-path ``overrides``."""

    method: str
    seed: int
    config: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    lr: float | None = None
    callbacks: tuple[dict, ...] = field(default=(), hash=False, compare=False)
    ckpt_every: int = 50
    stage: str = ""          # staged runs (e.g. reward model, then RL): each stage is a run
    final: bool = True       # the stage whose metrics are the run's result
    keep_checkpoints: bool = False  # a later stage starts from this stage's checkpoint
    wave: int = 0            # runs of wave k start after every run of wave k-1 (stages that read others)

    @property
    def fingerprint(self) -> str:
        """Hash of what the run does: a done run whose settings changed since is run again."""
        spec = [self.config, self.overrides, list(self.callbacks), self.seed, self.lr]
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def is_done(self, root: Path) -> bool:
        path = root / self.key / DONE
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("fingerprint") == self.fingerprint
        except (ValueError, OSError):
            return False

    @property
    def key(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", self.method).strip("_")
        lr = "" if self.lr is None else f"/lr{self.lr:g}"
        stage = f"/{self.stage}" if self.stage else ""
        return f"{slug}{lr}/seed{self.seed}{stage}"


def set_path(config: dict, dotted: str, value: Any) -> None:
    """``config["a"]["b"] = value`` for ``"a.b"``, creating dicts on the way."""
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)


def substitute(value: Any, root: Path) -> Any:
    """``{SWEEP}`` in strings → the sweep's folder (a stage reads another stage's files)."""
    if isinstance(value, str):
        return value.replace("{SWEEP}", str(root))
    if isinstance(value, dict):
        return {k: substitute(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, root) for v in value]
    return value


def load_config(name: str) -> dict:
    from lit_align.cli import resolve_config

    return yaml.safe_load(Path(resolve_config(name)).read_text())


def run_config(run: Run, root: Path, device: str) -> dict:
    """The config the run's subprocess gets (see the module docstring)."""
    run_dir = root / run.key
    config = load_config(run.config)
    for dotted, value in run.overrides.items():
        set_path(config, dotted, substitute(value, root))
    config["seed_everything"] = run.seed
    trainer = config.setdefault("trainer", {})
    trainer["accelerator"] = device
    trainer["enable_progress_bar"] = False
    trainer["default_root_dir"] = str(run_dir)
    trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                         "init_args": {"save_dir": str(run_dir), "name": "logs", "flush_logs_every_n_steps": 10}}
    kept = [cb for cb in trainer.get("callbacks") or [] if "Checkpoint" not in cb.get("class_path", "")]
    checkpoint = {"class_path": "lit_align.callbacks.AtomicCheckpoint",
                  "init_args": {"dirpath": str(run_dir / "ckpt"), "save_last": True, "save_top_k": 0,
                                "every_n_train_steps": run.ckpt_every}}
    trainer["callbacks"] = kept + [copy.deepcopy(cb) for cb in run.callbacks] + [checkpoint]
    return config


def command(config_path: Path) -> list[str]:
    """The fit; ``--ckpt_path last`` when an interrupted fit left a checkpoint to continue from."""
    resume = any((config_path.parent / "ckpt").glob("last*.ckpt"))
    fit = [sys.executable, "-m", "lit_align", "fit", "--config", str(config_path)]
    return fit + (["--ckpt_path", "last"] if resume else [])


def execute(run: Run, root: Path, device: str = "cpu", threads: int = 1, env: dict | None = None) -> bool:
    """Run ``run`` under ``root/run.key`` unless it is done; True if it ran now."""
    run_dir = root / run.key
    if run.is_done(root):
        return False
    if (run_dir / DONE).is_file():  # done with other settings: start again
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(run_config(run, root, device), sort_keys=False, allow_unicode=True))
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    start = time.time()
    with open(run_dir / "log.txt", "a") as log:
        cmd = command(config_path)
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=run_dir, env=full_env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = (run_dir / "log.txt").read_text(errors="replace")[-3000:]
        raise RunFailed(f"{run.key} exited with status {rc}; log {run_dir / 'log.txt'}:\n{tail}")
    (run_dir / DONE).write_text(json.dumps({"method": run.method, "lr": run.lr, "seed": run.seed, "config": run.config,
                                            "fingerprint": run.fingerprint, "seconds": round(time.time() - start, 1)}))
    return True


def read_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged scalar of the run: ``{name: [(step, value), ...]}`` sorted by step.

    Reads the CSV logs of every version (a resumed fit logs into a new version); a step
    logged twice keeps the value of the later version."""
    series: dict[str, dict[int, float]] = {}
    versions = sorted((run_dir / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    for version in versions:
        path = version / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if step in (None, ""):
                    continue
                for name, value in row.items():
                    if name != "step" and value not in (None, ""):
                        series.setdefault(name, {})[int(float(step))] = float(value)
    return {name: sorted(points.items()) for name, points in series.items()}
