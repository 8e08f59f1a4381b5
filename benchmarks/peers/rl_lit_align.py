"""lit_align's RLOO (k = samples per context, β = 0.05 KL in the reward) on the benchmark's work.

Usage: python rl_lit_align.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]
       [--kl-coef 0 --no-base]

``--kl-coef 0 --no-base`` is the work of trl's GRPO at its default β = 0: no KL penalty, no frozen
base and no base pass (``track_kl: false``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _measure import parser, report  # noqa: E402
from dpg_lit_align import PROMPT, fit_timed  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--grad-dtype", default=None, help="bfloat16: gradient passes under autocast (IS weights fp32)")
    ap.add_argument("--sample-dtype", default=None, help="bfloat16: sample under autocast (log_q is its exact density)")
    ap.add_argument("--sample-cast-weights", action="store_true",
                    help="sample_cast_weights: sample with the weights cast to --sample-dtype, not under autocast")
    ap.add_argument("--kl-coef", type=float, default=0.05, help="β of the shaped reward (0: no penalty)")
    ap.add_argument("--no-base", action="store_true", help="track_kl: false (with --kl-coef 0: no frozen base)")
    args = ap.parse_args()
    from lit_align.methods import RLOO
    from lit_align.scorers import Regex

    def make():
        return RLOO(model=args.model, reward=[Regex("e", name="e")], kl_coef=args.kl_coef, n_samples=args.samples,
                    minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=1e-5, grad_dtype=args.grad_dtype,
                    sample_dtype=args.sample_dtype, sample_cast_weights=args.sample_cast_weights, track_kl=not args.no_base)

    clock, phases = fit_timed(make, args.steps, args.threads, PROMPT)
    name = "lit_align RLOO" + ("" if args.kl_coef == 0.05 else f" β {args.kl_coef:g}") + (", no base" if args.no_base else "")
    report(name + (" bf16" + (" grads+sampling" if args.sample_dtype else " grads") if args.grad_dtype else " fp32")
           + (" (weights cast for sampling)" if args.sample_cast_weights else ""), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times(), phases=phases)


if __name__ == "__main__":
    main()
