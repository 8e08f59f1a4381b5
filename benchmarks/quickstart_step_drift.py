"""How far one Adam step moves the quickstart's policy: KL(π_old‖π_new) per completion.

Samples the quickstart's prompt with SmolLM2 (48 completions × 24 new tokens, temperature 1), takes
one on-policy DPG step with the GDC++ baseline — loss −mean((b(x)/Ẑ − 1) log π(x)), Ẑ the batch's
E[b] (Korbak et al. 2022, arXiv:2206.00761, eq. 3 with π as proposal) — with Adam's first step at
each learning rate, and estimates KL(π_old‖π_new) on fresh completions of π_old. Adam's first
step is close to sign descent (every weight moves by ≈ lr), so this is the drift a step costs
whatever its signal; ``benchmarks/results/quickstart/README.md`` compares it with the KL that the
constraint itself needs.

    python benchmarks/quickstart_step_drift.py              # lr 2e-5 and 1e-5, and 2e-5 with frozen embeddings
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
import yaml

from lit_align.cli import resolve_config
from lit_align.models.loading import load
from lit_align.models.policy import Policy
from lit_align.scorers import PositiveSentiment

# the quickstart's prompt, read from its config
PROMPT = yaml.safe_load(Path(resolve_config("quickstart")).read_text())["data"]["init_args"]["prompt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--eval-samples", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model, tok = load("smollm2")
    policy = Policy(tok, max_new_tokens=args.tokens)  # the quickstart's sampler: temperature 1, no top-k/p
    x = policy.sample(model, [PROMPT], args.samples)
    b = torch.tensor(PositiveSentiment(threshold=0.5).score(x.texts), dtype=torch.float)
    z = b.mean()
    fresh = policy.sample(model, [PROMPT], args.eval_samples)  # its log_q is log π_old, exactly
    print(f"E[b] on the step's {args.samples} samples: {z:.3f}")
    for name, lr, freeze_embeddings in [("lr 2e-5", 2e-5, False), ("lr 1e-5", 1e-5, False),
                                        ("lr 2e-5, embeddings frozen", 2e-5, True)]:
        m = copy.deepcopy(model)
        for pname, p in m.named_parameters():
            p.requires_grad_(not (freeze_embeddings and "embed" in pname))
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
        (-((b / z - 1) * policy.log_prob(m, x)).mean()).backward()
        opt.step()
        with torch.no_grad():
            kl = (fresh.log_q - policy.log_prob(m, fresh)).mean().item()
        print(f"{name}: KL(π_old‖π_new) ≈ {kl:.3f} nats per completion")


if __name__ == "__main__":
    main()
