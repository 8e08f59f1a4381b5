"""Write sample texts to the logger (TensorBoard text tab) every few steps."""

from __future__ import annotations

import html

import lightning as L


class SampleTexts(L.Callback):
    """Log the first ``n`` samples of the last training step every ``every_n_steps`` steps."""

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
        rows = [
            f"| {i} | {html.escape(c[-60:])!s} | {html.escape(t)!s} |".replace("\n", " ")
            for i, (c, t) in enumerate(zip(samples.contexts[: self.n], samples.texts[: self.n]))
        ]
        table = "| # | context | sample |\n|---|---|---|\n" + "\n".join(rows)
        for logger in trainer.loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_text"):
                exp.add_text("samples", table, global_step=step)
