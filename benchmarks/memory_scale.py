"""Benchmark (not a test): peak memory and step time of the same DPG run, full vs LoRA, shared vs
separate reference, with and without gradient checkpointing.

Each setting runs in its own fresh subprocess (``--one``): the method is built and fitted with a
Lightning Trainer for ``--steps`` steps on the same prompt, target and seed. Reported per setting:

* trainable parameters;
* ``held MB``: bytes of the distinct tensors the run holds after training (weights, gradients,
  optimizer state, frozen copies: base and proposal) — :func:`lit_align.memory.held_bytes`;
* ``peak MB``: on CPU the process's peak RSS while training (``VmHWM``, reset with
  ``/proc/self/clear_refs`` once the models are loaded, so it includes the optimizer state created
  by the first step, activations and logits), minus the RSS at that moment ("Δ peak"), and the
  absolute peak; on CUDA ``torch.cuda.max_memory_allocated``;
* ``step s``: median wall time of the steps after the first.

Settings: ``full`` (policy + separate frozen copies of base and proposal), ``lora-shared`` (the
base is the adapter-disabled policy, the proposal a snapshot of the adapters), ``lora-separate``
(LoRA with a separate full copy of the base, to isolate the effect of sharing), each with
``+ckpt`` for gradient checkpointing.

    python benchmarks/memory_scale.py                      # tiny-gpt2, CPU
    python benchmarks/memory_scale.py --model smollm2 --samples 8 --tokens 32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "full": dict(lora=None, shared=False, ckpt=False),
    "full+ckpt": dict(lora=None, shared=False, ckpt=True),
    "lora-shared": dict(lora={"r": 8}, shared=True, ckpt=False),
    "lora-shared+ckpt": dict(lora={"r": 8}, shared=True, ckpt=True),
    "lora-separate": dict(lora={"r": 8}, shared=False, ckpt=False),
}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_one(name: str, args) -> dict:
    import lightning as L
    import torch

    from lit_align.data.prompts import PromptDataModule
    from lit_align.memory import held_bytes
    from lit_align.methods import DPG
    from lit_align.models import load
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    torch.set_num_threads(args.threads)
    s = SETTINGS[name]
    L.seed_everything(0, verbose=False)
    module = DPG(target=[Pointwise(Regex("[a-z]", name="letter"))], model=args.model, n_samples=args.samples,
                 minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=1e-5, off_policy=True,
                 lora=s["lora"], gradient_checkpointing=s["ckpt"])
    module.configure_model()
    if s["lora"] is not None and not s["shared"]:
        base, _ = load(args.model, seed=module.hparams.model_seed)  # a separate frozen copy of a
        module.engine.base = module.engine.frozen_copy(base)
    cuda = torch.cuda.is_available()
    times, mem = [], {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            else:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak RSS to the current RSS
            mem["rss_start_kb"] = _rss_kb("VmRSS")

        def on_train_batch_start(self, *a):
            self.t = time.perf_counter()

        def on_train_batch_end(self, *a):
            times.append(time.perf_counter() - self.t)

    trainer = L.Trainer(max_steps=args.steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Probe()])
    trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=10 * args.steps))
    if cuda:
        peak, delta = torch.cuda.max_memory_allocated() / 2**20, float("nan")
    else:
        peak = _rss_kb("VmHWM") / 1024
        delta = peak - mem["rss_start_kb"] / 1024
    return {
        "setting": name,
        "trainable": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        "held_mb": held_bytes(module, module.engine.base, trainer.optimizers) / 2**20,
        "peak_mb": peak,
        "delta_peak_mb": delta,
        "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "device": "cuda" if cuda else "cpu",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-gpt2")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--minibatch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return
    rows = []
    for name in args.settings.split(","):
        cmd = [sys.executable, __file__, "--one", name] + [a for a in sys.argv[1:] if not a.startswith("--settings")]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[0][7:]))
    print(f"\nDPG on {args.model}: {args.samples} samples × {args.tokens} tokens per step, minibatch {args.minibatch}, "
          f"{args.steps} steps, {args.threads} thread(s), device {rows[0]['device'] if rows else '?'}\n")
    print("| setting | trainable params | held MB | Δ peak MB | peak MB | step s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['trainable']:,} | {r['held_mb']:.1f} | {r['delta_peak_mb']:.1f} | "
              f"{r['peak_mb']:.1f} | {r['step_s']:.3f} |")


if __name__ == "__main__":
    main()
