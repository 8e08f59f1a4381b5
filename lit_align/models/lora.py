"""LoRA (peft) for every method, without second copies of the weights.

With ``lora:`` set on a method, the policy is a peft model and:

- the base LM ``a`` is :class:`AdapterDisabled`: the same weights with the adapters switched
  off (``a`` is exactly the pretrained model, since only the adapters are trained);
- a frozen snapshot of the policy (DPG's proposal q) is :class:`AdapterSnapshot`: a copy of
  the adapter weights only, swapped into the policy while it samples or scores;
- the checkpoint keeps only trainable weights (adapters, heads) and snapshots
  (:func:`frozen_state_keys` lists what is left out).

``pip install 'lit-align[lora]'`` installs peft.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

#: LoRA settings used unless the config gives others (no dropout: sampling must stay exact)
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}


def require_peft():
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "`lora:` needs the package peft: pip install 'lit-align[lora]' (or pip install peft), "
            "or remove `lora:` from the model's init_args"
        ) from err
    return peft


def apply_lora(model: nn.Module, config: dict) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model; ``config`` overrides :data:`DEFAULT_LORA` (LoraConfig fields)."""
    peft = require_peft()
    if not hasattr(model, "get_input_embeddings"):
        raise ValueError(f"lora: {type(model).__name__} is not a Hugging Face model; LoRA needs one (not model: toy)")
    settings = {**DEFAULT_LORA, **dict(config)}
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    settings.setdefault("task_type", "SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM")
    try:
        lora_config = peft.LoraConfig(**settings)
    except TypeError as err:
        raise ValueError(f"lora: {err}; the keys of `lora:` are peft.LoraConfig fields (r, lora_alpha, "
                         "target_modules, ...)") from err
    return peft.get_peft_model(model, lora_config)


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def computes_with_lora(model: nn.Module) -> bool:
    """A LoRA policy or one of its views (adapter-disabled base, adapter snapshot)."""
    return isinstance(model, _View) or is_lora(model)


class _View(nn.Module):
    """A module that runs the (unregistered) peft policy in some adapter state.

    It owns no parameters of the policy, so it adds nothing to the checkpoint, to DDP or to
    the optimizer; ``.to()`` on it does not move the policy, and its train/eval mode is the
    policy's.
    """

    supports_cache = True

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.__dict__["peft_model"] = peft_model

    @property
    def training(self) -> bool:  # the policy's mode (e.g. sampling switches it to eval)
        model = self.__dict__.get("peft_model")
        return bool(model.training) if model is not None else False

    @training.setter
    def training(self, mode: bool) -> None:
        pass  # nn.Module.__init__ sets it; the policy's own flag is the state

    def train(self, mode: bool = True) -> "_View":
        self.peft_model.train(mode)
        return self

    @property
    def config(self):
        return self.peft_model.config

    @property
    def device(self) -> torch.device:
        return next(self.peft_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.peft_model.parameters()).dtype

    def get_base_model(self) -> nn.Module:
        return self.peft_model.get_base_model()

    def active(self) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        """The adapter state of this view, in eval mode (a frozen model is evaluated in inference mode)."""
        was_training = self.peft_model.training
        if was_training:
            self.peft_model.eval()
        try:
            with self.active():
                yield
        finally:
            if was_training:
                self.peft_model.train(True)

    def forward(self, *args, **kwargs):
        with self._frozen():
            return self.peft_model(*args, **kwargs)

    def get_encoder(self):
        encoder = self.peft_model.get_encoder()

        def run(*args, **kwargs):
            with self._frozen():
                return encoder(*args, **kwargs)

        return run


class AdapterDisabled(_View):
    """The base LM ``a``: the policy with its adapters switched off (no copy of any weight)."""

    def active(self) -> contextlib.AbstractContextManager:
        return self.peft_model.disable_adapter()


def merged_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The weights a LoRA policy, :class:`AdapterSnapshot` (swapped in) or :class:`AdapterDisabled`
    computes with, under the base model's own state-dict names: ``W + s·B·A`` for adapted layers
    (none for the adapter-disabled view), adapter tensors left out. Nothing is written into the
    policy (for an inference engine holding its own copy, e.g. ``sampler: vllm``)."""
    peft_model = model.peft_model if isinstance(model, _View) else model
    adapters = not isinstance(model, AdapterDisabled)
    base = peft_model.get_base_model()
    deltas: dict[str, Tensor] = {}
    if adapters:
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
                active = [a for a in module.active_adapters if a in module.lora_A]
                if active and not getattr(module, "disable_adapters", False):
                    deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in active)
    with torch.no_grad():
        for key, tensor in base.state_dict().items():
            if "lora_" in key or (".original_module." if adapters else ".modules_to_save.") in key:
                continue
            name = key.replace(".base_layer.", ".").replace(".original_module.", ".")
            name = name.replace(".modules_to_save.default.", ".")
            tensor = tensor.detach()
            yield name, tensor + deltas[name].to(tensor.dtype) if name in deltas else tensor


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class AdapterSnapshot(_View):
    """A frozen snapshot of the policy holding only its trainable (adapter) weights.

    The copies are buffers (so they are in the checkpoint, a few MB); :meth:`active` swaps
    them into the policy for the duration of a forward pass (or of a whole sampling call,
    see :meth:`swapped`) and swaps the current weights back.
    """

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__(peft_model)
        self.names = [n for n, _ in trainable_named_parameters(peft_model)]
        if not self.names:
            raise ValueError("AdapterSnapshot: the policy has no trainable parameters")
        for i, (_, p) in enumerate(trainable_named_parameters(peft_model)):
            self.register_buffer(f"w{i}", p.detach().clone())
        self._depth = 0

    def snapshot_tensors(self) -> list[Tensor]:
        return [getattr(self, f"w{i}") for i in range(len(self.names))]

    def _params(self) -> list[nn.Parameter]:
        # names are taken before a strategy wraps the model; FSDP and activation checkpointing
        # insert wrapper modules into them
        params = {unwrapped_name(n): p for n, p in self.peft_model.named_parameters()}
        return [params[n] for n in self.names]

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the policy's current trainable weights into the snapshot (q ← π)."""
        for buf, p in zip(self.snapshot_tensors(), self._params()):
            buf.copy_(p.detach())

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Run the policy with the snapshot's weights inside the block (re-entrant)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        params = self._params()
        if any(p.shape != b.shape for p, b in zip(params, self.snapshot_tensors())):
            raise RuntimeError("the LoRA proposal snapshot cannot be swapped into sharded parameters (FSDP, ZeRO-3): "
                               "use DDP with LoRA, or off_policy: false")
        with torch.no_grad():
            current = [p.detach().clone() for p in params]
            for p, buf in zip(params, self.snapshot_tensors()):
                p.copy_(buf)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            with torch.no_grad():
                for p, c in zip(params, current):
                    p.copy_(c)

    def active(self) -> contextlib.AbstractContextManager:
        return self.swapped()


def frozen_state_keys(module: nn.Module, prefix: str) -> set[str]:
    """State-dict keys of ``module`` (under ``prefix``) that are not trainable parameters: the
    frozen pretrained weights, which a LoRA checkpoint leaves out (they are reloaded by name)."""
    # from the parameter and buffer names, not state_dict(): under FSDP that would gather weights
    trainable = {unwrapped_name(f"{prefix}{n}") for n, _ in trainable_named_parameters(module)}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {unwrapped_name(f"{prefix}{n}") for n, _ in named} - trainable


def n_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def unwrapped_name(name: str) -> str:
    """A parameter name without the parts FSDP, activation checkpointing and torch.compile insert."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name
