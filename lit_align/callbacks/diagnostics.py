"""Training diagnostics of Korbak et al. 2022 (arXiv:2206.00761): gradient variance,
advantage statistics, diversity (distinct-n, self-BLEU).

The diversity measures are pure functions of texts (:func:`distinct_n`, :func:`sentence_bleu`,
:func:`self_bleu`) — BLEU is written here (NLTK's ``sentence_bleu`` with smoothing
method 1, uniform weights), so nothing beyond the core dependencies is needed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import lightning as L
import torch

__all__ = [
    "tokenize",
    "ngrams",
    "distinct_n",
    "sentence_bleu",
    "self_bleu",
    "per_sample_gradient_variance",
    "advantage_statistics",
    "GradientVariance",
    "AdvantageStatistics",
    "Diversity",
]

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Word and punctuation tokens (a dependency-free stand-in for NLTK's word_tokenize)."""
    return _TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int, mode: str = "per_text") -> float:
    """Distinct-n of a set of texts.

    ``per_text`` (gdc/cdpg): mean over texts of ``|set(n-grams)| / #tokens``;
    ``ngrams`` (PHF): mean over texts of ``|set(n-grams)| / #n-grams``;
    ``corpus``: ``|∪ n-grams| / Σ #n-grams`` over all texts. Empty texts are skipped.
    """
    if mode not in ("per_text", "ngrams", "corpus"):
        raise ValueError(f"distinct_n: mode must be per_text, ngrams or corpus, got {mode!r}")
    toks = [tokenize(t) for t in texts]
    if mode == "corpus":
        grams = [g for t in toks for g in ngrams(t, n)]
        return len(set(grams)) / len(grams) if grams else 0.0
    values = []
    for t in toks:
        grams = ngrams(t, n)
        denom = len(t) if mode == "per_text" else len(grams)
        if denom:
            values.append(len(set(grams)) / denom)
    return sum(values) / len(values) if values else 0.0


def sentence_bleu(references: Sequence[Sequence[str]], hypothesis: Sequence[str], max_n: int = 4) -> float:
    """BLEU-``max_n`` of one tokenised hypothesis against tokenised references.

    Uniform weights 1/max_n, clipped n-gram precisions, brevity penalty with the closest
    reference length, and NLTK's smoothing method 1 (a zero count becomes ε = 0.1).
    """
    hyp_len = len(hypothesis)
    if hyp_len == 0 or not references:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(ngrams(hypothesis, n))
        total = max(1, sum(counts.values()))  # NLTK: denominator max(1, count)
        max_ref: Counter = Counter()
        for ref in references:
            for g, c in Counter(ngrams(ref, n)).items():
                max_ref[g] = max(max_ref[g], c)
        clipped = sum(min(c, max_ref[g]) for g, c in counts.items())
        if n == 1 and clipped == 0:
            return 0.0  # no matching unigram: NLTK returns 0 whatever the smoothing
        log_p += math.log((clipped if clipped > 0 else 0.1) / total) / max_n
    ref_lens = [len(r) for r in references]
    closest = min(ref_lens, key=lambda r: (abs(r - hyp_len), r))
    bp = 1.0 if hyp_len > closest else math.exp(1 - closest / hyp_len)
    return bp * math.exp(log_p)


def self_bleu(texts: Sequence[str], max_n: int = 4, max_texts: int = 200) -> float:
    """Mean BLEU of each of the first ``max_texts`` texts against all the others (lower = more diverse)."""
    toks = [tokenize(t) for t in texts[:max_texts]]
    if len(toks) < 2:
        return 0.0
    scores = [sentence_bleu(toks[:i] + toks[i + 1 :], h, max_n) for i, h in enumerate(toks)]
    return sum(scores) / len(scores)


# -------------------------------------------------------------------------- gradient variance


def per_sample_gradient_variance(grads: torch.Tensor) -> dict[str, float]:
    """From per-sample gradients (n, d): ``E_i‖g_i‖² − ‖ḡ‖²`` and ``‖ḡ‖`` (GradientMonitor)."""
    g = grads.double()
    mean = g.mean(0)
    second = (g * g).sum(-1).mean()
    return {"grad/variance": float(second - (mean * mean).sum()), "grad/mean_l2": float(mean.norm()),
            "grad/second_moment": float(second)}


