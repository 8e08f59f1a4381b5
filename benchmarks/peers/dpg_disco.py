"""disco's DPG tuner (disco-generation 1.1.1, as shipped) on the benchmark's work; runs in disco's venv.

Usage: python dpg_disco.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]

Compatibility shims (here only, never in lit_align): disco declares Python < 3.11 but runs on 3.11;
it is installed with ``--no-deps`` beside transformers 4.41.2 (its generation API: ``_get_logits_warper(config)``, tokenizers < 0.20); and
the 1.1.1 sdist on PyPI lacks the ``disco.tuners.losses.misc`` package its JS/TV/reverse-KL losses
import, so :func:`shim_missing_misc` provides a stand-in (the DPG tuner's KL loss never uses it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from _measure import StepClock, parser, report  # noqa: E402

PROMPT = "The movie was"


def shim_missing_misc() -> None:
    """Register ``disco.tuners.losses.misc.ema_baseline.EMABaseline`` (an EMA of past rewards)."""
    import types

    class EMABaseline:
        def __init__(self, weight: float = 0.99) -> None:
            self.weight, self.value = weight, None

        def advantage(self, rewards):
            mean = rewards.mean().detach()
            self.value = mean if self.value is None else self.weight * self.value + (1 - self.weight) * mean
            return rewards - self.value

    misc = types.ModuleType("disco.tuners.losses.misc")
    ema = types.ModuleType("disco.tuners.losses.misc.ema_baseline")
    ema.EMABaseline = EMABaseline
    misc.ema_baseline = ema
    sys.modules.setdefault("disco.tuners.losses.misc", misc)
    sys.modules.setdefault("disco.tuners.losses.misc.ema_baseline", ema)


def skip_warp_loop() -> None:
    """disco 1.1.1's ``LMDistribution.log_score`` passes the logits through the generation config's
    logits processors and warpers one position at a time, writing each position back into the
    (B, L, V) logits. With the settings used here (no temperature, top-k, top-p or typical-p warp)
    both lists are empty and the loop changes no value; this returns the logits as they are when
    both are empty (and runs disco's loop otherwise), to time disco without that overhead: its best
    configuration for this work. On the same samples, ``log_score`` with and without it is bitwise
    equal (checked on the tiny model)."""
    from disco.distributions.lm_distribution import LMDistribution

    original = LMDistribution._process_and_warp_logits

    def passthrough(self, all_logits, input_ids, encoder_input_ids):
        import copy

        from transformers import LogitsProcessorList

        config = copy.deepcopy(self.network.generation_config)
        config.update(**self.params)
        warpers = self.network._get_logits_warper(config)
        processors = self.network._get_logits_processor(
            generation_config=config, input_ids_seq_length=input_ids.shape[-1], encoder_input_ids=encoder_input_ids,
            prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList())
        if len(warpers) or len(processors):  # something to apply: disco's own loop
            return original(self, all_logits, input_ids, encoder_input_ids)
        return all_logits

    LMDistribution._process_and_warp_logits = passthrough


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--skip-warp-loop", action="store_true",
                    help="skip disco's per-position logits-processor loop (a no-op here; see skip_warp_loop)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shim_missing_misc()
    if args.skip_warp_loop:
        skip_warp_loop()
    from disco.distributions import LMDistribution
    from disco.scorers import BooleanScorer
    from disco.tuners import DPGTuner

    base = LMDistribution(args.model, length=args.tokens)
    target = base * BooleanScorer(lambda s, c: "e" in s.text)
    model = LMDistribution(args.model, length=args.tokens, freeze=False)
    tuner = DPGTuner(model, target, context=PROMPT, n_gradient_steps=args.steps,
                     n_samples_per_step=args.samples, sampling_size=args.samples,
                     scoring_size=args.minibatch, learning_rate=1e-5, warmup_steps=0,
                     divergence_evaluation_interval=10**6)
    clock = StepClock()
    tuner.step_idx_updated.enroll(lambda s: clock.tick())
    tuner.tune()
    clock.tick()
    report("disco DPG" + (" without its warp loop" if args.skip_warp_loop else " as shipped"), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times())


if __name__ == "__main__":
    main()
