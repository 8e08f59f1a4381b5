"""trl 1.16's DPOTrainer on the benchmark's pairs; runs in trl's venv.

Usage: python dpo_trl.py MODEL_FOLDER --pairs PAIRS.jsonl [--steps 6] [--samples 8] [--max-length 128]

``samples`` pairs per optimizer step in one micro-batch, max length 128, β 0.1, sigmoid loss, Adam(W)
lr 1e-5 constant; everything else is trl's default (the reference model is a second copy, its
log-probs computed every step: ``precompute_ref_log_probs`` is off by default; gradient
checkpointing is on by default in DPOConfig, ``--no-checkpointing`` turns it off).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from _measure import StepClock, parser, report  # noqa: E402


def main() -> None:
    ap = parser(__doc__, samples=8, pairs=True)
    ap.add_argument("--fp32", action="store_true", help="bf16=False (trl's default is bf16 mixed precision)")
    ap.add_argument("--no-checkpointing", action="store_true",
                    help="gradient_checkpointing=False (trl's DPOConfig turns it on by default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    data = load_dataset("json", data_files=args.pairs, split="train")
    cfg = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.samples,
                    gradient_accumulation_steps=1, max_length=args.max_length, learning_rate=1e-5,
                    beta=0.1, max_steps=args.steps, bf16=not args.fp32, report_to="none", save_strategy="no", logging_steps=1,
                    use_cpu=True, seed=0, lr_scheduler_type="constant", warmup_steps=0, disable_tqdm=True,
                    gradient_checkpointing=not args.no_checkpointing)
    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if not clock.marks:
                clock.tick()

        def on_step_end(self, *a, **k):
            clock.tick()

    DPOTrainer(model=args.model, args=cfg, train_dataset=data, callbacks=[Clock()]).train()
    report("trl DPO" + (" fp32" if args.fp32 else " (bf16, default)")
           + (", no checkpointing" if args.no_checkpointing else " (+ checkpointing, default)"), clock.step_times(), args.samples, "pairs", cpu_times=clock.cpu_times())


if __name__ == "__main__":
    main()
