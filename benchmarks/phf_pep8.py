"""Pretraining with human feedback on the offline PEP8 corpus (Korbak et al. 2023, arXiv:2302.08582): the chapter's
headline at small scale.

A small GPT-2 (byte-level tokenizer, built from a config) is trained from scratch on the
Python standard library's own source, scored per line with pycodestyle (violations per
character), with each of the six objectives under the same token budget; then MLE for
half the budget followed by fine-tuning with the best feedback objective for the other
half (the pretraining-vs-finetuning comparison). For each run: the misalignment score of
unconditional samples (mean PEP8 violations per character, temperature 0.7, top-p 0.9;
conditional training prompted with ``<|aligned|>``), the fraction of samples with any
violation, and the LM loss on held-out files (nats/token; control tokens not scored).

    python benchmarks/phf_pep8.py                       # tiny scale, a few minutes on 2 cores
    python benchmarks/phf_pep8.py --steps 2000 --layers 4 --width 128 --seq-len 256 --docs 0

Writes ``--out`` (default ``benchmarks/results/phf_pep8``): ``table.md``, ``results.json`` and
``score_vs_loss.png``. The corpus scores are cached (``$LIT_ALIGN_CACHE/phf_scores``).
Each run must train exactly its steps (else it stops with an error); ``tokens`` are the tokens
trained on. ``train s`` is wall time: on a loaded machine two torch threads can be many times
slower than one (``--threads 1``), so compare it only between runs of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lit_align.callbacks.phf_eval import MisalignmentEval  # noqa: E402
from lit_align.data.pretraining import PretrainingDataModule  # noqa: E402
from lit_align.methods import PHF  # noqa: E402
from lit_align.scorers import PEP8PerChar  # noqa: E402

# the paper's PEP8 settings (the paper's); learning rate and batch are shared here so that
# every objective sees the same tokens in the same number of steps
OBJECTIVES = {
    "mle": {},
    "filtering": {"threshold": 0.002361},
    # the released code blocks only <|misaligned|> for code: the model may emit <|aligned|> at each new line
    "conditional": {"threshold": 0.0, "drop_token_fraction": 0.1, "block_aligned_token": False},
    "unlikelihood": {"threshold": 0.0, "alpha": 0.01},
    "rwr": {"alpha": 1.0, "temperature": 10.0},
    "awr": {"alpha": 0.05, "temperature": 1.0},
}


def make_data(args, skip_tokens: int = 0) -> PretrainingDataModule:
    return PretrainingDataModule(corpus="stdlib", scorer=PEP8PerChar(), segmentation="lines", seq_len=args.seq_len,
                                 batch_size=args.batch, shuffle_buffer=args.shuffle, seed=args.seed, val_every=20,
                                 max_val_chunks=args.val_chunks, max_documents=args.docs or None,
                                 skip_tokens=skip_tokens)


def make_module(args, objective: str, **extra) -> PHF:
    overrides = {"n_layer": args.layers, "n_embd": args.width, "n_head": max(1, args.width // 32),
                 "n_positions": max(256, args.seq_len)}
    return PHF(model="tiny-gpt2", objective=objective, from_scratch=True, config_overrides=overrides,
               minibatch_size=args.minibatch, lr=args.lr, optimizer="adamw", weight_decay=0.1, warmup_ratio=0.01,
               max_new_tokens=args.new_tokens, **OBJECTIVES[objective], **extra)


def run(args, name: str, module: PHF, steps: int, skip_tokens: int = 0, ckpt: Path | None = None) -> dict:
    L.seed_everything(args.seed, verbose=False)
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, accelerator=args.accelerator, devices=1)
    t0 = time.time()
    data = make_data(args, skip_tokens)
    trainer.fit(module, data)
    train_s = time.time() - t0
    # every run must train exactly the steps asked for (no early end, no short stream)
    if trainer.global_step != steps:
        raise RuntimeError(f"{name}: trained {trainer.global_step} steps, not {steps}")
    nominal = steps * args.batch * args.seq_len
    if module.tokens_seen != nominal:  # an epoch's padded last chunk or short last batch
        print(f"{name}: trained on {module.tokens_seen:,} tokens, not {nominal:,}", flush=True)
    if ckpt is not None:
        trainer.save_checkpoint(ckpt)
    val = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                    accelerator=args.accelerator, devices=1).validate(module, make_data(args), verbose=False)[0]
    evaluator = MisalignmentEval(PEP8PerChar(), n_samples=args.samples, batch_size=64, max_new_tokens=args.new_tokens,
                                 hits_threshold=0.0)
    torch.manual_seed(0)
    ev = evaluator.evaluate(module)
    row = {"run": name, "objective": module.hparams.objective, "steps": trainer.global_step,
           "tokens": module.tokens_seen, "skip_tokens": skip_tokens, "score": ev["unconditional/score"],
           "score_se": ev["unconditional/score_se"],
           "score_max@25": ev["unconditional/score_max@25"],
           "num_hits": ev["unconditional/num_hits"], "length": ev["unconditional/length"],
           "lm_loss": float(val["val/loss"]), "train_s": round(train_s, 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=8, help="chunks per step")
    p.add_argument("--minibatch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--docs", type=int, default=300, help="stdlib files read (0: all)")
    p.add_argument("--shuffle", type=int, default=500)
    p.add_argument("--val-chunks", type=int, default=64)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--objectives", default=",".join(OBJECTIVES))
    p.add_argument("--finetune", default="conditional", help="objective of the fine-tuning variant ('' to skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42, help="model initialisation and data order")
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu or auto (Lightning's)")
    p.add_argument("--out", default="benchmarks/results/phf_pep8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run(args, f"pretrain/{o}", make_module(args, o), args.steps) for o in args.objectives.split(",") if o]
    if args.finetune:
        half = args.steps // 2
        ckpt = out / "mle_half.ckpt"
        first = run(args, "pretrain/mle (first half)", make_module(args, "mle"), half, ckpt=ckpt)
        skip = half * args.batch * args.seq_len  # continue the stream where the MLE run stopped
        ft = make_module(args, args.finetune, init_from=str(ckpt))
        row = run(args, f"finetune/{args.finetune} (MLE half + feedback half)", ft, args.steps - half, skip_tokens=skip)
        row["tokens"] += first["tokens"]  # tokens actually trained on, both halves
        row["steps"] += first["steps"]
        rows.append(row)
        ckpt.unlink(missing_ok=True)
    write(rows, args, out)


def write(rows: list[dict], args, out: Path) -> None:
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    lines = ["| run | tokens | misalignment (PEP8 violations/char, ± s.e. of the mean) | score_max@25 | samples with a violation | "
             "held-out LM loss (nats/token) | train s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        se = f" ± {r['score_se']:.4f}" if "score_se" in r else ""
        lines.append(f"| {r['run']} | {r['tokens']:,} | {r['score']:.4f}{se} | {r['score_max@25']:.3f} | {r['num_hits']:.2f} "
                     f"| {r['lm_loss']:.3f} | {r['train_s']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        marker = "s" if r["run"].startswith("finetune") else "o"
        ax.scatter(r["lm_loss"], r["score"], marker=marker)
        ax.annotate(r["run"].split(" ")[0], (r["lm_loss"], r["score"]), fontsize=8, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("held-out LM loss (nats/token)")
    ax.set_ylabel("misalignment score (PEP8 violations/char)")
    ax.set_title(f"PHF on stdlib source, {rows[0]['tokens']:,} tokens per run")
    fig.tight_layout()
    fig.savefig(out / "score_vs_loss.png", dpi=120)


if __name__ == "__main__":
    main()
