"""Export the trained policy as a Hugging Face folder at the end of ``fit``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from lit_align.export import export_checkpoint, read_checkpoint


class ExportPretrained(L.Callback):
    """At the end of ``fit``, write what ``python -m lit_align export`` writes (see
    :mod:`lit_align.export`): safetensors weights (LoRA merged unless ``adapter_only``), the
    tokenizer, a generation config and a model card with the final metrics.

    The weights go through a weights-only checkpoint, so any strategy works (under DDP, FSDP or
    DeepSpeed every rank takes part in writing it; rank 0 writes the folder).

    Args:
        out: the folder; default ``<log dir>/export`` (``export`` without a logger).
        adapter_only: LoRA runs: write the peft adapter alone.
        skip_if_interrupted: write nothing when the run was stopped early (ctrl-C, SIGTERM).
    """

    def __init__(self, out: str | None = None, adapter_only: bool = False, skip_if_interrupted: bool = True) -> None:
        self.out, self.adapter_only, self.skip_if_interrupted = out, adapter_only, skip_if_interrupted
        self.written: Path | None = None

    def folder(self, trainer: L.Trainer) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path(trainer.log_dir or trainer.default_root_dir) / "export"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.interrupted and self.skip_if_interrupted:
            return
        out = self.folder(trainer)
        tmp = out.with_name(out.name + ".weights.ckpt")  # a path every rank agrees on
        trainer.save_checkpoint(tmp, weights_only=True)  # collective: every rank calls it
        if trainer.is_global_zero:
            try:
                metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
                run_dir = trainer.log_dir if trainer.loggers else None
                self.written = export_checkpoint(read_checkpoint(tmp), out, self.adapter_only, run_dir, metrics)
            finally:
                _remove(tmp)
            rank_zero_info(f"Exported the policy to {self.written} (transformers' from_pretrained loads it)")
        trainer.strategy.barrier("lit_align.ExportPretrained")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        os.remove(path)
