"""Multi-process helpers: per-rank sampling seeds and decisions shared by all ranks.

Every rank samples its own completions, so the random streams must differ per rank; every
decision taken from samples (skip a step, update the proposal, stop sampling) must be the same
on all ranks, or the collective calls of DDP/FSDP/DeepSpeed stop matching and the run hangs.
"""

from __future__ import annotations

import os
import random
import weakref

import lightning as L
import numpy as np
import torch

#: strategies whose parameters are sharded: every rank must make the same forward calls
SHARDED_STRATEGIES = ("FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy")


def seed_per_rank(rank: int) -> int:
    """Re-seed torch, numpy and ``random`` with a seed drawn from the current (shared) torch
    stream plus the rank: the same on every run with the same seed, different on every rank.
    Returns the new seed."""
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) + 7919 * int(rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return seed


def world_size(trainer) -> int:
    return 1 if trainer is None else int(trainer.world_size)


def any_rank(trainer, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one rank."""
    if world_size(trainer) == 1:
        return bool(flag)
    return bool(trainer.strategy.reduce_boolean_decision(bool(flag), all=False))


def all_ranks(trainer, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on all ranks."""
    if world_size(trainer) == 1:
        return bool(flag)
    return bool(trainer.strategy.reduce_boolean_decision(bool(flag), all=True))


def is_sharded(trainer) -> bool:
    """Whether the trainer's strategy shards parameters (FSDP, DeepSpeed, model parallel)."""
    if world_size(trainer) == 1:
        return False
    return any(cls.__name__ in SHARDED_STRATEGIES for cls in type(trainer.strategy).__mro__)


_BLOCK_NAMES: set[str] = set()
_TOP_UNITS: weakref.WeakSet = weakref.WeakSet()  # the models a LightningModule holds (not kept alive)


def wrap_transformer_blocks(module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
    """FSDP ``auto_wrap_policy``: one FSDP unit per transformer block, whatever the model, and
    one per model the LightningModule holds (policy, proposal, value head).

    The blocks are the classes a Hugging Face model names in ``_no_split_modules``
    (``LlamaDecoderLayer``, ``GPT2Block``, ``T5Block``, ...); FSDP visits a model before its
    blocks, so the names are known when the blocks are reached. The LightningModule itself (the
    root unit) keeps no parameters: its ``training_step`` runs inside the root's forward and
    calls ``backward`` there, which FSDP allows only for the parameters of inner units.
    """
    if recurse:
        if isinstance(module, L.LightningModule):
            _TOP_UNITS.update(child for child in module.children() if any(True for _ in child.parameters()))
        _BLOCK_NAMES.update(getattr(module, "_no_split_modules", None) or ())
        return True
    return type(module).__name__ in _BLOCK_NAMES or module in _TOP_UNITS


class UnsupportedStrategyError(ValueError):
    """A trainer strategy lit_align's methods do not support (yet); the message says what to use."""


#: set to 1 to run DeepSpeed anyway (to work on its support; see docs/scale.md)
EXPERIMENTAL_DEEPSPEED_ENV = "LIT_ALIGN_EXPERIMENTAL_DEEPSPEED"


def check_strategy(trainer) -> None:
    """Refuse, before any model is built, a strategy known to give wrong results with lit_align."""
    names = {cls.__name__ for cls in type(trainer.strategy).__mro__}
    if "DeepSpeedStrategy" in names and os.environ.get(EXPERIMENTAL_DEEPSPEED_ENV, "") in ("", "0"):
        raise UnsupportedStrategyError(
            "DeepSpeed is not supported yet. On one H200 (2026-11-26) ZeRO-2 took different updates from a "
            "plain GPU run when a step makes several backward passes (minibatch_size < n_samples), and ZeRO-3 "
            "partitions the models lit_align builds and copies (frozen base, DPG proposal). Use FSDP "
            "(--config strategies/fsdp.yaml) or DDP (--config strategies/ddp.yaml); "
            f"{EXPERIMENTAL_DEEPSPEED_ENV}=1 runs DeepSpeed anyway (docs/scale.md)."
        )
