"""Blocking tokens while sampling: their logits are −inf for as long as the context is open."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn


@contextmanager
def blocked_tokens(model: nn.Module, ids: Sequence[int]):
    """Sample with the logits of ``ids`` at −inf (the ``bad_words_ids`` of Korbak et al. 2023,
    arXiv:2302.08582, which keeps conditional training's control tokens out of samples)."""
    if not ids:
        yield
        return
    head = model.get_output_embeddings()
    index = torch.tensor(list(ids))

    def hook(module, inputs, output):
        return output.index_fill(-1, index.to(output.device), float("-inf"))

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
