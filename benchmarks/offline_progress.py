"""Does each offline config show progress within ten minutes on a laptop? Run and measured.

Each config runs as shipped, ``python -m lit_align fit --config C --trainer.max_time 00:00:10:00``
(stopped by Lightning after ten minutes — five for the configs whose steps take seconds: DPO, the
reward model, PHF — a checkpoint saved), in its own folder
``--workdir/<config>``; then its TensorBoard log is read. Per config it prints the wall time of
the whole command, the time from the command's start to the first logged training step, the
steps done, and the config's key metrics first → last (mean of the first 3 and of the last 3
logged values; validations listed in full):

- CDPG (Korbak et al. 2022, arXiv:2112.00791): E[b] on the policy's samples (``train/scorer/*``)
  and KL(π‖a);
- DPO (Rafailov et al. 2023, arXiv:2305.18290, §4): the preference loss and the implicit-reward
  accuracy; the reward model: its loss and accuracy;
- PHF (Korbak et al. 2023, arXiv:2302.08582, §3): the training loss and the validation misalignment.

A config whose ``<config>.json`` exists in ``--out`` is not rerun (the sweep can be stopped and
restarted). Run it alone: the ten minutes are wall-clock minutes of a quiet 2-core machine.

    python benchmarks/offline_progress.py                      # every *_offline config
    python benchmarks/offline_progress.py cdpg_translate_offline --minutes 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from quickstart_timing import add_sweep_arguments, first_last, parse_sweep_arguments, read_scalars, sweep  # noqa: E402

CONFIGS = ["cdpg_translate_offline", "cdpg_summarize_offline", "cdpg_code_compile_offline", "cdpg_code_pep8_offline",
           "dpo_sentiment_offline", "reward_model_sentiment_offline", "phf_pep8_offline"]
#: configs that train in seconds per step: five minutes show what ten would
SHORTER = {"dpo_sentiment_offline": 5.0, "reward_model_sentiment_offline": 5.0, "phf_pep8_offline": 5.0}
#: tags (regular expressions) worth showing, per kind of config
KEY_TAGS = [r"train/scorer/[^/]+$", r"train/kl_policy_base$", r"train/loss$", r"train/(reward_)?accuracy$",
            r"val/scorer/[^/]+$", r"val/loss$", r"val/(reward_)?accuracy$", r"val/expected_accuracy$", r"val/accuracy_ceiling$",
            r"val/win_rate$", r"val/judge_.*", r"val/.*misalign.*", r"val/sampling/.*"]


def run_config(config: str, workdir: Path, minutes: float, extra: list[str]) -> dict:
    folder = workdir / config
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    limit = f"00:00:{int(minutes):02d}:{int(round(minutes % 1 * 60)):02d}"
    cmd = [sys.executable, "-m", "lit_align", "fit", "--config", config, "--trainer.max_time", limit,
           "--trainer.enable_progress_bar", "false", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start_wall = time.time()
    start = time.perf_counter()
    with (folder / "fit.log").open("w") as log:
        proc = subprocess.run(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    scalars = read_scalars(folder)
    train_steps = sorted({s for tag, pts in scalars.items() if tag.startswith("train/") for s, _, _ in pts})
    first_train = min((w for tag, pts in scalars.items() if tag.startswith("train/") for _, _, w in pts), default=None)
    keys = {tag: [(s, v) for s, v, _ in pts] for tag, pts in scalars.items()
            if any(re.match(p, tag) for p in KEY_TAGS)}
    return {"config": config, "command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall,
            "first_step_s": None if first_train is None else first_train - start_wall,
            "steps": len(train_steps), "metrics": keys, "cpu_count": os.cpu_count(),
            "load_avg_at_end": os.getloadavg()}


def table(rows: list[dict]) -> str:
    lines = ["| config | rc | wall | first step logged after | steps | key metrics: train first 3 → last 3; val at each validation |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        parts = []
        for tag, pts in sorted(r["metrics"].items()):
            shown = first_last(pts) if tag.startswith("train/") else " → ".join(f"{v:.3g}" for _, v in pts)
            parts.append(f"{tag} {shown}")
        first = f"{r['first_step_s']:.0f} s" if r["first_step_s"] is not None else "-"
        lines.append(f"| {r['config']} | {r['returncode']} | {r['wall_s'] / 60:.1f} min | {first} | {r['steps']} | "
                     + "; ".join(parts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", default=CONFIGS)
    ap.add_argument("--minutes", type=float, default=None,
                    help="Lightning's max_time for each run (default 10; 5 for the DPO, reward-model and PHF configs)")
    add_sweep_arguments(ap, "offline_progress", "config")
    args, extra = parse_sweep_arguments(ap, argv)
    rows = sweep(list(args.configs), args.out, table, None if args.summarize else
                 lambda config: run_config(config, args.workdir.resolve(), args.minutes or SHORTER.get(config, 10.0), extra))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
