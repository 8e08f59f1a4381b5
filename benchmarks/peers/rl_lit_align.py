"""lit_align's RLOO (k = samples per context, β = 0.05 KL in the reward) on the benchmark's work.

Usage: python rl_lit_align.py MODEL_FOLDER [--steps 6] [--samples 32] [--tokens 32] [--minibatch 8]
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
    args = ap.parse_args()
    from lit_align.methods import RLOO
    from lit_align.scorers import Regex

    def make():
        return RLOO(model=args.model, reward=[Regex("e", name="e")], kl_coef=0.05, n_samples=args.samples,
                    minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=1e-5, grad_dtype=args.grad_dtype,
                   sample_dtype=args.sample_dtype)

    clock, phases = fit_timed(make, args.steps, args.threads, PROMPT)
    report("lit_align RLOO" + (" bf16" + (" grads+sampling" if args.sample_dtype else " grads") if args.grad_dtype else " fp32"), clock.step_times(), args.samples, "samples", cpu_times=clock.cpu_times(), phases=phases)


if __name__ == "__main__":
    main()
