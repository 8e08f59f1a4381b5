"""lit_align's DPG (on-policy, pointwise constraint) on the benchmark's work, through the Trainer.

Usage: python dpg_lit_align.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from _measure import StepClock, parser, report  # noqa: E402

PROMPT = "The movie was"


class Clock(L.Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, *args) -> None:
        self.clock.tick()

    def on_train_end(self, *args) -> None:
        self.clock.tick()


def fit_timed(make_module, steps: int, threads: int, prompt: str) -> tuple[StepClock, dict[str, float]]:
    """Fit ``make_module()`` for ``steps`` steps on ``prompt``; the step clock and mean per-phase seconds."""
    torch.set_num_threads(threads)
    from lit_align.callbacks import PerfMonitor
    from lit_align.data import PromptDataModule

    L.seed_everything(0, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    module = make_module()
    clock = StepClock()
    phases: dict[str, list[float]] = {}

    class Phases(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *a) -> None:
            for k, v in trainer.callback_metrics.items():
                if k.startswith("perf/") and k.endswith("_s") and "per_s" not in k:
                    phases.setdefault(k[5:-2], []).append(float(v))

    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Clock(clock), PerfMonitor(), Phases()])
    trainer.fit(module, PromptDataModule(prompt=prompt, steps_per_epoch=steps))
    return clock, {k: sum(v[1:]) / max(len(v) - 1, 1) for k, v in phases.items()}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--grad-dtype", default=None, help="bfloat16: gradient passes under autocast (IS weights fp32)")
    ap.add_argument("--sample-dtype", default=None, help="bfloat16: sample under autocast (log_q is its exact density)")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on all linear layers (0: full fine-tuning)")
    args = ap.parse_args()
    from lit_align.methods import DPG
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    def make():
        return DPG(model=args.model, target=[Pointwise(Regex("e", name="e"))], n_samples=args.samples,
                   minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=1e-5, off_policy=False, grad_dtype=args.grad_dtype,
                   sample_dtype=args.sample_dtype,
                   lora={"r": args.lora, "lora_alpha": 2 * args.lora, "target_modules": "all-linear"} if args.lora else None)

    clock, phases = fit_timed(make, args.steps, args.threads, PROMPT)
    report("lit_align DPG" + (f" LoRA r{args.lora}" if args.lora else "")
           + (" bf16" + (" grads+sampling" if args.sample_dtype else " grads") if args.grad_dtype else " fp32"), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times(), phases=phases)


if __name__ == "__main__":
    main()
