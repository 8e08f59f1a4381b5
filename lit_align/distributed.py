"""Multi-process helpers: per-rank sampling seeds and decisions shared by all ranks.

Every rank samples its own completions, so the random streams must differ per rank; every
decision taken from samples (skip a step, update the proposal, stop sampling) must be the same
on all ranks, or the collective calls of DDP/FSDP/DeepSpeed stop matching and the run hangs.
"""

from __future__ import annotations

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


def trainer_of(module) -> "L.Trainer | None":
    """The Trainer a LightningModule is attached to, or None (``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def setup_sampling_ranks(trainer, rank: int, policy) -> None:
    """Per-rank sampling streams; under sharded strategies the same number of decoding steps on
    all ranks (``policy.sync_finished``)."""
    if world_size(trainer) > 1:
        seed_per_rank(rank)
        if is_sharded(trainer) and policy is not None:
            policy.sync_finished = lambda done: all_ranks(trainer, done)


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


def strategy_is(trainer, *names: str) -> bool:
    """Whether the trainer's strategy is (a subclass of) one of Lightning's strategies ``names``."""
    return trainer is not None and any(cls.__name__ in names for cls in type(trainer.strategy).__mro__)


def is_sharded(trainer) -> bool:
    """Whether the trainer's strategy shards parameters (FSDP, DeepSpeed, model parallel)."""
    return world_size(trainer) > 1 and strategy_is(trainer, *SHARDED_STRATEGIES)


_BLOCK_NAMES: set[str] = set()
_TOP_UNITS: weakref.WeakSet = weakref.WeakSet()  # the models a LightningModule holds (not kept alive)


def wrap_transformer_blocks(module, recurse: bool, nonwrapped_numel: int = 0) -> bool:
    """FSDP ``auto_wrap_policy``: one FSDP unit per transformer block, whatever the model, and
    one per model the LightningModule holds that trains weights outside its blocks (a full
    policy, a value head).

    The blocks are the classes a Hugging Face model names in ``_no_split_modules``
    (``LlamaDecoderLayer``, ``GPT2Block``, ``T5Block``, ...); FSDP visits a model before its
    blocks, so the names are known when the blocks are reached. The LightningModule itself (the
    root unit) keeps no trained parameter: its ``training_step`` runs inside the root's forward
    and calls ``backward`` there, which FSDP allows only for the parameters of inner units. What
    is frozen outside the blocks (a LoRA policy's embeddings and head, a frozen proposal's) stays
    in the root: as a unit of its own, all frozen, no backward would reset it after a forward
    with gradients, and its full state dict (checkpoints) then fails.
    """
    if recurse:
        if isinstance(module, L.LightningModule):
            _TOP_UNITS.update(child for child in module.children() if _trains_outside_blocks(child))
        _BLOCK_NAMES.update(getattr(module, "_no_split_modules", None) or ())
        return True
    return type(module).__name__ in _BLOCK_NAMES or module in _TOP_UNITS


def _trains_outside_blocks(model) -> bool:
    """Whether ``model`` has a trainable parameter outside its transformer blocks."""
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    in_blocks = {id(p) for m in model.modules() if type(m).__name__ in names for p in m.parameters()}
    return any(p.requires_grad and id(p) not in in_blocks for p in model.parameters())


class UnsupportedStrategyError(ValueError):
    """A trainer strategy lit_align's methods do not support (yet); the message says what to use."""


#: why a ZeRO-3 step may make only one backward pass (raised at the second one, before any update)
ZERO3_ONE_BACKWARD = (
    "DeepSpeed ZeRO-3: this step makes a second backward pass before its optimizer step, and ZeRO-3 then "
    "takes wrong updates (the training step runs inside DeepSpeed's forward, where ZeRO-3 loses the first "
    "pass's gradients; checked on CPU, docs/scale.md). Make one backward per step: minibatch_size ≥ the "
    "samples (or pairs, chunks) per step, with gradient_checkpointing: true to fit it in memory; preference "
    "methods also need no KL term. Or use ZeRO-2 (strategies/deepspeed_zero2.yaml) or FSDP (strategies/fsdp.yaml).")


