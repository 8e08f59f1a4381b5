"""Export a trained policy as a Hugging Face ``save_pretrained`` folder.

``python -m lit_align export --ckpt_path PATH --out DIR`` (or the
:class:`~lit_align.callbacks.ExportPretrained` callback at the end of ``fit``) writes safetensors
weights, the tokenizer, a generation config and a README model card, loadable with
``AutoModelForCausalLM.from_pretrained(DIR)`` / ``AutoModelForSeq2SeqLM`` / ``pipeline(...)``
without lit_align. A LoRA policy is merged into its base by default; ``--adapter_only`` writes
the peft adapter alone (load it with ``peft.PeftModel.from_pretrained(base, DIR)``).

The policy is rebuilt from the checkpoint's hyperparameters (``model``, ``tokenizer``,
``model_seed``, ``lora``) and its ``model.*`` weights; a LoRA checkpoint holds only the trained
weights, the base is reloaded by name. ``PATH`` may be a ``.ckpt`` file, a run folder (its
newest ``last.ckpt``), an FSDP sharded checkpoint folder or a DeepSpeed checkpoint folder.

What was tested: files written by one process and under DDP (2 CPU ranks); LoRA, seq2seq.
Lightning runs FSDP only on GPUs, so the sharded layout (``torch.distributed.checkpoint`` shards
of ``{"model": state_dict}`` plus ``meta.pt``) is tested on a folder written in one process; an
FSDP ``state_dict_type: full`` checkpoint is an ordinary file. DeepSpeed folders go through
Lightning's ``convert_zero_checkpoint_to_fp32_state_dict`` and are not tested (no deepspeed here).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from lit_align.model_card import final_metrics, model_card, run_config
from lit_align.models import lora as lora_lib
from lit_align.models.loading import load, toy_std

PREFIX = "model."
#: checkpoints of these methods hold no policy to export (the message says what to use instead)
NOT_A_POLICY = {"RewardModel": "a RewardModel run writes its reward model folder at the end of fit (its "
                               "`save_dir`, default <log dir>/reward_model); RewardModelScorer loads it"}


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or the newest ``last*.ckpt`` under a run folder (e.g. ``runs/quickstart``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {str(path)!r} does not exist")
    if path.is_file() or _is_sharded_folder(path):
        return path
    found = sorted(path.glob("**/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--ckpt_path {str(path)!r} is a folder with no last*.ckpt inside; give a .ckpt file")
    return found[-1]


def _is_sharded_folder(path: Path) -> bool:
    return (path / "meta.pt").is_file() or (path / "latest").is_file() or (path / "checkpoint").is_dir()


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dictionary (``hyper_parameters``, ``state_dict``, ...) of a file or folder."""
    path = Path(path)
    if (path / "meta.pt").is_file():  # FSDP sharded: torch.distributed.checkpoint shards + Lightning's metadata
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        ckpt = torch.load(path / "meta.pt", map_location="cpu", weights_only=False)
        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(path, Path(tmp) / "full.pt")
            ckpt["state_dict"] = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=False)["model"]
        return ckpt
    if path.is_dir():  # DeepSpeed: consolidated by Lightning's converter (needs deepspeed)
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        with tempfile.TemporaryDirectory() as tmp:
            try:
                convert_zero_checkpoint_to_fp32_state_dict(path, Path(tmp) / "full.pt")
            except ModuleNotFoundError as err:
                raise ValueError(f"{str(path)!r} is a DeepSpeed checkpoint folder: exporting it needs deepspeed "
                                 "(pip install deepspeed)") from err
            return torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=False)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def method_name(ckpt: Mapping) -> str:
    saved = ckpt.get("lit_align") or {}
    return saved.get("method") or str((ckpt.get("hyper_parameters") or {}).get("_class_path", "")).rpartition(".")[2]


def policy_from_checkpoint(ckpt: Mapping) -> tuple[nn.Module, object]:
    """``(model, tokenizer)``: the trained policy of a lit_align checkpoint, on the CPU, in eval
    mode (a peft model when the run used ``lora:``)."""
    hp = dict(ckpt.get("hyper_parameters") or {})
    method = method_name(ckpt)
    if method in NOT_A_POLICY:
        raise ValueError(f"this checkpoint was written by {method}: {NOT_A_POLICY[method]}")
    if "model" not in hp:
        raise ValueError("the checkpoint has no hyper_parameters.model: is it a lit_align checkpoint?")
    if toy_std(hp["model"]) is not None:
        raise ValueError(f"model: {hp['model']} is lit_align's tabular toy LM, not a transformers model; nothing to export")
    model, tok = load(hp["model"], hp.get("tokenizer"), seed=hp.get("model_seed", 0))
    if hp.get("from_scratch") and hp.get("config_overrides"):
        model = _from_config(model, hp["config_overrides"])
    weights = {}
    for key, value in ckpt["state_dict"].items():
        key = lora_lib.unwrapped_name(key)
        if key.startswith(PREFIX):
            weights[key[len(PREFIX):]] = value
    if not weights:
        raise ValueError("the checkpoint holds no `model.*` weights")
    _match_vocabulary(model, tok, weights, hp)
    if hp.get("lora") is not None:
        model = lora_lib.apply_lora(model, hp["lora"])
    _load_weights(model, weights, lora=hp.get("lora") is not None)
    return model.eval(), tok


