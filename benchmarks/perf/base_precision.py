"""What a bf16 base (``frozen_dtype: auto`` under bf16 passes) changes in the estimates that use log a.

On the same samples of the policy (here the untrained policy, sampled under bf16 autocast as
``sample_dtype: bfloat16`` does, with its exact ``log_q``), the base's sequence log-probs are
computed twice — by an fp32 copy and by a bf16 copy — and so is every estimate built on them:

- Ẑ = mean(b · a/q), the partition function of p ∝ a·b (Korbak et al. 2022, arXiv:2206.00761, §2);
- KL(π‖a) = mean(log q − log a), the distance from the prior;
- KL(p‖π) = mean(w · (log P − log Ẑ − log q)) / mean(w), w = P/q, P = a·b, by importance sampling.

Printed: per-sequence |Δ log a| (mean, max), and each estimate with both bases. The models are
SmolLM2-135M-Instruct (``--model smollm2``) or the exact toy LM (``--model toy``).

    python benchmarks/perf/base_precision.py --model smollm2 --samples 128
    python benchmarks/perf/base_precision.py --model toy --samples 4096
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def estimates(log_a: torch.Tensor, log_q: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    log_a, log_q, b = log_a.double(), log_q.double(), b.double()
    w = b * torch.exp(log_a - log_q)  # P/q
    z = w.mean()
    kl_pa = (log_q - log_a).mean()
    sat = b > 0
    log_p = log_a - torch.log(z)
    kl_target = (w[sat] * (log_p[sat] - log_q[sat])).sum() / w.sum()
    return {"Z": float(z), "KL(pi||a)": float(kl_pa), "KL(p||pi)": float(kl_target)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--pattern", default=None, help="b(x) = 1 iff the completion matches this regex (default: e; toy: b.*d)")
    ap.add_argument("--prompt", default="The movie was")
    args = ap.parse_args()
    from lit_align.models.engine import Engine
    from lit_align.models.settings import EngineSettings, SamplingSettings
    from lit_align.scorers import Regex

    torch.manual_seed(0)
    settings = EngineSettings(model=args.model, minibatch_size=32, grad_dtype="bfloat16", sample_dtype="bfloat16",
                              frozen_dtype="float32", sampling=SamplingSettings(max_new_tokens=args.tokens))
    engine = Engine(settings)
    prompt = "" if args.model == "toy" else args.prompt
    pattern = args.pattern or ("b.*d" if args.model == "toy" else "e")
    samples = engine.sample([prompt], args.samples)
    b = Regex(pattern, name="b")(samples.texts, [prompt] * len(samples)).float()
    log_q = samples.log_q
    log_a32 = engine.log_prob(engine.base, samples)
    base16 = copy.deepcopy(engine.base).to(torch.bfloat16)
    log_a16 = engine.log_prob(base16, samples)
    d = (log_a16 - log_a32).abs()
    print(f"{args.model}: {len(samples)} samples, mean length {float(samples.completion_mask.sum(1).float().mean()):.1f} "
          f"tokens, E[b] {float(b.mean()):.3f}")
    print(f"|log a (bf16 base) - log a (fp32 base)| per sequence: mean {float(d.mean()):.4f}, max {float(d.max()):.4f} nats "
          f"(log a itself: mean {float(log_a32.mean()):.2f})")
    e32, e16 = estimates(log_a32, log_q, b), estimates(log_a16, log_q, b)
    for k in e32:
        rel = abs(e16[k] - e32[k]) / max(abs(e32[k]), 1e-12)
        print(f"  {k:10s} fp32 base {e32[k]: .5f}   bf16 base {e16[k]: .5f}   relative change {rel:.2%}")
    if not all(math.isfinite(v) for v in (*e32.values(), *e16.values())):
        print("  (an estimate is not finite: too few satisfying samples)")


if __name__ == "__main__":
    main()