def clip_sharded_grad_norm_(parameters, max_norm: float, trainer) -> torch.Tensor:
    """Clip gradients sharded by FSDP to a global L2 norm ``max_norm`` (as
    ``torch.nn.utils.clip_grad_norm_`` on the full gradients: coefficient max_norm / (norm + 1e-6),
    at most 1). Each rank holds its own shard of every gradient (FULL_SHARD, SHARD_GRAD_OP), so
    the squared norms add up over ranks; with NO_SHARD every rank holds the whole (all-reduced)
    gradient. Returns the total norm."""
    strategy = str(getattr(trainer.strategy, "sharding_strategy", "FULL_SHARD"))
    if "HYBRID" in strategy:
        raise UnsupportedStrategyError("max_grad_norm with FSDP HYBRID_SHARD is not supported: use FULL_SHARD or "
                                       "SHARD_GRAD_OP, or max_grad_norm: null")
    grads = [p.grad for p in parameters if p.grad is not None and p.grad.numel()]
    device = grads[0].device if grads else trainer.strategy.root_device
    local = torch.zeros((), device=device, dtype=torch.float32)
    for g in grads:
        local = local + g.detach().float().pow(2).sum()
    if "NO_SHARD" not in strategy and world_size(trainer) > 1:
        torch.distributed.all_reduce(local)
    total = local.sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total


def _zero_stage(config: dict | None) -> int:
    zero = (config or {}).get("zero_optimization") or {}
    return int(zero.get("stage", 0)) if isinstance(zero, dict) else 0


def deepspeed_stage(trainer) -> int:
    """The ZeRO stage of a DeepSpeed strategy (0 without DeepSpeed)."""
    if not strategy_is(trainer, "DeepSpeedStrategy"):
        return 0
    return _zero_stage(getattr(trainer.strategy, "config", None))


def check_strategy(trainer, max_grad_norm: float | None = None, sampler: str | None = None) -> None:
    """Before any model is built: set up DeepSpeed for lit_align's steps (:func:`prepare_deepspeed`),
    or refuse it with a clear error."""
    if sampler == "vllm" and (strategy_is(trainer, "FSDPStrategy", "ModelParallelStrategy")
                              or deepspeed_stage(trainer) >= 3):
        raise UnsupportedStrategyError(
            f"sampler: vllm needs whole weights on every rank, which {type(trainer.strategy).__name__} shards: "
            "use DDP or DeepSpeed ZeRO-1/2 with it, or sampler: native"
        )
    if strategy_is(trainer, "DeepSpeedStrategy"):
        prepare_deepspeed(getattr(trainer.strategy, "config", None), max_grad_norm)


def prepare_deepspeed(config: dict | None, max_grad_norm: float | None) -> None:
    """Make a DeepSpeed config (Lightning's ``DeepSpeedStrategy.config``, edited in place before the
    engine is built) take the steps lit_align takes.

    - Several backward passes per optimizer step (``minibatch_size < n_samples``) are
      accumulated by the caller: ``managed_gradient_accumulation: false`` (DeepSpeed ≥ 0.19),
      else DeepSpeed treats each backward as an accumulation boundary and the update is wrong.
    - DeepSpeed clips gradients itself (Lightning's clipping is a no-op under it): the
      method's ``max_grad_norm`` becomes ``gradient_clipping``.
    - ZeRO-3 (see :data:`ZERO3_ONE_BACKWARD`) takes one backward pass per optimizer step; the
      models are then built outside ``deepspeed.zero.Init`` (:meth:`EngineModule.setup`).
    """
    if config is None:
        return
    zero, stage = config.get("zero_optimization") or {}, _zero_stage(config)
    try:
        from deepspeed.runtime import config as ds_config
    except ImportError:  # Lightning says that deepspeed is missing, with the install line
        return
    if not hasattr(ds_config, "get_managed_gradient_accumulation"):
        import deepspeed

        raise UnsupportedStrategyError(
            f"DeepSpeed {deepspeed.__version__} cannot take several backward passes per optimizer step "
            "(no managed_gradient_accumulation option): pip install -U 'deepspeed>=0.19.8'.")
    if config.get("managed_gradient_accumulation") is True:
        raise UnsupportedStrategyError(
            "DeepSpeed config: managed_gradient_accumulation must be false with lit_align (its steps make "
            "several backward passes per optimizer step); remove the key or set it to false.")
    config["managed_gradient_accumulation"] = False
    if stage < 2 and isinstance(zero, dict) and zero.get("overlap_comm"):
        zero["overlap_comm"] = False  # DeepSpeed allows unmanaged accumulation with overlap only at stage 2
    if max_grad_norm:
        clip = config.get("gradient_clipping")
        if clip and float(clip) != float(max_grad_norm):
            raise UnsupportedStrategyError(
                f"DeepSpeed config gradient_clipping={clip} and the method's max_grad_norm={max_grad_norm} "
                "disagree: set one of them (DeepSpeed clips with its own value).")
        config["gradient_clipping"] = float(max_grad_norm)
