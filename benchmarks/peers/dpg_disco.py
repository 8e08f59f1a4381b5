"""disco's DPG tuner (disco-generation 1.1.1, as shipped) on the benchmark's work; runs in disco's venv.

Usage: python dpg_disco.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]
       [--lr 1e-5] [--pattern REGEX] [--curve EVERY [--curve-samples 256] [--log-z LOG_Z]]

With ``--pattern`` the target's b(x) is ``re.search`` on the completion decoded as lit_align
decodes it (the tokens before the first EOS, special tokens skipped), so that both sides learn
the same target; without it, disco's ``"e" in s.text`` as before. ``--curve``: see
dpg_lit_align.py (same CURVE lines, same estimator, outside the step clock, forked RNG).

Compatibility shims (here only, never in lit_align): disco declares Python < 3.11 but runs on 3.11;
it is installed with ``--no-deps`` beside transformers 4.41.2 (its generation API: ``_get_logits_warper(config)``, tokenizers < 0.20); and
the 1.1.1 sdist on PyPI lacks the ``disco.tuners.losses.misc`` package its JS/TV/reverse-KL losses
import, so :func:`shim_missing_misc` provides a stand-in (the DPG tuner's KL loss never uses it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from _measure import CURVE_CHUNK, StepClock, add_curve_args, curve_line, curve_seed, parser, report  # noqa: E402

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


def completion_text(tokenizer, token_ids: torch.Tensor) -> str:
    """The completion as lit_align's sampler decodes it: tokens before the first EOS, no special tokens."""
    ids = token_ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


class Curve:
    """``CURVE`` lines from fresh samples of disco's tuned ``model`` (``LMDistribution.sample``),
    log π and log a by ``log_score`` of the tuned model and of the frozen ``base``."""

    def __init__(self, clock: StepClock, model, base, args, rx: re.Pattern) -> None:
        self.clock, self.model, self.base, self.args, self.rx = clock, model, base, args, rx
        self.log_z = args.log_z

    def __call__(self, step: int) -> None:
        a = self.args
        if step % a.curve:
            return
        log_pi, log_a, b = [], [], []
        with self.clock.excluded(), torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(curve_seed(a.seed, step))
            for start in range(0, a.curve_samples, CURVE_CHUNK):
                samples, _ = self.model.sample(context=PROMPT, sampling_size=min(CURVE_CHUNK, a.curve_samples - start))
                for i in range(0, len(samples), a.minibatch):
                    log_pi.append(self.model.log_score(samples[i:i + a.minibatch], context=PROMPT))
                    log_a.append(self.base.log_score(samples[i:i + a.minibatch], context=PROMPT))
                tok = self.model.tokenizer
                b += [float(self.rx.search(completion_text(tok, s.token_ids)) is not None) for s in samples]
            self.log_z = curve_line(step, step * a.samples, torch.cat(log_pi), torch.cat(log_a), b, self.log_z)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--skip-warp-loop", action="store_true",
                    help="skip disco's per-position logits-processor loop (a no-op here; see skip_warp_loop)")
    add_curve_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shim_missing_misc()
    if args.skip_warp_loop:
        skip_warp_loop()
    from disco.distributions import LMDistribution
    from disco.scorers import BooleanScorer
    from disco.tuners import DPGTuner

    base = LMDistribution(args.model, length=args.tokens)
    rx = re.compile(args.pattern or "e")
    if args.pattern:
        target = base * BooleanScorer(lambda s, c: rx.search(completion_text(base.tokenizer, s.token_ids)) is not None)
    else:
        target = base * BooleanScorer(lambda s, c: "e" in s.text)
    model = LMDistribution(args.model, length=args.tokens, freeze=False)
    tuner = DPGTuner(model, target, context=PROMPT, n_gradient_steps=args.steps,
                     n_samples_per_step=args.samples, sampling_size=args.samples,
                     scoring_size=args.minibatch, learning_rate=args.lr, warmup_steps=0,
                     divergence_evaluation_interval=10**6)
    clock = StepClock()
    curve = Curve(clock, model, base, args, rx) if args.curve else None
    if curve:  # step_idx s is dispatched before step s: s steps done
        tuner.step_idx_updated.enroll(curve)
    tuner.step_idx_updated.enroll(lambda s: clock.tick())
    tuner.tune()
    clock.tick()
    if curve:
        curve(args.steps)
    report("disco DPG" + (" without its warp loop" if args.skip_warp_loop else " as shipped"), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times())


if __name__ == "__main__":
    main()
