"""Yun et al. (2025) toy figure: E_x KL(π*‖π̂) against the number of preference pairs n.

Yun et al. 2025 (arXiv:2506.01523) App. D.1; docs/toy_space.md. A tabular setting: ``--contexts`` contexts x (uniform) ×
``--vocab`` one-token responses; logits of π* and π0 i.i.d. N(0, ``--logit-std``²). Pairs
``a, b ~ μ = π0(·|x)``, labels from ``P(a≻b|x) = σ(γ·ln π*(a|x)/π*(b|x))`` with γ = 0.5.
Each method fits a tabular policy on the n labelled pairs, with lit_align's pure losses:

- **DPO**: ``dpo_loss`` (reference π0), β tuned per n;
- **PMLE**: ``pmle_loss`` + β·KL(π‖π0) (exact KL, the population version of the sampled term), β tuned;
- **RLHF**: a BT reward model R̂ (``bradley_terry_loss``) then the exact RLHF optimum
  π0·exp(R̂/β)/Z, β tuned;
- **RKL**: the same R̂ and the exact reverse-KL optimum π0^{β/(β+γ)}·exp(R̂/(β+γ))/Z with γ = 0.5,
  β tuned (β = 0 allowed);
- **distill**: the same R̂, soft labels σ(R̂(a) − R̂(b)) on *all* response pairs of every context
  weighted by μ×μ (unlabelled pairs are free: the reward model labels them),
  ``preference_distillation_loss`` + β·KL(π‖π0), β tuned.

Every fit is full-batch Adam from π0 (rewards from 0) for a fixed budget (``--steps``), all β of
the grid at once; β is tuned per n and seed by the true KL (an oracle, as a tuned-β curve).
Results are averaged over ``--seeds`` draws of π*, π0 and the data. Prints a markdown table,
writes a JSON file and a log-log PNG.

    python benchmarks/yun_toy.py                       # n = 2^5 … 2^14, 5 seeds
    python benchmarks/yun_toy.py --max-log2n 10 --seeds 3 --steps 300   # quick
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from lit_align.preference import (
    bradley_terry_loss,
    bt_probability,
    dpo_loss,
    pmle_loss,
    preference_distillation_loss,
)

BETAS = {  # each grid ends with a β large enough to stay at π0 (what tuning picks when n is tiny)
    "DPO": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0],
    "PMLE": [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
    "distill": [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
    "RLHF": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0],
    "RKL": [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0],
}
METHODS = list(BETAS)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Mean over contexts of KL(p(·|x)‖q(·|x)); log-probs of shape (..., X, K)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean(-1)


def adam(params: torch.Tensor, loss_fn, steps: int, lr: float) -> torch.Tensor:
    params = params.clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    return params.detach()


def make_problem(contexts: int, vocab: int, std: float, gen: torch.Generator):
    log_star = torch.log_softmax(std * torch.randn(contexts, vocab, generator=gen, dtype=torch.float64), -1)
    log_0 = torch.log_softmax(std * torch.randn(contexts, vocab, generator=gen, dtype=torch.float64), -1)
    return log_star, log_0


def sample_pairs(log_star, log_0, n: int, gamma: float, gen: torch.Generator):
    """(x, chosen, rejected) index tensors of n labelled pairs."""
    x = torch.randint(log_0.shape[0], (n,), generator=gen)
    ab = torch.multinomial(log_0[x].exp(), 2, replacement=True, generator=gen)
    a, b = ab[:, 0], ab[:, 1]
    p = bt_probability(log_star[x, a], log_star[x, b], gamma)
    a_wins = torch.bernoulli(p, generator=gen).bool()
    return x, torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def fit(method: str, log_0, pairs, gamma: float, steps: int, lr: float) -> torch.Tensor:
    """Log-probs (G, X, K) of the fitted policy for every β of the method's grid."""
    x, c, r = pairs
    betas = torch.tensor(BETAS[method], dtype=torch.float64)
    g = len(betas)
    init = log_0.expand(g, *log_0.shape).clone()

    def log_pi_of(theta):
        return torch.log_softmax(theta, -1)

    def kl_term(log_pi):
        return (betas * kl_rows(log_pi, log_0)).sum()

    if method == "DPO":
        def loss(theta):
            lp = log_pi_of(theta)
            return sum(dpo_loss(lp[i, x, c], lp[i, x, r], log_0[x, c], log_0[x, r], float(betas[i])) for i in range(g))
        return log_pi_of(adam(init, loss, steps, lr))
    if method == "PMLE":
        def loss(theta):
            lp = log_pi_of(theta)
            return pmle_loss(lp[:, x, c], lp[:, x, r], gamma, reduction="none").mean(-1).sum() + kl_term(lp)
        return log_pi_of(adam(init, loss, steps, lr))
    # reward model shared by RLHF, RKL and distillation
    r_hat = adam(torch.zeros_like(log_0), lambda rw: bradley_terry_loss(rw[x, c], rw[x, r]), steps, lr)
    if method == "RLHF":
        return torch.log_softmax(log_0 + r_hat / betas[:, None, None], -1)
    if method == "RKL":
        w = (betas / (betas + gamma))[:, None, None]
        return torch.log_softmax(w * log_0 + r_hat / (betas[:, None, None] + gamma), -1)
    # distillation: soft labels on all (a, b) pairs of each context, weighted by μ(a)μ(b)
    soft = bt_probability(r_hat[:, :, None], r_hat[:, None, :])
    mu = log_0.exp()
    weight = mu[:, :, None] * mu[:, None, :] / log_0.shape[0]

    def loss(theta):
        lp = log_pi_of(theta)
        terms = preference_distillation_loss(lp[:, :, :, None].expand(-1, -1, -1, lp.shape[-1]),
                                             lp[:, :, None, :].expand(-1, -1, lp.shape[-1], -1),
                                             soft.expand(g, -1, -1, -1), gamma, reduction="none")
        return (weight * terms).sum() + kl_term(lp)

    return log_pi_of(adam(init, loss, steps, lr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=10)
    ap.add_argument("--logit-std", type=float, default=1.0,
                    help="std of the logits of π* and π0 (Yun et al. App. D.1: 0.1; 1.0 makes the curves separate)")
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--min-log2n", type=int, default=5)
    ap.add_argument("--max-log2n", type=int, default=14)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=500, help="full-batch Adam steps per fit")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/yun_toy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ns = [2**k for k in range(args.min_log2n, args.max_log2n + 1)]
    results = {m: {n: [] for n in ns} for m in METHODS}
    chosen_beta = {m: {n: [] for n in ns} for m in METHODS}
    start = time.time()
    for seed in range(args.seeds):
        gen = torch.Generator().manual_seed(seed)
        log_star, log_0 = make_problem(args.contexts, args.vocab, args.logit_std, gen)
        for n in ns:
            pairs = sample_pairs(log_star, log_0, n, args.gamma, gen)
            for m in METHODS:
                kls = kl_rows(log_star, fit(m, log_0, pairs, args.gamma, args.steps, args.lr))
                best = int(torch.argmin(kls))
                results[m][n].append(float(kls[best]))
                chosen_beta[m][n].append(BETAS[m][best])
        print(f"seed {seed} done ({time.time() - start:.0f} s); KL(π*‖π0) = {float(kl_rows(log_star, log_0)):.4f}",
              flush=True)

    mean = {m: {n: sum(v) / len(v) for n, v in results[m].items()} for m in METHODS}
    se = {m: {n: (torch.tensor(v).std().item() / math.sqrt(len(v)) if len(v) > 1 else 0.0)
              for n, v in results[m].items()} for m in METHODS}
    header = "| n | " + " | ".join(METHODS) + " |"
    lines = [header, "|" + "---|" * (len(METHODS) + 1)]
    for n in ns:
        lines.append(f"| {n} | " + " | ".join(f"{mean[m][n]:.4f} ± {se[m][n]:.4f}" for m in METHODS) + " |")
    table = "\n".join(lines)
    print(f"\nE_x KL(π*‖π̂), mean ± s.e. over {args.seeds} seeds (β tuned per n), {time.time() - start:.0f} s\n")
    print(table)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(
        {"args": vars(args), "n": ns, "kl_mean": mean, "kl_se": se, "kl_all": results, "beta": chosen_beta},
        indent=1), encoding="utf-8")
    Path(f"{out}.md").write_text(table + "\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG")
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for m in METHODS:
        ax.errorbar(ns, [mean[m][n] for n in ns], yerr=[se[m][n] for n in ns], marker="o", ms=3, label=m, capsize=2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of preference pairs n")
    ax.set_ylabel("E_x KL(π* ‖ π̂)")
    ax.set_title(f"Yun et al. toy ({args.contexts}×{args.vocab}, γ = {args.gamma})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(Path(f"{out}.png"), dpi=120)
    print(f"wrote {out}.png, .json, .md")


if __name__ == "__main__":
    main()
