"""Does ``torch.compile`` speed up SmolLM2's decoding step on this CPU?

Times ``--steps`` decoding steps at batch ``--batch`` (the quickstart's prompt, bf16 autocast, no
gradients) three ways: eager with transformers' ``DynamicCache`` (what lit_align's sampler uses),
eager with a ``StaticCache`` sized prompt + steps, and ``torch.compile`` (inductor, static shapes)
of the model with the ``StaticCache``. The first compiled call includes the compilation.

    python benchmarks/perf/compile_decode.py --threads 2 --batch 32 --steps 32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from transformers import DynamicCache, StaticCache

from lit_align.cli import resolve_config
from lit_align.models.loading import load

# the quickstart's prompt, read from its config
PROMPT = yaml.safe_load(Path(resolve_config("quickstart")).read_text())["data"]["init_args"]["prompt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = load("smollm2")
    model.eval()
    ids = torch.tensor([tok(PROMPT)["input_ids"]]).repeat(args.batch, 1)
    n, steps = ids.shape[1], args.steps

    def decode(cache, forward) -> float:
        """Seconds per decoding step after a prefill into ``cache``."""
        static = isinstance(cache, StaticCache)
        mask = torch.ones(args.batch, n + steps, dtype=torch.long)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, attention_mask=mask if static else mask[:, :n], cache=cache, use_cache=True,
                        position_ids=torch.arange(n)[None].repeat(args.batch, 1), logits_to_keep=1)
            start = time.perf_counter()
            for s in range(steps):
                nxt = torch.multinomial(out.logits[:, -1].float().softmax(-1), 1)
                out = forward(input_ids=nxt, attention_mask=mask if static else mask[:, :n + s + 1], cache=cache,
                              position_ids=torch.full((args.batch, 1), n + s), use_cache=True, logits_to_keep=1)
            return (time.perf_counter() - start) / steps

    static = lambda: StaticCache(config=model.config, max_cache_len=n + steps)  # noqa: E731
    rows = [("eager, DynamicCache", lambda: decode(DynamicCache(config=model.config), model)),
            ("eager, StaticCache", lambda: decode(static(), model))]
    if not args.skip_compile:
        compiled = torch.compile(model, dynamic=False)
        start = time.perf_counter()
        decode(static(), compiled)
        print(f"compilation (first compiled call): {time.perf_counter() - start:.0f} s", flush=True)
        rows.append(("torch.compile, StaticCache", lambda: decode(static(), compiled)))
    print(f"SmolLM2, batch {args.batch}, {steps} steps, bf16 autocast, {args.threads} thread(s)")
    for name, fn in rows:
        times = sorted(fn() for _ in range(args.repeats))
        print(f"{name}: {times[len(times) // 2] * 1000:.1f} ms per decoding step (median of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
