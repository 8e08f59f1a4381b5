"""Run lit_align and its peers on identical work, one process at a time, and print the ratios.

    python benchmarks/peers/run.py --readme             # every pair on SmolLM2, all cores: the README's block
    python benchmarks/peers/run.py --render benchmarks/peers/results.json --readme   # re-render, measure nothing
    python benchmarks/peers/run.py --only dpg,sampling --steps 4
    python benchmarks/peers/run.py --only rl,grpo --models tiny,smollm2   # grpo: RLOO β 0 without a base vs trl GRPO

Pairs (same model folder, prompt, samples per step, new tokens, micro-batch, lr, seed):
  dpg  lit_align DPG (on-policy, pointwise constraint)  vs  disco 1.1.1 DPGTuner, as shipped and without
       its per-position logits-processor loop (a no-op at these settings: its best configuration);
       at micro-batch 8 and, each side's fastest configuration, 32
  rl   lit_align RLOO (β 0.05)                           vs  trl 1.16 RLOOTrainer
  grpo lit_align RLOO (β 0, no frozen base)              vs  trl 1.16 GRPOTrainer (its default β = 0)
  dpo  lit_align DPO                                     vs  trl 1.16 DPOTrainer
Peers live in their own virtualenvs under benchmarks/peers/.venvs (created on first use from PyPI;
torch 2.13.0 CPU as the project's); the project's environment never installs them. Sampling vs plain
``generate`` is benchmarks/sampler_vs_generate.py (run here with ``--only sampling``).
Each side runs in a fresh process: its peak RSS is its own. Timings on a shared machine are noise:
run it alone (the script warns when the load average says otherwise). The run ends with the
performance goals it measured, met or not (benchmarks/peers/goals.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
VENVS = HERE / ".venvs"
PEER_REQS = {
    # disco 1.1.1 declares Python < 3.11 and pulls notebook/wandb/neptune/spacy it does not need to run
    "disco": [["transformers==4.41.2", "scipy", "datasets", "tqdm", "accelerate<1"],
              ["--no-deps", "--ignore-requires-python", "disco-generation==1.1.1"]],
    "trl": [["trl==1.16.0"]],
}


def peer_python(name: str) -> Path:
    py = VENVS / name / "bin" / "python"
    if py.exists():
        return py
    print(f"creating the {name} virtualenv in {VENVS / name} ...", flush=True)
    venv.EnvBuilder(with_pip=True).create(VENVS / name)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    for reqs in PEER_REQS[name]:
        subprocess.run(pip + reqs, check=True)
    return py


def run_side(python: Path | str, script: str, args: list[str]) -> dict:
    cmd = [str(python), str(HERE / script), *args]
    print("  $", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{script} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def pairs(only: set[str], bf16: bool) -> list[tuple[str, str, list[str], str, str, list[str]]]:
    """(work, our script, our args, peer venv, peer script, peer args): identical arithmetic (fp32 on
    both sides) first, then, with ``bf16``, lit_align with bf16 gradient passes against the peer
    as shipped (trl defaults to bf16 mixed precision; disco has no such option)."""
    bf = ["--grad-dtype", "bfloat16"]
    bf_all = bf + ["--sample-dtype", "bfloat16"]  # sampling too: log_q is the bf16 sampler's exact density
    # each side's fastest configuration: the whole step in one micro-batch of 32 (lit_align in bf16: its sampler
    # on weights cast to bf16)
    mb32, cast = ["--minibatch", "32"], ["--sample-cast-weights"]
    out = []
    if "dpg" in only:
        out.append(("DPG, fp32 both", "dpg_lit_align.py", [], "disco", "dpg_disco.py", []))
        # disco's best configuration: its no-op per-position logits loop skipped (same values)
        out.append(("DPG, fp32 both, disco without its warp loop", "dpg_lit_align.py", [], "disco", "dpg_disco.py",
                    ["--skip-warp-loop"]))
        if bf16:
            out.append(("DPG, lit_align bf16", "dpg_lit_align.py", bf_all, "disco", "dpg_disco.py", []))
            out.append(("DPG, lit_align bf16, disco without its warp loop", "dpg_lit_align.py", bf_all, "disco",
                        "dpg_disco.py", ["--skip-warp-loop"]))
            out.append(("DPG, micro-batch 32 both: lit_align bf16, disco without its warp loop", "dpg_lit_align.py",
                        bf_all + cast + mb32, "disco", "dpg_disco.py", ["--skip-warp-loop"] + mb32))
            out.append(("DPG, micro-batch 32 both: lit_align bf16, disco as shipped", "dpg_lit_align.py",
                        bf_all + cast + mb32, "disco", "dpg_disco.py", mb32))
            # for the memory goal: lit_align with checkpointing
            out.append(("DPG, micro-batch 32 both: lit_align bf16 + checkpointing, disco without its warp loop",
                        "dpg_lit_align.py", bf_all + cast + mb32 + ["--gradient-checkpointing"], "disco",
                        "dpg_disco.py", ["--skip-warp-loop"] + mb32))
    if "rl" in only:
        out.append(("RLOO, fp32 both", "rl_lit_align.py", [], "trl", "rl_trl.py", ["--trainer", "rloo", "--fp32"]))
        if bf16:
            out.append(("RLOO, bf16 both", "rl_lit_align.py", bf_all, "trl", "rl_trl.py", ["--trainer", "rloo"]))
        out.append(("RLOO, micro-batch 32 both, fp32 both", "rl_lit_align.py", mb32, "trl", "rl_trl.py",
                    ["--trainer", "rloo", "--fp32"] + mb32))
        if bf16:
            out.append(("RLOO, micro-batch 32 both, bf16 both", "rl_lit_align.py", bf_all + cast + mb32, "trl", "rl_trl.py", ["--trainer", "rloo"] + mb32))
    if "grpo" in only:  # trl's GRPO defaults to β = 0 and keeps no reference model: so does lit_align here
        grpo = ["--kl-coef", "0", "--no-base"]
        out.append(("RLOO β 0, no base vs GRPO, fp32 both", "rl_lit_align.py", grpo, "trl", "rl_trl.py",
                    ["--trainer", "grpo", "--fp32"]))
        if bf16:
            out.append(("RLOO β 0, no base vs GRPO, bf16 both", "rl_lit_align.py", grpo + bf_all, "trl", "rl_trl.py",
                        ["--trainer", "grpo"]))
    if "dpo" in only:  # trl checkpoints activations by default; lit_align does not unless asked
        out.append(("DPO, fp32 both (trl: its default checkpointing)", "dpo_lit_align.py", [], "trl", "dpo_trl.py",
                    ["--fp32"]))
        out.append(("DPO, fp32 both, checkpointing both", "dpo_lit_align.py", ["--gradient-checkpointing"], "trl",
                    "dpo_trl.py", ["--fp32"]))
        out.append(("DPO, fp32 both, checkpointing neither", "dpo_lit_align.py", [], "trl", "dpo_trl.py",
                    ["--fp32", "--no-checkpointing"]))
        if bf16:
            out.append(("DPO, bf16 both (trl: its default checkpointing)", "dpo_lit_align.py", bf, "trl", "dpo_trl.py", []))
            out.append(("DPO, bf16 both, checkpointing neither", "dpo_lit_align.py", bf, "trl", "dpo_trl.py",
                        ["--no-checkpointing"]))
            out.append(("DPO, bf16 both, checkpointing both", "dpo_lit_align.py", bf + ["--gradient-checkpointing"],
                        "trl", "dpo_trl.py", []))
    return out


def table(rows: list[dict]) -> str:
    from goals import rate_key

    head = ("| work | model | lit_align /s | peer | peer /s | speed ratio (wall) | speed ratio (CPU time) "
            "| lit_align peak RSS | peer peak RSS | memory ratio |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        a, b = r["ours"], r["peer"]
        unit = rate_key(a)
        cpu_unit = unit.replace("_per_s", "_per_cpu_s")
        cpu_ratio = f"{a[cpu_unit] / b[cpu_unit]:.2f}×" if cpu_unit in a and cpu_unit in b else "–"
        lines.append(f"| {r['work']} | {r['model']} | {a[unit]:.2f} {unit[:-6]} | {b['name']} | {b[unit]:.2f} "
                     f"| **{a[unit] / b[unit]:.2f}×** | {cpu_ratio} | {a['peak_rss_mb'] / 1024:.2f} GB | "
                     f"{b['peak_rss_mb'] / 1024:.2f} GB | {a['peak_rss_mb'] / b['peak_rss_mb']:.2f} |")
    return "\n".join(lines)


def phase_lines(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ph = r["ours"].get("phases") or {}
        if ph:
            step = ph.get("step", sum(v for k, v in ph.items() if k != "step"))
            parts = ", ".join(f"{k} {v:.2f}s ({v / step:.0%})" for k, v in ph.items() if k != "step")
            out.append(f"- {r['work']} on {r['model']}: step {step:.2f}s = {parts}")
    return "\n".join(out)


def machine() -> str:
    import platform

    import torch
    import transformers

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    s = readme.read_text()
    begin, end = "<!-- peers:begin -->", "<!-- peers:end -->"
    if begin not in s:
        raise SystemExit(f"README.md has no {begin} … {end} block to replace")
    i, j = s.index(begin) + len(begin), s.index(end)
    readme.write_text(s[:i] + "\n" + text + "\n" + s[j:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="dpg,rl,grpo,dpo,sampling", help="comma list of dpg, rl (RLOO), grpo (RLOO β 0 vs trl GRPO), dpo, sampling")
    ap.add_argument("--models", default="smollm2", help="comma list of tiny, smollm2")
    ap.add_argument("--steps", type=int, default=6, help="steps per side (the first is warm-up)")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch threads per side (default: all cores, as users run; 1 on a shared machine)")
    ap.add_argument("--pairs-per-step", type=int, default=8, help="DPO pairs per step")
    ap.add_argument("--no-bf16", action="store_true", help="only the fp32-on-both-sides rows")
    ap.add_argument("--readme", action="store_true", help="rewrite the results block of README.md")
    ap.add_argument("--out", default="results.md", help="file under benchmarks/peers/ for this run's table, its "
                    "measurements beside it as .json (another name keeps the last full run's results.md)")
    ap.add_argument("--render", metavar="JSON", help="measure nothing: rewrite the Markdown (and, with --readme, "
                    "the README block) from a run's saved JSON, e.g. after a change to goals.py")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if args.render:
        return publish(json.loads(Path(args.render).read_text()), args.out, args.readme)
    import models

    only = set(args.only.split(","))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # every side, torch and the peers' own pools
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores: timings will be noise", flush=True)
    rows = []
    for model in args.models.split(","):
        folder = str(models.folder(model))
        common = [folder, "--steps", str(args.steps), "--samples", str(args.samples), "--tokens",
                  str(args.tokens), "--minibatch", str(args.minibatch), "--threads", str(args.threads)]
        for work, ours_script, ours_extra, peer, peer_script, peer_extra in pairs(only, not args.no_bf16):
            print(f"{work} on {model}:", flush=True)
            args_ = common
            if work.startswith("DPO"):  # pairs, not samples: --pairs-per-step pairs of at most 128 tokens
                args_ = [folder, "--steps", str(args.steps), "--samples", str(args.pairs_per_step),
                         "--pairs", str(models.preference_pairs()), "--threads", str(args.threads)]
            ours = run_side(sys.executable, ours_script, args_ + ours_extra)
            theirs = run_side(peer_python(peer), peer_script, args_ + peer_extra)
            rows.append({"work": work, "model": model, "ours": ours, "peer": theirs})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    ratios = sampling_ratios(args) if "sampling" in only else []
    saved = {"args": vars(args), "machine": machine(), "rows": rows, "sampling_ratios": ratios}
    (HERE / args.out).with_suffix(".json").write_text(json.dumps(saved, indent=1))
    publish(saved, args.out, args.readme)


def render(saved: dict) -> str:
    """The Markdown of one run (saved by ``main``): the table, where the time goes, sampling, the goals."""
    from goals import goal_lines

    a, rows, ratios = saved["args"], saved["rows"], saved["sampling_ratios"]
    text = (f"Measured by `python benchmarks/peers/run.py` ({saved['machine']}; {a['samples']} samples × {a['tokens']} "
            f"new tokens per step from one prompt, micro-batch {a['minibatch']}, {a['threads']} thread(s) per side, "
            f"median of {a['steps'] - 1} steps after one warm-up; DPO: {a['pairs_per_step']} pairs per step):\n\n"
            f"{table(rows)}\n\nWhere lit_align's step time goes (perf/* of PerfMonitor):\n\n{phase_lines(rows)}")
    if ratios:
        text += (f"\n\nSampling with log-probs vs `generate` (SmolLM2, batch {a['samples']}, {a['tokens']} new tokens, "
                 f"{a['threads']} thread(s), `python benchmarks/sampler_vs_generate.py`):\n\n"
                 + "\n".join(f"- {r}" for r in ratios))
    names = a["models"].split(",")
    goals = goal_lines(rows, ratios, model="smollm2" if "smollm2" in names else names[0])
    if goals:
        text += "\n\nThe performance goals, read from this run (`benchmarks/peers/goals.py`):\n\n" + "\n".join(goals)
    return text


def publish(saved: dict, out: str, readme: bool) -> None:
    """Print the run's Markdown, write it to ``out`` (beside its JSON) and, with ``readme``, into README.md."""
    text = render(saved)
    print("\n" + text)
    (HERE / out).write_text(text + "\n")
    if readme:
        update_readme(text)


def sampling_ratios(args) -> list[str]:
    """Sampling vs ``generate`` (benchmarks/sampler_vs_generate.py, SmolLM2, batch 32, fp32 model):
    lit_align in fp32 and under bf16 autocast (``sample_dtype: bfloat16``) against ``generate`` as
    shipped and at its best (static cache, bf16 autocast): its ``ratio`` lines."""
    cmd = [sys.executable, str(HERE.parent / "sampler_vs_generate.py"), "--batch", str(args.samples), "--new-tokens",
           str(args.tokens), "--threads", str(args.threads), "--repeats", "3",
           "--sides", "lit_align,lit_align-bf16,lit_align-bf16-cast,generate,generate-static,generate-bf16,"
           "generate-bf16-static,generate-bf16-cast",
           "--no-reference"]
    out = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True).stdout
    print(out)
    return [line for line in out.splitlines() if line.startswith("ratio ")]


if __name__ == "__main__":
    main()