def _from_config(model: nn.Module, overrides: Mapping) -> nn.Module:
    """The architecture of a ``from_scratch`` run with ``config_overrides`` (weights come from the checkpoint)."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    for key, value in overrides.items():
        setattr(config, key, value)
    return AutoModelForCausalLM.from_config(config)


def _match_vocabulary(model: nn.Module, tok, weights: Mapping, hp: Mapping) -> None:
    """Grow the embeddings (and the tokenizer) to the checkpoint's vocabulary: PHF's conditional
    training adds its two control tokens (arXiv:2302.08582, §2)."""
    if not hasattr(model, "get_input_embeddings"):
        return
    rows = model.get_input_embeddings().weight.shape[0]
    saved = [v.shape[0] for k, v in weights.items() if k.endswith("embed_tokens.weight") or k.endswith("wte.weight")
             or k.endswith("shared.weight")]
    if not saved or saved[0] == rows:
        return
    if hp.get("objective") == "conditional":
        tokens = [hp.get("aligned_token", "<|aligned|>"), hp.get("misaligned_token", "<|misaligned|>")]
        missing = [t for t in tokens if t not in tok.get_vocab()]
        if missing:
            tok.add_special_tokens({"additional_special_tokens": tokens})
    model.resize_token_embeddings(saved[0], mean_resizing=False)


def _load_weights(model: nn.Module, weights: Mapping, lora: bool) -> None:
    missing, unexpected = model.load_state_dict(dict(weights), strict=False)
    if unexpected:
        raise ValueError(f"the checkpoint's weights do not fit the model rebuilt from its hyperparameters "
                         f"({len(unexpected)} unexpected, e.g. {unexpected[0]}); was it written by this lit_align?")
    if lora:  # only the trained weights are stored: each of them must be there
        trained = {n for n, _ in lora_lib.trainable_named_parameters(model)}
        missing = sorted(trained & set(missing))
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} policy weights (e.g. {missing[0]})")


def generation_config(model: nn.Module, tok, hp: Mapping):
    """The sampling the policy was trained with: exact ancestral sampling unless the run set a warp."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=float(hp.get("temperature", 1.0)), top_k=int(hp.get("top_k", 0)),
        top_p=float(hp.get("top_p", 1.0)), max_new_tokens=int(hp.get("max_new_tokens", 40)),
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
    )


def export_checkpoint(ckpt: Mapping, out: str | Path, adapter_only: bool = False, run_dir: str | Path | None = None,
                      metrics: Mapping | None = None) -> Path:
    """Write the export folder of a checkpoint dictionary; returns its path."""
    hp = dict(ckpt.get("hyper_parameters") or {})
    if adapter_only and hp.get("lora") is None:
        raise ValueError("--adapter_only needs a checkpoint of a run with `lora:`; this one trained all weights")
    model, tok = policy_from_checkpoint(ckpt)
    if lora_lib.is_lora(model) and not adapter_only:
        model = model.merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    generation_config(model, tok, hp).save_pretrained(out)
    config = run_config(run_dir)
    if config is not None:
        (out / "lit_align_config.yaml").write_text(config, encoding="utf-8")
    metrics = dict(metrics) if metrics else final_metrics(ckpt, run_dir)
    card = model_card(method_name(ckpt), hp, config, metrics, adapter_only=adapter_only)
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def export(ckpt_path: str | Path, out: str | Path, adapter_only: bool = False) -> Path:
    """Export the checkpoint at ``ckpt_path`` (file, run folder, sharded folder) to ``out``."""
    path = find_checkpoint(ckpt_path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return export_checkpoint(read_checkpoint(path), out, adapter_only, run_dir=run_dir)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m lit_align export",
        description="Write a trained policy as a Hugging Face save_pretrained folder (safetensors weights, "
                    "tokenizer, generation config, README model card).")
    parser.add_argument("--ckpt_path", required=True,
                        help="a .ckpt file, a run folder (its newest last.ckpt, e.g. runs/quickstart) or a "
                             "sharded (FSDP/DeepSpeed) checkpoint folder")
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--adapter_only", action="store_true",
                        help="LoRA runs: write the peft adapter alone instead of merging it into the base")
    args = parser.parse_args(argv)
    out = export(args.ckpt_path, args.out, args.adapter_only)
    print(f"exported to {out} (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return out