class GradientVariance(L.Callback):
    """Every ``every_n_steps`` steps, the variance of per-sample gradients of the method's loss.

    Uses the last training step's samples and minibatch loss (``pl_module.last_rollout``, see
    :class:`~lit_align.models.rollout.Rollout`): the loss of each of the first ``n_samples`` samples alone is back-propagated, its
    flattened gradient collected; the logged ``train/grad/variance`` is
    ``mean_i‖g_i‖² − ‖mean_i g_i‖²``. Runs after the optimizer step (at the updated
    parameters) and leaves no gradient behind.
    """

    def __init__(self, every_n_steps: int = 25, n_samples: int = 16) -> None:
        if every_n_steps < 1 or n_samples < 2:
            raise ValueError("GradientVariance: every_n_steps ≥ 1 and n_samples ≥ 2")
        self.every_n_steps, self.n_samples = every_n_steps, n_samples

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollout = getattr(pl_module, "last_rollout", None)
        loss_fn = None if rollout is None else rollout.loss
        if loss_fn is None or trainer.global_step % self.every_n_steps:
            return
        samples = rollout.samples
        params = [p for p in pl_module.model.parameters() if p.requires_grad]
        grads = []
        with torch.enable_grad():
            for i in range(min(self.n_samples, len(samples))):
                rows = slice(i, i + 1)
                mb = samples.select(rows)
                log_pi = pl_module.policy.token_log_probs(pl_module.model, mb).sum(-1)
                loss = loss_fn(mb, log_pi, rows)
                gs = torch.autograd.grad(loss, params, allow_unused=True)
                grads.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                        for g, p in zip(gs, params)]).detach().cpu())
        if len(grads) < 2:
            return
        stats = per_sample_gradient_variance(torch.stack(grads))
        pl_module.log_dict({f"train/{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False, batch_size=1)


# ------------------------------------------------------------------------ advantages


def advantage_statistics(advantages: torch.Tensor, satisfying: torch.Tensor | None = None) -> dict[str, float]:
    a = advantages.detach().double().reshape(-1)
    out = {"advantage/mean": float(a.mean()), "advantage/std": float(a.std()) if a.numel() > 1 else 0.0,
           "advantage/max": float(a.max()), "advantage/min": float(a.min()), "advantage/abs": float(a.abs().mean())}
    if satisfying is not None:
        s = satisfying.reshape(-1).bool().cpu()
        out["advantage/num_satisfying"] = float(s.sum())
        if s.any():
            out["advantage/filtered"] = float(a.cpu()[s].mean())  # mean over samples satisfying the target
    return out


class AdvantageStatistics(L.Callback):
    """Log mean, std, max, min, |·| of the last step's advantages (``pl_module.last_rollout.advantages``),
    and their mean over samples satisfying the target (``last_rollout.satisfying``), every N steps."""

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError("AdvantageStatistics: every_n_steps must be ≥ 1")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollout = getattr(pl_module, "last_rollout", None)
        adv = None if rollout is None else rollout.advantages
        if adv is None or trainer.global_step % self.every_n_steps:
            return
        stats = advantage_statistics(adv, rollout.satisfying)
        pl_module.log_dict({f"train/{k}": v for k, v in stats.items()}, on_step=True, on_epoch=False, batch_size=1)


# -------------------------------------------------------------------------- diversity


class Diversity(L.Callback):
    """Distinct-n and self-BLEU-n of the last training step's samples, every N steps.

    Logs ``train/diversity/distinct_{n}`` (``mode`` as in :func:`distinct_n`) and
    ``train/diversity/self_bleu_{n}`` on the first ``max_texts`` samples.
    """

    def __init__(self, every_n_steps: int = 10, distinct: Sequence[int] = (1, 2, 3),
                 self_bleu_n: Sequence[int] = (3, 4, 5), max_texts: int = 200, mode: str = "per_text") -> None:
        if every_n_steps < 1:
            raise ValueError("Diversity: every_n_steps must be ≥ 1")
        distinct_n([], 1, mode)  # validates mode
        self.every_n_steps, self.distinct, self.self_bleu_n = every_n_steps, list(distinct), list(self_bleu_n)
        self.max_texts, self.mode = max_texts, mode

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollout = getattr(pl_module, "last_rollout", None)
        samples = None if rollout is None else rollout.samples
        if samples is None or trainer.global_step % self.every_n_steps:
            return
        texts = list(samples.texts)
        m = {f"train/diversity/distinct_{n}": distinct_n(texts, n, self.mode) for n in self.distinct}
        m.update({f"train/diversity/self_bleu_{n}": self_bleu(texts, n, self.max_texts) for n in self.self_bleu_n})
        pl_module.log_dict(m, on_step=True, on_epoch=False, batch_size=1)
