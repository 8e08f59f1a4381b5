"""CDPG vs its baselines on the offline code task (issue 4 benchmark; not a test).

Runs ``cdpg_code_compile_offline.yaml`` (or ``--task code_pep8``) with CDPG, then the same
task with DPG (one global Z), RL with a KL penalty and REINFORCE (the baseline configs in
``configs/cdpg_baselines/`` with the offline model and data of the CDPG config), all for
``--steps`` steps, and reports constraint satisfaction ``E_π[b]`` against ``KL(π‖a)`` over
training: a Markdown table (stdout and ``--out``/cdpg_code_baselines.md) and, when matplotlib
is installed (``pip install .[bench]``), ``--out``/cdpg_code_baselines.png. The runs' TensorBoard
logs go to ``--logs``.

    python benchmarks/cdpg_code_baselines.py --steps 50            # SmolLM2, offline (slow on CPU)
    python benchmarks/cdpg_code_baselines.py --steps 4 --model tiny-gpt2 --samples 4   # smoke run
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

METHODS = {
    "CDPG": "cdpg_{task}_offline.yaml",
    "DPG (global Z)": "cdpg_baselines/dpg_{task}.yaml",
    "RL-KL": "cdpg_baselines/rlkl_{task}.yaml",
    "REINFORCE": "cdpg_baselines/reinforce_{task}.yaml",
}
OFFLINE_DATA = [
    "--data.init_args.dataset=stdlib", "--data.init_args.docstring=true",
    "--data.init_args.prompt_template=Complete this Python function. Reply with the whole function in one "
    "Python code block.\n\n{source}",
]


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(log_dir)
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def scorer_name(args) -> str:
    return "compilable" if args.task == "code_compile" else "pep8"


def with_summary(scalars: dict, args, seconds: float) -> dict:
    """The run's scalars plus the table's inputs: wall seconds and the constraint's series."""
    scalars["_seconds"] = [(args.steps, seconds)]
    scalars["_constraint"] = scalars.get(f"train/scorer/{scorer_name(args)}", [])
    return scalars


def run(method: str, config: str, args, logs_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from lit_align.cli import main

    root = logs_dir / method.split()[0].lower()
    argv = ["fit", "--config", config, f"--trainer.max_steps={args.steps}", "--trainer.val_check_interval=1000000",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}", f"--model.init_args.model={args.model}",
            f"--model.init_args.n_samples={args.samples}", f"--model.init_args.minibatch_size={args.samples}",
            f"--model.init_args.max_new_tokens={args.max_new_tokens}", f"--model.init_args.lr={args.lr}",
            f"--model.init_args.chat_template={'true' if args.model == 'smollm2' else 'false'}",
            f"--data.init_args.contexts_per_step={args.contexts}", "--trainer.callbacks=[]"]
    if args.model != "smollm2":
        argv += ["--model.init_args.max_prompt_length=200"]
    if "baselines" in config:
        argv += OFFLINE_DATA
    t0 = time.perf_counter()
    main(argv)
    seconds = time.perf_counter() - t0
    logs = sorted(glob.glob(str(root / "**" / "events.out.tfevents.*"), recursive=True), key=os.path.getmtime)
    scalars = read_scalars(os.path.dirname(logs[-1]))
    return with_summary(scalars, args, seconds)


def from_logs(method: str, args, logs_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of an earlier run of ``method`` under ``logs_dir`` (all versions merged by step, so
    a run resumed with ``--ckpt_path`` counts once), for ``--from-logs``."""
    merged: dict[str, dict[int, float]] = {}
    dirs = {os.path.dirname(f) for f in glob.glob(str(logs_dir / method.split()[0].lower() / "**" / "events.out.tfevents.*"),
                                                  recursive=True)}
    for d in sorted(dirs, key=os.path.getmtime):
        for tag, series in read_scalars(d).items():
            merged.setdefault(tag, {}).update(dict(series))
    scalars = {tag: sorted(v.items()) for tag, v in merged.items()}
    return with_summary(scalars, args, float("nan"))


def main_(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["code_compile", "code_pep8"], default="code_compile")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--samples", type=int, default=8, help="samples per context")
    p.add_argument("--contexts", type=int, default=4, help="contexts per step")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--out", default="benchmarks/results", help="folder of the table and the PNG")
    p.add_argument("--logs", default="runs/cdpg_code_baselines", help="folder of the runs' TensorBoard logs")
    p.add_argument("--from-logs", action="store_true",
                   help="no training: the table and plot of the runs already in --logs (e.g. copied from a GPU machine)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_logs:
        results = {m: from_logs(m, args, Path(args.logs)) for m in METHODS}
        results = {m: s for m, s in results.items() if s["_constraint"]}
    else:
        results = {m: run(m, c.format(task=args.task), args, Path(args.logs)) for m, c in METHODS.items()}

    def last(series, k=5):
        vals = [v for _, v in series[-k:]]
        return sum(vals) / len(vals) if vals else float("nan")

    header = (f"task {args.task}, model {args.model}, {args.steps} steps × {args.contexts} contexts × {args.samples} "
              f"samples, max {args.max_new_tokens} new tokens, lr {args.lr}; E_π[b] and KL(π‖a) on each step's "
              "training samples")
    rows = ["| method | E_π[b] first | E_π[b] last 5 | KL(π‖a) last 5 | wall s (incl. load) |", "|---|---|---|---|---|"]
    for m, s in results.items():
        first = s["_constraint"][0][1] if s["_constraint"] else float("nan")
        rows.append(f"| {m} | {first:.3f} | {last(s['_constraint']):.3f} | "
                    f"{last(s.get('train/kl_policy_base', [])):.3f} | {s['_seconds'][0][1]:.0f} |".replace("| nan |", "| – |"))
    table = header + "\n\n" + "\n".join(rows)
    print(table)
    (out / "cdpg_code_baselines.md").write_text(table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m, s in results.items():
        axes[0].plot(*zip(*s["_constraint"]), label=m) if s["_constraint"] else None
        kl = s.get("train/kl_policy_base", [])
        if kl:
            axes[1].plot(*zip(*kl), label=m)
    axes[0].set(xlabel="step", ylabel="E_π[b]", title=f"constraint ({args.task})")
    axes[1].set(xlabel="step", ylabel="KL(π‖a)", title="distance from the base LM")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "cdpg_code_baselines.png", dpi=120)
    print(f"wrote {out / 'cdpg_code_baselines.png'}")


if __name__ == "__main__":
    main_()
