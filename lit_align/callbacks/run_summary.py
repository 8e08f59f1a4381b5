"""What a finished run prints: where its logs, config and checkpoint are, and its final metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lit_align.model_card import key_metrics


class RunSummary(L.Callback):
    """At the end of ``fit``, print the log folder, the saved config, the newest checkpoint, the
    final values of the key metrics (scorers, divergences, reward, loss) and the export command.

    It also keeps the last logged metrics in every checkpoint (``state_dict``), so that
    ``python -m lit_align export`` can put them in the model card. The CLI adds it to every run.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def _record(self, trainer: L.Trainer) -> None:
        for key, value in trainer.callback_metrics.items():
            if hasattr(value, "numel") and value.numel() == 1 and math.isfinite(float(value)):
                self.metrics[key] = float(value)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._record(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.metrics = dict(state_dict.get("metrics", {}))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)
        rank_zero_info(self.summary(trainer))

    def summary(self, trainer: L.Trainer) -> str:
        lines = [f"Run {'stopped' if trainer.interrupted else 'finished'} at step {trainer.global_step}."]
        log_dir = trainer.log_dir if trainer.loggers else None
        if log_dir is not None:
            root = Path(log_dir).parent.parent if Path(log_dir).name.startswith("version_") else Path(log_dir)
            lines.append(f"  logs:       {log_dir}   (tensorboard --logdir {root})")
            if (Path(log_dir) / "config.yaml").is_file():
                lines.append(f"  config:     {Path(log_dir) / 'config.yaml'}")
        ckpt = newest_checkpoint(trainer)
        if ckpt:
            lines.append(f"  checkpoint: {ckpt}   (continue: fit --config ... --ckpt_path last)")
        shown = key_metrics(self.metrics)
        if shown:
            lines.append("  final:      " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        if ckpt:
            out = Path(log_dir) / "export" if log_dir is not None else Path("export")
            lines.append(f"  export:     python -m lit_align export --ckpt_path {ckpt} --out {out}")
        return "\n".join(lines)


def newest_checkpoint(trainer: L.Trainer) -> str | None:
    """The last or best checkpoint the run's checkpoint callbacks wrote, if any."""
    paths = []
    for cb in trainer.checkpoint_callbacks:
        for path in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if path and Path(path).exists():
                paths.append(Path(path))
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None
