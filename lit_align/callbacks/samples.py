"""Write sample texts, with each scorer's value beside them, to the logger (TensorBoard text tab)."""

from __future__ import annotations

import html
import math

import lightning as L

CONTEXT_CHARS = 160  # the tail of a context shown, cut at a space


def cell(text: str) -> str:
    """``text`` as one Markdown table cell: HTML-escaped (TensorBoard drops raw tags such as
    ``<|im_end|>``), pipes escaped, line breaks shown as ⏎."""
    return html.escape(text).replace("|", "\\|").replace("\r", "").replace("\n", " ⏎ ")


def context_tail(context: str, chars: int = CONTEXT_CHARS) -> str:
    """The end of ``context``, at most ``chars`` characters, starting at a word (``…`` when cut)."""
    if len(context) <= chars:
        return context
    tail = context[-chars:]
    cut = tail.find(" ")
    return "…" + (tail[cut + 1:] if 0 <= cut < chars // 2 else tail)


def _value(v) -> str:
    v = float(v)
    return f"{v:g}" if not math.isfinite(v) or v == int(v) else f"{v:.3f}"


def sample_table(contexts: list[str], texts: list[str], scores: dict[str, list[float]]) -> str:
    """A Markdown table of samples and their scores; a context shared by every row is written once above."""
    shared = len(set(contexts)) <= 1
    names = list(scores)
    head = ["#", *names, "sample"] if shared else ["#", "context", *names, "sample"]
    # not in a code span: Markdown would show the HTML escapes literally there
    lines = [f"context: {cell(contexts[0]) or '(empty)'}\n"] if shared and contexts else []
    lines += ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for i, (c, t) in enumerate(zip(contexts, texts)):
        row = [str(i), *([] if shared else [cell(context_tail(c))]), *(_value(scores[n][i]) for n in names), cell(t)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


class SampleTexts(L.Callback):
    """Log the first ``n`` samples of the last training step every ``every_n_steps`` steps, each
    with every scorer's value of that step (tag ``samples``)."""

    def __init__(self, every_n_steps: int = 10, n: int = 8) -> None:
        if every_n_steps < 1 or n < 1:
            raise ValueError("SampleTexts: every_n_steps and n must be ≥ 1")
        self.every_n_steps, self.n = every_n_steps, n

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rollout = getattr(pl_module, "last_rollout", None)  # on-policy methods: this step's samples
        samples = None if rollout is None else rollout.samples
        step = trainer.global_step
        if samples is None or step % self.every_n_steps != 0 or not trainer.is_global_zero:
            return
        n = min(self.n, len(samples.texts))
        scores = {getattr(s, "name", str(s)): [float(x) for x in list(v)[:n]] for s, v in (rollout.scores or {}).items()}
        table = sample_table(list(samples.contexts[:n]), list(samples.texts[:n]), scores)
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_text"):
                exp.add_text("samples", table, global_step=step)
