"""Where one SmolLM2 DPG step spends its time: torch.profiler over the phases of a step.

    python benchmarks/perf/profile_dpg.py                      # bf16 passes, 32 × 32, micro-batch 8
    python benchmarks/perf/profile_dpg.py --dtype float32 --top 25

It builds lit_align's DPG (on-policy, pointwise constraint, the peers' work), runs one warm-up
step, then profiles the next one phase by phase (sampling with log-probs, the frozen base's
log-probs, the gradient pass, the optimizer step) and prints each phase's wall time and its
most expensive operators (self CPU time), and the FLOP estimate of the step against the
machine's bf16 peak given by ``--peak-gflops``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def flops_per_token(model) -> float:
    """2 × parameters touched per token (matrix multiplies; embeddings are gathers), tied head counted once."""
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    emb = model.get_input_embeddings().weight.numel()
    return 2.0 * (n + emb)  # the head multiplies by the (tied) embedding matrix


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2.0 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--minibatch", type=int, default=8)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--peak-gflops", type=float, default=600.0, help="the machine's bf16 matrix peak")
    ap.add_argument("--extra", default="", help="more DPG keyword arguments, as k=v,k=v (values parsed as Python)")
    args = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from lit_align.methods import DPG
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    rss_at_start = peak_rss_gb()
    dt = None if args.dtype == "float32" else args.dtype
    extra = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in args.extra.split(",") if kv)}
    torch.manual_seed(0)
    m = DPG(model="smollm2", target=[Pointwise(Regex("e", name="e"))], n_samples=args.samples,
            minibatch_size=args.minibatch, max_new_tokens=args.tokens, lr=1e-5, off_policy=False,
            grad_dtype=dt, sample_dtype=dt, **extra)
    m.configure_model()
    engine = m.engine
    opt = m.configure_optimizers()["optimizer"]
    prompt = ["The movie was"]

    def step(phases: dict, prof=None):
        def mark(name, fn):
            t = time.perf_counter()
            with torch.profiler.record_function(name):
                out = fn()
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t
            return out

        samples = mark("sampling", lambda: engine.sample(prompt, args.samples))
        log_a = mark("base_log_probs", lambda: engine.base_log_prob(samples))

        def grad():
            for mb in samples.minibatches(args.minibatch):
                with engine.grad_autocast():
                    lp = engine.token_log_probs(m.model, mb).sum(-1)
                (-(lp * 0.01).sum()).backward()
        mark("forward_backward", grad)
        mark("optimizer", lambda: (opt.step(), opt.zero_grad(set_to_none=True)))
        return samples, log_a

    step({})  # warm-up
    phases: dict[str, float] = {}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        samples, _ = step(phases)
    total = sum(phases.values())
    n_tok = int(samples.completion_mask.sum() + samples.prompt_mask.sum())
    fpt = flops_per_token(m.model)
    # sampling: one forward per token; base: one forward; gradient: forward + backward (3×)
    flops = fpt * n_tok * (1 + 1 + 3)
    print(f"DPG step, SmolLM2, {args.samples} × {args.tokens}, micro-batch {args.minibatch}, passes {args.dtype}, "
          f"{torch.get_num_threads()} threads: {total:.2f} s")
    for k, v in phases.items():
        print(f"  {k:18s} {v:6.2f} s  {v / total:5.1%}")
    print(f"  ≈ {flops / 1e12:.2f} TFLOP → {flops / 1e9 / args.peak_gflops:.2f} s at {args.peak_gflops:.0f} GFLOP/s "
          f"(step = {total / (flops / 1e9 / args.peak_gflops):.1f}× the bound)")
    from lit_align.memory import held_bytes

    gb = 2.0 ** 30
    params = sum(q.numel() * q.element_size() for q in m.model.parameters())
    grads_peak = sum(q.numel() * 4 for q in m.model.parameters() if q.requires_grad)  # fp32 .grad during the pass
    print(f"memory: policy weights {params / gb:.2f} GB, gradients (held during the pass) {grads_peak / gb:.2f} GB, "
          f"Adam state {held_bytes(opt) / gb:.2f} GB, frozen base {held_bytes(engine.base) / gb:.2f} GB; "
          f"process peak RSS {peak_rss_gb():.2f} GB, RSS before the model was built {rss_at_start:.2f} GB")
    if args.top <= 0:
        return
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40)
    print(table)


if __name__ == "__main__":
    main()
