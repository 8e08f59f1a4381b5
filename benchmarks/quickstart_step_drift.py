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

import torch

from lit_align.models.loading import load
from lit_align.scorers import PositiveSentiment

PROMPT = "<|im_start|>user\nDescribe a movie you watched recently in one sentence.<|im_end|>\n<|im_start|>assistant\n"


def sample(model, ids: torch.Tensor, n: int, tokens: int, eos: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids.repeat(n, 1), attention_mask=torch.ones_like(ids).repeat(n, 1), do_sample=True,
                              top_k=0, top_p=1.0, max_new_tokens=tokens, pad_token_id=eos)


def completion_logprob(model, seqs: torch.Tensor, prompt_len: int, eos: int) -> torch.Tensor:
    """log π(x) of each completion, up to and including its first EOS."""
    logits = model(seqs).logits[:, prompt_len - 1:-1].float()
    tokens = seqs[:, prompt_len:]
    lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    after_eos = (tokens == eos).long().cumsum(-1) - (tokens == eos).long() > 0
    return lp.masked_fill(after_eos, 0.0).sum(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--eval-samples", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model, tok = load("smollm2")
    model.eval()
    ids = tok(PROMPT, return_tensors="pt").input_ids
    eos = tok.eos_token_id
    scorer = PositiveSentiment(threshold=0.5)

    x = sample(model, ids, args.samples, args.tokens, eos)
    b = torch.tensor(scorer.score(tok.batch_decode(x[:, ids.shape[1]:], skip_special_tokens=True)), dtype=torch.float)
    z = b.mean()
    fresh = sample(model, ids, args.eval_samples, args.tokens, eos)
    with torch.no_grad():
        before = completion_logprob(model, fresh, ids.shape[1], eos)
    print(f"E[b] on the step's {args.samples} samples: {z:.3f}")
    for name, lr, freeze_embeddings in [("lr 2e-5", 2e-5, False), ("lr 1e-5", 1e-5, False),
                                        ("lr 2e-5, embeddings frozen", 2e-5, True)]:
        m = copy.deepcopy(model)
        for pname, p in m.named_parameters():
            p.requires_grad_(not (freeze_embeddings and "embed" in pname))
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
        (-((b / z - 1) * completion_logprob(m, x, ids.shape[1], eos)).mean()).backward()
        opt.step()
        with torch.no_grad():
            kl = (before - completion_logprob(m, fresh, ids.shape[1], eos)).mean().item()
        print(f"{name}: KL(π_old‖π_new) ≈ {kl:.3f} nats per completion")


if __name__ == "__main__":
    main()
