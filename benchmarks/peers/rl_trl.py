"""trl 1.16's RLOO or GRPO trainer on the benchmark's work; runs in trl's venv.

Usage: python rl_trl.py MODEL_FOLDER --trainer {rloo,grpo} [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]

One prompt, ``samples`` completions of it per optimizer step (num_generations = samples), micro-batches
of ``minibatch`` with gradient accumulation, pure sampling (top_k 0, top_p 1, temperature 1), Adam(W)
lr 1e-5; everything else is trl's default (RLOO: β = 0.05 with a reference model; GRPO: β = 0, none).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from _measure import StepClock, parser, report  # noqa: E402

PROMPT = "The movie was"


def reward_e(prompts, completions, **kwargs) -> list[float]:
    return [1.0 if "e" in c else 0.0 for c in completions]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--trainer", choices=["rloo", "grpo"], default="rloo")
    ap.add_argument("--fp32", action="store_true", help="bf16=False (trl's default is bf16 mixed precision)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    Config, Trainer = (RLOOConfig, RLOOTrainer) if args.trainer == "rloo" else (GRPOConfig, GRPOTrainer)
    accum = args.samples // args.minibatch
    out = tempfile.mkdtemp()
    cfg = Config(output_dir=out, per_device_train_batch_size=args.minibatch, gradient_accumulation_steps=accum,
                 steps_per_generation=accum, num_generations=args.samples, max_completion_length=args.tokens,
                 learning_rate=1e-5, max_steps=args.steps, temperature=1.0, top_k=0, top_p=1.0,
                 bf16=not args.fp32, report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, seed=0,
                 lr_scheduler_type="constant", warmup_steps=0, disable_tqdm=True)
    data = Dataset.from_dict({"prompt": [PROMPT] * (args.steps * args.samples * 2)})
    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if not clock.marks:
                clock.tick()

        def on_step_end(self, *a, **k):
            clock.tick()

    trainer = Trainer(model=args.model, reward_funcs=reward_e, args=cfg, train_dataset=data, callbacks=[Clock()])
    trainer.train()
    report(f"trl {args.trainer.upper()}" + (" fp32" if args.fp32 else " (bf16, default)"), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times())


if __name__ == "__main__":
    main()
