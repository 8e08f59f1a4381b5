"""Task metrics of the conditional tasks (Korbak et al. 2022, arXiv:2112.00791): BLEU, ROUGE, compile rate, PEP8.

:class:`TaskMetrics` decodes the validation contexts with the policy — by exact sampling
and/or by beam search ("map" decoding of the CDPG paper: 4 beams, length penalty 2.0,
no repeated 3-grams, early stopping) — and logs ``val/<decoding>/<metric>``.

The metric functions are plain functions of texts. BLEU needs ``sacrebleu`` and ROUGE
``rouge-score`` (``pip install lit-align[metrics]``); when one is missing the metric is
skipped with a warning saying what to install, and the run goes on.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from lightning.pytorch.callbacks import Callback

from lit_align.contexts import source_of

METRICS = ("bleu", "rouge", "compile_rate", "pep8_errors", "entity_consistency", "numeral_consistency", "length")
DECODINGS = ("sampling", "beam")


class MissingMetricPackage(ImportError):
    pass


def _missing(metric: str, package: str) -> MissingMetricPackage:
    return MissingMetricPackage(f"metric {metric!r} needs the package {package}: pip install {package} "
                                "(or pip install 'lit-align[metrics]'); skipped")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus SacreBLEU (0–100) of ``hypotheses`` against one reference each."""
    try:
        import sacrebleu
    except ImportError as err:
        raise _missing("bleu", "sacrebleu") from err
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (0–1) with stemming (``rouge-score``)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise _missing("rouge", "rouge-score") from err
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for h, r in zip(hypotheses, references):
        for k, v in scorer.score(r, h).items():
            totals[k] += v.fmeasure
    n = max(len(hypotheses), 1)
    return {k: v / n for k, v in totals.items()}


def compile_rate(texts: Sequence[str], contexts: Sequence[str]) -> float:
    from lit_align.scorers.code import Compilable

    return float(Compilable()(texts, contexts).mean())


def pep8_errors(texts: Sequence[str], contexts: Sequence[str]) -> float:
    """Mean number of pycodestyle violations per sample."""
    try:
        from lit_align.scorers.code import PEP8Errors

        return float(PEP8Errors()(texts, contexts).mean())
    except ImportError as err:
        raise _missing("pep8_errors", "pycodestyle") from err


def compute(metric: str, texts: Sequence[str], contexts: Sequence[str]) -> dict[str, float]:
    """One metric (a name of ``METRICS``) as ``{log name: value}``."""
    refs = [getattr(c, "reference", None) for c in contexts]
    if metric in ("bleu", "rouge"):
        pairs = [(t, r) for t, r in zip(texts, refs) if r is not None]
        if not pairs:
            return {}
        hyps, rs = zip(*pairs)
        return {"bleu": bleu(hyps, rs)} if metric == "bleu" else rouge(hyps, rs)
    if metric == "compile_rate":
        return {"compile_rate": compile_rate(texts, contexts)}
    if metric == "pep8_errors":
        return {"pep8_errors": pep8_errors(texts, contexts)}
    if metric == "entity_consistency":
        from lit_align.scorers.entities import EntityConsistency

        s = EntityConsistency(backend="auto")
        counts = [s.details(t, source_of(c)) for t, c in zip(texts, contexts)]
        n_ent = sum(n for n, _ in counts)
        return {"entity_consistency": float(s(texts, contexts).mean()),
                "n_entities": n_ent / max(len(texts), 1),
                "entity_precision_source": sum(p for _, p in counts) / n_ent if n_ent else 0.0}
    if metric == "numeral_consistency":
        from lit_align.scorers.numeral import NumeralConsistency

        return {"numeral_consistency": float(NumeralConsistency()(texts, contexts).mean())}
    if metric == "length":
        return {"length_words": sum(len(t.split()) for t in texts) / max(len(texts), 1)}
    raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


@torch.no_grad()
def beam_decode(pl_module, contexts: Sequence[str], num_beams: int = 4, length_penalty: float = 2.0,
                no_repeat_ngram_size: int = 3, max_new_tokens: int | None = None) -> list[str]:
    """Beam-search outputs of the policy for ``contexts`` (prompts encoded as for sampling)."""
    model, policy = pl_module.model, pl_module.policy
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    ids, mask = policy.encode_contexts(list(contexts), seq2seq, pl_module.device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=num_beams,
                             length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                             early_stopping=True, max_new_tokens=max_new_tokens or policy.max_new_tokens,
                             pad_token_id=policy.pad_id, eos_token_id=policy.eos_id)
    finally:
        model.train(was_training)
    new = out if seq2seq else out[:, ids.shape[1]:]
    return policy.tokenizer.batch_decode(new, skip_special_tokens=True)


class TaskMetrics(Callback):
    """Decode validation contexts (sampling and/or beam search) and log task metrics.

    Args:
        metrics: names from ``bleu``, ``rouge``, ``compile_rate``, ``pep8_errors``,
            ``entity_consistency``, ``numeral_consistency``, ``length``.
        decoding: ``sampling`` (one exact sample per context; the default) and/or ``beam`` (the
            CDPG paper's evaluation, several times slower on a CPU: the hub configs ask for it).
        num_beams, length_penalty, no_repeat_ngram_size: beam search settings (the paper's defaults).
        max_new_tokens: decoding length (default: the method's ``max_new_tokens``).
        max_contexts: contexts decoded per validation run (the first ones).
    """

    def __init__(self, metrics: Sequence[str] = ("bleu",), decoding: Sequence[str] = ("sampling",),
                 num_beams: int = 4, length_penalty: float = 2.0, no_repeat_ngram_size: int = 3,
                 max_new_tokens: int | None = None, max_contexts: int | None = 64) -> None:
        bad = [m for m in metrics if m not in METRICS] + [d for d in decoding if d not in DECODINGS]
        if bad:
            raise ValueError(f"TaskMetrics: unknown {bad}; metrics are {METRICS}, decodings {DECODINGS}")
        self.metrics, self.decoding = list(metrics), list(decoding)
        self.beam = dict(num_beams=num_beams, length_penalty=length_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, max_new_tokens=max_new_tokens)
        self.max_contexts = max_contexts
        self._warned: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.texts = {d: [] for d in self.decoding}
        self.contexts: list[str] = []

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, stacklevel=2)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        room = None if self.max_contexts is None else self.max_contexts - len(self.contexts)
        contexts = list(batch)[: room] if room is not None else list(batch)
        if not contexts:
            return
        self.contexts += contexts
        for d in self.decoding:
            if d == "sampling":
                self.texts[d] += pl_module.sample(contexts, 1).texts
            elif not hasattr(pl_module.model, "generate"):
                self._warn(f"TaskMetrics: {type(pl_module.model).__name__} has no generate(); beam decoding skipped")
            else:
                self.texts[d] += beam_decode(pl_module, contexts, **self.beam)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.contexts:
            return
        for d in self.decoding:
            texts = self.texts[d]
            if len(texts) != len(self.contexts):
                continue
            for metric in self.metrics:
                try:
                    values = compute(metric, texts, self.contexts)
                except MissingMetricPackage as err:
                    self._warn(str(err))
                    continue
                for name, v in values.items():
                    pl_module.log(f"val/{d}/{name}", float(v), batch_size=1, sync_dist=True)
        self.last_texts = {d: list(t) for d, t in self.texts.items()}
        self._reset()
