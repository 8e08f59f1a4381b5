"""PerfMonitor: where a training step's time goes, logged as ``perf/*``.

Per step: seconds in each phase the method timed (``sampling``, ``scoring``, ``log_probs`` of the
frozen reference/proposal, ``forward_backward``, ``optimizer``) and ``other`` (the rest of the
step: metrics, logging, Python), samples/s, tokens/s, achieved TFLOP/s and, where the
accelerator's peak is known or given, model FLOPs utilisation (MFU). FLOPs follow the usual
count: 2·N per token of a forward pass (sampling, no-grad log-probs), 6·N per token trained,
N the policy's parameter count.
"""

from __future__ import annotations

import time

import lightning as L
import torch

# dense bf16 peak TFLOP/s by device-name fragment (vendor data sheets, SXM parts)
KNOWN_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops_of(device: torch.device) -> float | None:
    """The bf16 dense peak of a known CUDA device, else None (CPUs: pass ``peak_tflops``)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in KNOWN_PEAK_TFLOPS.items() if k in name), None)


class PerfMonitor(L.Callback):
    """Log per-phase time, throughput and MFU of every training step.

    Args:
        peak_tflops: the hardware's peak for MFU (default: looked up for known GPUs; none on CPU).
        log_every_n_steps: log every n-th step (the timer runs every step).
    """

    def __init__(self, peak_tflops: float | None = None, log_every_n_steps: int = 1) -> None:
        if log_every_n_steps < 1:
            raise ValueError(f"PerfMonitor.log_every_n_steps must be ≥ 1, got {log_every_n_steps}")
        self.peak_tflops = peak_tflops
        self.every = log_every_n_steps
        self._start = 0.0
        self._steps = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        timer = getattr(pl_module, "timer", None)
        if timer is not None:
            timer.enabled = True
            timer.sync_cuda = pl_module.device.type == "cuda" or trainer.strategy.root_device.type == "cuda"
        if self.peak_tflops is None:
            self.peak_tflops = peak_tflops_of(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if getattr(pl_module, "timer", None) is not None:
            pl_module.timer.reset()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        timer = getattr(pl_module, "timer", None)
        self._steps += 1
        if timer is None or not timer.enabled or (self._steps - 1) % self.every:
            return
        if timer.sync_cuda:
            torch.cuda.synchronize()
        metrics = self.step_metrics(timer, time.perf_counter() - self._start, _n_params(pl_module))
        pl_module.log_dict({f"perf/{k}": v for k, v in metrics.items()}, on_step=True, on_epoch=False,
                           batch_size=1, rank_zero_only=True)

    def step_metrics(self, timer, step_s: float, n_params: int) -> dict[str, float]:
        m = {f"{phase}_s": s for phase, s in timer.seconds.items()}
        m["step_s"] = step_s
        m["other_s"] = max(step_s - sum(timer.seconds.values()), 0.0)
        if step_s > 0:
            m["samples_per_s"] = timer.samples / step_s
            sampled = timer.seconds.get("sampling", 0.0)
            if sampled > 0 and timer.samples:
                m["sampling_samples_per_s"] = timer.samples / sampled
            tflops = timer.flops_per_param() * n_params / step_s / 1e12
            m["tflops"] = tflops
            if self.peak_tflops:
                m["mfu"] = tflops / self.peak_tflops
        return m


def _n_params(pl_module) -> int:
    model = getattr(pl_module, "model", None)
    return sum(p.numel() for p in model.parameters()) if model is not None else 0
