"""Token log-probs from logits without a full-vocabulary log-softmax of the whole batch.

``log π(y_t | ·) = z[y_t] − logsumexp(z)``: only the selected logit and one logsumexp per row
are kept. Rows are processed in chunks, so the float32 working copy of the logits exists for
one chunk at a time, and the backward pass recomputes the softmax chunk by chunk from the
logits (kept in their own dtype, e.g. bf16) instead of storing a float32 log-softmax.
The result is float32 whatever the logits' dtype, and autocast is off inside.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: rows of (B·L, V) logits handled at once: 256 rows × 50k vocab × 4 bytes ≈ 50 MB
DEFAULT_CHUNK_ROWS = 256


class _SelectedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, chunk: int) -> Tensor:
        out = torch.empty(target.shape, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(out)
        for s in range(0, logits.shape[0], chunk):
            z = logits[s : s + chunk].float()
            lse[s : s + chunk] = torch.logsumexp(z, dim=-1)
            out[s : s + chunk] = z.gather(-1, target[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
        ctx.save_for_backward(logits, target, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        logits, target, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = grad[s : s + ctx.chunk].float()[:, None]
            # d/dz (z[y] − logsumexp z) = onehot(y) − softmax(z)
            # one float32 temporary per chunk: exp, scale and scatter in place
            gz = torch.sub(logits[s : s + ctx.chunk].float(), lse[s : s + ctx.chunk, None]).exp_().mul_(-g)
            gz.scatter_add_(-1, target[s : s + ctx.chunk, None], g)
            grad_logits[s : s + ctx.chunk] = gz.to(logits.dtype)
        return grad_logits, None, None


def selected_log_probs(logits: Tensor, target: Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Tensor:
    """``log_softmax(logits)[..., target]`` in float32, shape of ``target``; memory-lean (see module doc).

    ``logits``: (..., V) in any float dtype; ``target``: (...) long, every id in ``[0, V)``.
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"selected_log_probs: logits {tuple(logits.shape)} do not match target {tuple(target.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    flat_logits, flat_target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    with torch.autocast(logits.device.type, enabled=False):
        if torch.is_grad_enabled() and flat_logits.requires_grad:
            out = _SelectedLogProbs.apply(flat_logits, flat_target, chunk_rows)
        else:
            with torch.no_grad():
                out = _SelectedLogProbs.forward(_NoCtx(), flat_logits, flat_target, chunk_rows)
    return out.view(target.shape)


class _NoCtx:
    """Stand-in for autograd's ctx when no graph is built (nothing is saved)."""

    def save_for_backward(self, *tensors: Tensor) -> None:
        pass
