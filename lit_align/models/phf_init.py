"""How the model of pretraining with human feedback starts (Korbak et al. 2023,
arXiv:2302.08582): randomly initialised from a config, from a Lightning checkpoint's weights,
and with conditional training's control tokens added to the tokenizer and the embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from lit_align.models.loading import SMOLLM2_ALIASES, TINY_MODELS, ModelLoadError, hub_reachable, load, toy_std


def initial_model(name: str, tokenizer: str | None, seed: int, from_scratch: bool, overrides: dict | None,
                  init_from: str | None, control_tokens: Sequence[str], control_init_std: float):
    """``(model, tokenizer)`` a PHF run starts from: ``name``'s weights or (``from_scratch``) a random
    initialisation of its config with ``overrides``, then a checkpoint's weights (``init_from``),
    then the control tokens added."""
    if from_scratch:
        model, tok = random_model(name, tokenizer, overrides or {}, seed)
    else:
        if overrides:
            raise ValueError("config_overrides apply only with from_scratch: true")
        model, tok = load(name, tokenizer, seed=seed)
    if init_from:
        load_checkpoint_weights(model, init_from)
    if control_tokens:
        add_control_tokens(model, tok, control_tokens, control_init_std, seed)
    return model, tok


def random_model(name: str, tokenizer: str | None, overrides: dict, seed: int = 0):
    """``(model, tokenizer)`` randomly initialised from ``name``'s config (with ``overrides``)."""
    import copy

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    toy = toy_std(name) is not None
    if name in TINY_MODELS or toy or name.lower() in SMOLLM2_ALIASES or name.endswith(".gguf"):
        model, tok = load(name, tokenizer, seed=seed)
        if (name in TINY_MODELS or toy) and not overrides:
            return model, tok  # already random
        if toy:
            raise ValueError("config_overrides do not apply to the toy model")
        config = copy.deepcopy(model.config)
        del model
    else:
        kw = {} if Path(name).exists() or hub_reachable() else {"local_files_only": True}
        try:
            config = AutoConfig.from_pretrained(name, **kw)
            tok = AutoTokenizer.from_pretrained(tokenizer or name, **kw)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"could not load the config/tokenizer of {name!r} for training from scratch ({type(err).__name__}). "
                "Offline, use a local folder, `tiny-gpt2` (with config_overrides), or `smollm2`.") from err
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"config_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tok


def load_checkpoint_weights(model: nn.Module, path: str) -> None:
    """Load the ``model.*`` weights of a Lightning checkpoint (e.g. an MLE run) into ``model``."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise ValueError(f"init_from: {path!r} holds no `model.*` weights; is it a lit_align checkpoint?")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if "attn.bias" not in k and "masked_bias" not in k]
    if missing or unexpected:
        raise ValueError(f"init_from: {path!r} does not match the model (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}); fine-tune from a checkpoint of the same architecture without control tokens")


def add_control_tokens(model: nn.Module, tok, tokens: Sequence[str], std: float = 0.01, seed: int = 0) -> list[int]:
    """Add control tokens to the tokenizer and embeddings: new rows = mean row + N(0, std²) (the
    conditional training of Korbak et al. 2023, arXiv:2302.08582)."""
    if not hasattr(model, "resize_token_embeddings"):
        raise ValueError(f"conditional training needs a Hugging Face model (resize_token_embeddings); got {type(model).__name__}")
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": list(tokens)})
    ids = tok.convert_tokens_to_ids(list(tokens))
    old = model.get_input_embeddings().weight.shape[0]
    if len(tok) > old:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mats = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight is not mats[0]:
            mats.append(out.weight)
        for w in mats:
            n_old = min(old, w.shape[0])
            mean = w[:n_old].mean(0)
            for i in ids:
                if i >= old or missing:
                    w[i] = mean + std * torch.randn(w.shape[1], generator=gen).to(w)
    return ids
