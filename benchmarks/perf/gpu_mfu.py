"""On one GPU: sampling throughput against the memory-bandwidth bound, and the MFU of a PHF
pretraining step and of a DPG step, on a model sized for one H200 (about nine minutes).

The model is a Llama-architecture decoder with random weights built in code (no hub on the
device machine): ``--size h200`` is 24 layers of width 2048 (MLP 5632, 16 heads, 8 KV heads,
about 1.1 B parameters) with lit_align's 258-token byte tokenizer; ``--size tiny`` is a 2-layer
model for a dry run on CPU. It is saved once as a Hugging Face folder that the methods load.

1. Sampling (``Engine.sample``, bf16 weights, 64 samples × ``--tokens`` new tokens, log-probs
   included): tokens/s, and the bound ``64 × bandwidth / bytes read per decoding step`` (the
   weights plus the mean KV cache), ``--bandwidth-tbs`` the card's HBM bandwidth (H200: 4.8).
2. PHF (Korbak et al. 2023, arXiv:2302.08582), MLE objective from scratch on the standard-library
   corpus, bf16-mixed: PerfMonitor's achieved TFLOP/s and MFU (6·N FLOPs per trained token).
3. DPG (on-policy, pointwise constraint), bf16 sampling and gradient passes: step time, phases and MFU.

Prints one line per measurement and writes them as JSON to ``--out``.

    python benchmarks/perf/gpu_mfu.py --size tiny --device cpu --steps 2        # dry run
    python benchmarks/perf/gpu_mfu.py --out $OUT/gpu_mfu.json                    # on the GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SIZES = {
    "h200": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1),
}


def make_folder(size: str, folder: Path) -> Path:
    """A random Llama-architecture model of ``size`` with the byte tokenizer, saved to ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit_align.models.loading import byte_tokenizer

    if (folder / "config.json").exists():
        return folder
    tok = byte_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                      **SIZES[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


class Collect(L.Callback):
    """Every logged ``perf/*`` value, per training step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("perf/")})


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median over the steps after the first (warm-up) of every perf value."""
    rows = rows[1:] or rows
    keys = sorted({k for r in rows for k in r})
    return {k: statistics.median(r[k] for r in rows if k in r) for k in keys}


def measure_sampling(folder: Path, device: torch.device, batch: int, tokens: int, bandwidth_tbs: float) -> dict:
    from lit_align.models.engine import Engine
    from lit_align.models.settings import EngineSettings, SamplingSettings

    engine = Engine(EngineSettings(model=str(folder), sampling=SamplingSettings(max_new_tokens=tokens)),
                    needs_base=False, device=lambda: device)
    engine.model.to(device=device, dtype=torch.bfloat16)
    prompt = ["def main():"]
    engine.sample(prompt, batch)  # warm-up
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        samples = engine.sample(prompt, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    n_tok = int(samples.completion_mask.sum())
    sec = statistics.median(times)
    cfg = engine.model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    steps = samples.completion_ids.shape[1]
    mean_context = samples.prompt_ids.shape[1] + steps / 2
    bytes_per_step = weight_bytes + batch * mean_context * kv_per_token
    bound = batch * bandwidth_tbs * 1e12 / bytes_per_step
    return {"what": "sampling", "batch": batch, "new_tokens": steps, "seconds": sec, "tokens_per_s": n_tok / sec,
            "bound_tokens_per_s": bound, "share_of_bound": n_tok / sec / bound,
            "params": sum(p.numel() for p in engine.model.parameters())}


def trainer(device: torch.device, steps: int, callbacks: list) -> L.Trainer:
    from lit_align.callbacks import PerfMonitor

    accel = "gpu" if device.type == "cuda" else "cpu"
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    return L.Trainer(max_steps=steps, accelerator=accel, devices=1, precision=precision, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, num_sanity_val_steps=0, callbacks=[PerfMonitor(), *callbacks])


def measure_phf(size: str, device: torch.device, steps: int, seq_len: int, batch: int) -> dict:
    from lit_align.data import PretrainingDataModule
    from lit_align.methods import PHF
    from lit_align.scorers import Regex

    cfg = dict(SIZES[size], max_position_embeddings=max(seq_len, 256))
    module = PHF(model="tiny-llama", objective="mle", from_scratch=True, config_overrides=cfg, minibatch_size=batch,
                 lr=1e-4, optimizer="adamw")
    # the scores only label chunks (MLE ignores them): a regex, so no scorer package is needed there
    data = PretrainingDataModule(corpus="stdlib", scorer=Regex("\t", name="tab"), seq_len=seq_len, batch_size=batch,
                                 shuffle_buffer=0, val_every=0)
    col = Collect()
    trainer(device, steps, [col]).fit(module, data)
    return {"what": "phf_mle_step", "seq_len": seq_len, "batch": batch, **summary(col.rows)}


def measure_dpg(folder: Path, device: torch.device, steps: int, samples: int, tokens: int, minibatch: int) -> dict:
    from lit_align.data import PromptDataModule
    from lit_align.methods import DPG
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    low = "bfloat16" if device.type == "cuda" else None
    module = DPG(model=str(folder), target=[Pointwise(Regex("e", name="e"))], n_samples=samples,
                 minibatch_size=minibatch, max_new_tokens=tokens, lr=1e-6, off_policy=False, grad_dtype=low,
                 sample_dtype=low)
    col = Collect()
    trainer(device, steps, [col]).fit(module, PromptDataModule(prompt="def main():", steps_per_epoch=steps))
    return {"what": "dpg_step", "samples": samples, "new_tokens": tokens, "minibatch": minibatch, **summary(col.rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="h200", choices=sorted(SIZES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=5, help="training steps per measurement (the first is warm-up)")
    ap.add_argument("--tokens", type=int, default=256, help="new tokens per sample (sampling and DPG)")
    ap.add_argument("--bandwidth-tbs", type=float, default=4.8, help="HBM bandwidth in TB/s (H200 4.8, H100 3.35)")
    ap.add_argument("--folder", type=Path, default=Path("/tmp/lit_align_gpu_model"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    device = torch.device(args.device)
    folder = make_folder(args.size, args.folder / args.size)
    results = []
    for name, fn in [
        ("sampling", lambda: measure_sampling(folder, device, 64, args.tokens, args.bandwidth_tbs)),
        ("phf", lambda: measure_phf(args.size, device, args.steps, 2048 if args.size == "h200" else 64, 8)),
        ("dpg", lambda: measure_dpg(folder, device, args.steps, 64, args.tokens, 16)),
    ]:
        t = time.perf_counter()
        try:
            row = fn()
        except Exception as err:  # report and go on: one failure must not cost the other measurements
            row = {"what": name, "error": f"{type(err).__name__}: {err}"}
        row["wall_s"] = time.perf_counter() - t
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
