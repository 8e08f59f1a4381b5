"""Scoring with shared prompts against one pass per row, on identical work, in one process.

The training step of every on-policy method scores its samples twice or more: the policy's
log-probs with a backward, the frozen base's without. Rows that share a prompt (the samples of
one context) can run that prompt once (``Policy.share_prompts``, lit_align/models/forward.py).
This times both ways, interleaved, on SmolLM2-135M-Instruct:

- ``code``: the ch. 4 code task at the reproduction's cpu budget: 4 standard-library signatures
  with docstrings in the chat template (≈ 90 prompt tokens), 8 completions each of ``--tokens``
  tokens, micro-batches of 8 (one context each);
- ``quickstart``: one 20-token prompt, 48 completions of 24 tokens, micro-batches of 24.

Per setting and precision (fp32, bf16 autocast) it prints the seconds of the policy pass
(forward + backward over every micro-batch) and of the base pass (no grad), and their ratios.

    python benchmarks/perf/shared_prompts.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def code_prompts(contexts: int) -> list[str]:
    """The first ``contexts`` prompts of the shipped offline code config (its template, stdlib signatures)."""
    import yaml

    from lit_align.cli import resolve_config
    from lit_align.data.stdlib_code import stdlib_functions

    config = yaml.safe_load(open(resolve_config("cdpg_code_compile_offline.yaml")))
    template = config["data"]["init_args"]["prompt_template"]
    return [template.replace("{source}", prompt) for _, prompt, _ in list(stdlib_functions(200, True))[:contexts]]


def make_samples(policy, contexts: list[str], n: int, tokens: int):
    from lit_align.models import Samples

    ids, mask = policy.encode_contexts(contexts)
    b = len(contexts) * n
    gen = torch.Generator().manual_seed(0)
    comp = torch.randint(100, policy.tokenizer.vocab_size - 1, (b, tokens), generator=gen)
    return Samples(ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), comp, torch.ones_like(comp),
                   torch.zeros(b), [""] * b, [c for c in contexts for _ in range(n)],
                   torch.arange(len(contexts)).repeat_interleave(n))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96, help="completion tokens of the code setting")
    ap.add_argument("--settings", default="code,quickstart")
    args = ap.parse_args()
    from lit_align.models import Policy, load

    model, tok = load("smollm2")
    model.train()
    policy = Policy(tok, chat_template=True)
    plain = Policy(tok)
    work = {
        "code": (policy, code_prompts(4), 8, args.tokens, 8),
        "quickstart": (plain, ["<|im_start|>user\nDescribe a movie you watched recently in one sentence."
                               "<|im_end|>\n<|im_start|>assistant\n"], 48, 24, 24),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SmolLM2-135M-Instruct")
    print("| setting | precision | prompt tokens | pass | one pass per row (s) | shared prompts (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name in args.settings.split(","):
        pol, contexts, n, tokens, mb = work[name]
        samples = make_samples(pol, contexts, n, tokens)
        prompt_len = float(samples.prompt_mask.sum(-1).float().mean())
        for precision in ("fp32", "bf16"):
            amp = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

            def policy_pass():
                with amp:
                    for batch in samples.minibatches(mb):
                        pol.token_log_probs(model, batch).sum().backward()
                model.zero_grad(set_to_none=True)

            def base_pass():
                with amp, torch.no_grad():
                    pol.log_prob(model, samples, batch_size=mb)

            times = {(p, s): [] for p in ("policy", "base") for s in (False, True)}
            for _ in range(args.repeats):
                for share in (False, True):
                    pol.share_prompts = share
                    times[("policy", share)].append(timed(policy_pass))
                    times[("base", share)].append(timed(base_pass))
            for p in ("policy", "base"):
                full, shared = (statistics.median(times[(p, s)]) for s in (False, True))
                print(f"| {name} ({len(contexts)} × {n} × {tokens}) | {precision} | {prompt_len:.0f} | {p} | "
                      f"{full:.2f} | {shared:.2f} | {full / shared:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
