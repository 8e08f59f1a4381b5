"""lit_align's DPO on the benchmark's pairs (β 0.1, sigmoid loss, max length 128).

Usage: python dpo_lit_align.py MODEL_FOLDER --pairs PAIRS.jsonl [--steps 6] [--samples 8]

lit_align computes the reference log-probs of the pairs once, before the first step, and then
holds one model; trl computes them inside every step. So that the two step times describe the
same work, the reported step time is the median training step **plus** the one-off reference
pass divided by the number of steps (only ``steps × samples`` pairs are loaded, each used once,
as in trl's single pass). Loading and tokenising the pairs is not counted, as trl does it when the
trainer is built, outside its steps. ``KL(π‖π0)`` tracking on samples is off (trl does not sample either).
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from _measure import StepClock, parser, report  # noqa: E402
from dpg_lit_align import Clock  # noqa: E402


def main() -> None:
    ap = parser(__doc__, samples=8, pairs=True)
    ap.add_argument("--grad-dtype", default=None, help="bfloat16: gradient passes under autocast (IS weights fp32)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="as trl does by default")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lit_align.callbacks import PerfMonitor
    from lit_align.data import PreferenceDataModule
    from lit_align.methods import DPO

    L.seed_everything(0, verbose=False)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    module = DPO(model=args.model, kl_coef=0.1, lr=1e-5, minibatch_size=args.samples, track_kl=False,
                 grad_dtype=args.grad_dtype, gradient_checkpointing=args.gradient_checkpointing)
    data = PreferenceDataModule(dataset=args.pairs, batch_size=args.samples, val_fraction=0.0, val_split=None,
                                max_train_pairs=args.steps * args.samples, max_val_pairs=0,
                                max_completion_length=args.max_length - 8, cache_reference=False, shuffle=False)
    clock = StepClock()
    marks: dict[str, float] = {}
    ref_pass = {"wall": 0.0, "cpu": 0.0}
    fill = DPO.reference_log_probs

    def timed_fill(self, pairs, cache_dir):  # the reference pass alone (not tokenising or loading the pairs)
        t, c = time.perf_counter(), time.process_time()
        out = fill(self, pairs, cache_dir)
        ref_pass["wall"] += time.perf_counter() - t
        ref_pass["cpu"] += time.process_time() - c
        return out

    DPO.reference_log_probs = timed_fill

    class Setup(L.Callback):
        def setup(self, trainer, pl_module, stage=None) -> None:  # before the models are built and the pairs connected
            marks["fit_start"] = time.perf_counter()

        def on_train_batch_start(self, *a) -> None:
            if "first_batch" not in marks:
                marks["first_batch"] = time.perf_counter()

    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[Setup(), Clock(clock), PerfMonitor()])
    trainer.fit(module, data)
    times = clock.step_times()
    setup = marks["first_batch"] - marks["fit_start"]  # models, loading and tokenising the pairs, the reference pass
    med = statistics.median(times[1:] or times)
    amortised = [t + ref_pass["wall"] / len(times) for t in times]
    amortised_cpu = [t + ref_pass["cpu"] / len(times) for t in clock.cpu_times()]
    report("lit_align DPO" + (" bf16 grads" if args.grad_dtype else " fp32")
           + (" + checkpointing" if args.gradient_checkpointing else ""), amortised, args.samples, "pairs",
           cpu_times=amortised_cpu, reference_pass_s=ref_pass["wall"], data_setup_s=setup, train_step_s=med)


if __name__ == "__main__":
    main()
