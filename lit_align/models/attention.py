"""Choosing a Hugging Face model's attention kernel for a block of code.

On CPUs, PyTorch's fused SDPA ("flash") kernel is slow in its *backward* pass for short
sequences in bf16: on SmolLM2-135M (32 sequences of 44 tokens, one thread) it took 1.5 s of a
7.4 s bf16 forward + backward, and the plain ("eager") attention made the whole pass 1.4× faster
(benchmarks/README.md). The forward is read at call time from ``config._attn_implementation``,
so switching it around a forward is cheap. The backward needs the same switch only where gradient
checkpointing reruns the forward inside it (:meth:`~lit_align.models.engine.Engine.backward_context`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


def _configs(model: nn.Module) -> list:
    """The model's config and sub-configs that carry an attention implementation."""
    config = getattr(model, "config", None)
    found = [config] + [getattr(config, k, None) for k in ("text_config", "decoder", "encoder")]
    return [c for c in found if c is not None and hasattr(c, "_attn_implementation")]


@contextlib.contextmanager
def attention_implementation(model: nn.Module, name: str | None) -> Iterator[None]:
    """Run ``model``'s forward passes inside the block with attention ``name`` (None: unchanged)."""
    configs = _configs(model) if name else []
    saved = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = name
        yield
    finally:
        for c, old in zip(configs, saved):
            c._attn_implementation = old
