"""lit_align's DPG (on-policy, pointwise constraint) on the benchmark's work, through the Trainer.

Usage: python dpg_lit_align.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]
       [--lr 1e-5] [--pattern REGEX] [--curve EVERY [--curve-samples 256] [--log-z LOG_Z]]

With ``--curve`` it also prints a ``CURVE`` line (E_π[b], KL(p‖π), KL(π‖a)) at step 0 and every
EVERY steps, from fresh policy samples drawn under a forked RNG (the training samples stay those
of a run without it) and outside the step clock and PerfMonitor (it runs before them).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).parent))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from _measure import CURVE_CHUNK, StepClock, add_curve_args, curve_line, curve_seed, parser, report  # noqa: E402

PROMPT = "The movie was"


class Clock(L.Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, *args) -> None:
        self.clock.tick()

    def on_train_end(self, *args) -> None:
        self.clock.tick()


class Curve(L.Callback):
    """A ``CURVE`` line at step 0 and every ``every`` steps from ``n`` fresh samples of the policy:
    log π and log a by a forward pass of the policy and of the frozen base (``Policy`` API, so
    no engine timer is charged), b by ``re.search`` on the decoded completion."""

    def __init__(self, clock: StepClock, every: int, n: int, per_step: int, pattern: str,
                 log_z: float | None, prompt: str, seed: int = 0) -> None:
        self.clock, self.every, self.n, self.per_step, self.seed = clock, every, n, per_step, seed
        self.rx, self.log_z, self.prompt = re.compile(pattern), log_z, prompt
        self.done = 0

    def on_train_batch_start(self, trainer, module, *args) -> None:
        self.evaluate(module)

    def on_train_batch_end(self, *args) -> None:
        self.done += 1

    def on_train_end(self, trainer, module) -> None:
        self.evaluate(module)

    @torch.no_grad()
    def evaluate(self, module) -> None:
        if self.done % self.every:
            return
        policy, mb = module.engine.policy, module.hparams.minibatch_size
        log_pi, log_a, b = [], [], []
        with self.clock.excluded(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(curve_seed(self.seed, self.done))
            for start in range(0, self.n, CURVE_CHUNK):
                samples = policy.sample(module.model, [self.prompt], min(CURVE_CHUNK, self.n - start))
                log_pi.append(policy.log_prob(module.model, samples, mb))
                log_a.append(policy.log_prob(module.engine.base, samples, mb))
                b += [float(self.rx.search(t) is not None) for t in samples.texts]
            self.log_z = curve_line(self.done, self.done * self.per_step, torch.cat(log_pi), torch.cat(log_a),
                                    b, self.log_z)


def fit_timed(make_module, steps: int, threads: int, prompt: str,
              first: Sequence[Callable[[StepClock], L.Callback]] = (), seed: int = 0) -> tuple[StepClock, dict[str, float]]:
    """Fit ``make_module()`` for ``steps`` steps on ``prompt``; the step clock and mean per-phase seconds.
    ``first``: makers of callbacks (given the clock) that run before the timing ones."""
    torch.set_num_threads(threads)
    from lit_align.callbacks import PerfMonitor
    from lit_align.data import PromptDataModule

    L.seed_everything(seed, verbose=False)
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
                        limit_val_batches=0, callbacks=[*(f(clock) for f in first), Clock(clock), PerfMonitor(), Phases()])
    trainer.fit(module, PromptDataModule(prompt=prompt, steps_per_epoch=steps))
    return clock, {k: sum(v[1:]) / max(len(v) - 1, 1) for k, v in phases.items()}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--grad-dtype", default=None, help="bfloat16: gradient passes under autocast (IS weights fp32)")
    ap.add_argument("--sample-dtype", default=None, help="bfloat16: sample under autocast (log_q is its exact density)")
    ap.add_argument("--sample-cast-weights", action="store_true",
                    help="sample_cast_weights: sample with the weights cast to --sample-dtype, not under autocast")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on all linear layers (0: full fine-tuning)")
    ap.add_argument("--kv-cache", choices=("auto", "static", "dynamic"), default="auto",
                    help="the sampler's KV cache (auto: static in half precision, dynamic in fp32)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward")
    add_curve_args(ap)
    args = ap.parse_args()
    from lit_align.methods import DPG
    from lit_align.models.decoding import Decoding
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    Decoding.static_cache = {"auto": None, "static": True, "dynamic": False}[args.kv_cache]

    def make():
        scorer = Regex(args.pattern, name="b") if args.pattern else Regex("e", name="e")
        return DPG(model=args.model, target=[Pointwise(scorer)], n_samples=args.samples,
                   minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=args.lr, off_policy=False, grad_dtype=args.grad_dtype,
                   sample_dtype=args.sample_dtype, sample_cast_weights=args.sample_cast_weights, gradient_checkpointing=args.gradient_checkpointing,
                   lora={"r": args.lora, "lora_alpha": 2 * args.lora, "target_modules": "all-linear"} if args.lora else None)

    first = [lambda clock: Curve(clock, args.curve, args.curve_samples, args.samples, args.pattern or "e", args.log_z,
                                 PROMPT, args.seed)] if args.curve else []
    clock, phases = fit_timed(make, args.steps, args.threads, PROMPT, first=first, seed=args.seed)
    report("lit_align DPG" + (f" LoRA r{args.lora}" if args.lora else "")
           + (" bf16" + (" grads+sampling" if args.sample_dtype else " grads") if args.grad_dtype else " fp32")
           + ("" if args.kv_cache == "auto" else f" ({args.kv_cache} KV cache)")
           + (" (weights cast for sampling)" if args.sample_cast_weights else "")
           + (" + checkpointing" if args.gradient_checkpointing else ""), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times(), phases=phases)


if __name__ == "__main__":
    main()
