"""Sample a trained policy and score the samples: ``python -m lit_align sample --from PATH``.

``PATH`` is a checkpoint (``.ckpt``, or a run folder: its newest ``last.ckpt``) or a folder
written by ``python -m lit_align export``. The scorers are those of the run's config (the
``target`` potentials' scorers, ``reward`` scorers; ``config.yaml`` next to the checkpoint or
``lit_align_config.yaml`` in the export folder, or ``--config``), the prompts those of its data
(``prompt``, ``contexts``) unless ``--prompt``/``--prompts`` give others. Each sample is one
JSONL row ``{"prompt", "completion", "n_tokens", "scores": {scorer: value}}``; a one-line
summary follows: the mean of each scorer (E[b] for a constraint b), the mean length in tokens
and distinct-1/2 (distinct n-grams over all n-grams of the completions' whitespace words;
Li et al. 2016, arXiv:1510.03055, §4.1).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from lit_align.export import find_checkpoint, policy_from_checkpoint, read_checkpoint
from lit_align.model_card import run_config
from lit_align.models.loading import load
from lit_align.models.policy import Policy
from lit_align.scorers.base import Scorer

EXPORT_CONFIG = "lit_align_config.yaml"


def instantiate(node: Any) -> Any:
    """Objects from a config's ``class_path``/``init_args`` entries (recursively)."""
    if isinstance(node, Mapping) and "class_path" in node:
        module, _, name = str(node["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module or "lit_align.scorers"), name)
        return cls(**{k: instantiate(v) for k, v in (node.get("init_args") or {}).items()})
    if isinstance(node, Mapping):
        return {k: instantiate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    return node


def config_scorers(config: Mapping) -> list[Scorer]:
    """Every scorer the method of a config reads: its target potentials' and its rewards'."""
    init_args = ((config.get("model") or {}).get("init_args")) or {}
    found: list[Scorer] = []
    for key in ("target", "reward", "scorers"):
        value = init_args.get(key)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            obj = instantiate(item)
            found += [obj] if isinstance(obj, Scorer) else list(obj.scorers()) if hasattr(obj, "scorers") else []
    unique: dict[str, Scorer] = {}
    for s in found:
        unique.setdefault(s.name, s)
    return list(unique.values())


def config_prompts(config: Mapping) -> list[str]:
    init_args = ((config.get("data") or {}).get("init_args")) or {}
    if isinstance(init_args.get("prompt"), str):
        return [init_args["prompt"]]
    for key in ("val_contexts", "contexts"):
        if isinstance(init_args.get(key), list) and init_args[key]:
            return [str(c) for c in init_args[key]]
    return []


def load_policy(path: str | Path) -> tuple[torch.nn.Module, Any, dict, dict]:
    """``(model, tokenizer, sampling settings, run config)`` of a checkpoint or an export folder."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():  # an export folder
        from transformers import GenerationConfig

        model, tok = load(str(path))
        gen = GenerationConfig.from_pretrained(path) if (path / "generation_config.json").is_file() else None
        settings = {k: getattr(gen, k) for k in ("temperature", "top_k", "top_p", "max_new_tokens")} if gen else {}
        config_file = path / EXPORT_CONFIG
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        settings["chat_template"] = ((config.get("model") or {}).get("init_args") or {}).get("chat_template", False)
        return model, tok, settings, config or {}
    if path.is_dir() and (path / "adapter_config.json").is_file():
        raise ValueError(f"{str(path)!r} holds a LoRA adapter alone (export --adapter_only): sample from its "
                         "checkpoint, or from a merged export (export without --adapter_only)")
    ckpt_path = find_checkpoint(path)
    ckpt = read_checkpoint(ckpt_path)
    model, tok = policy_from_checkpoint(ckpt)
    hp = ckpt.get("hyper_parameters") or {}
    settings = {k: hp[k] for k in ("temperature", "top_k", "top_p", "max_new_tokens", "chat_template",
                                    "max_prompt_length") if k in hp}
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    text = run_config(run_dir)
    return model, tok, settings, (yaml.safe_load(text) or {}) if text else {}


def sample_rows(model: torch.nn.Module, policy: Policy, prompts: Sequence[str], n: int, scorers: Sequence[Scorer],
                batch_size: int = 64) -> list[dict]:
    """``n`` samples per prompt, scored: the JSONL rows."""
    rows = []
    per_call = max(1, batch_size // n)
    for start in range(0, len(prompts), per_call):
        samples = policy.sample(model, list(prompts[start:start + per_call]), n)
        scores = {s.name: s(samples.texts, samples.contexts).tolist() for s in scorers}
        lengths = samples.completion_mask.sum(-1).tolist()
        for i, text in enumerate(samples.texts):
            rows.append({"prompt": samples.contexts[i], "completion": text, "n_tokens": int(lengths[i]),
                         "scores": {k: v[i] for k, v in scores.items()}})
    return rows


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams of the whitespace words of ``texts`` (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def summarize(rows: Sequence[Mapping]) -> dict[str, float]:
    """Mean of each scorer (``E[name]``), mean length in tokens, distinct-1 and distinct-2."""
    out: dict[str, float] = {"n": float(len(rows))}
    for name in rows[0]["scores"] if rows else []:
        out[f"E[{name}]"] = sum(r["scores"][name] for r in rows) / len(rows)
    out["mean_length"] = sum(r["n_tokens"] for r in rows) / max(len(rows), 1)
    texts = [r["completion"] for r in rows]
    out["distinct-1"], out["distinct-2"] = distinct_n(texts, 1), distinct_n(texts, 2)
    return out


def summary_line(summary: Mapping[str, float]) -> str:
    return "  ".join(f"{k}={int(v) if k == 'n' else round(v, 4)}" for k, v in summary.items())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m lit_align sample", description=(
        "Sample a trained policy (a checkpoint, a run folder or an exported folder), score every sample with the "
        "run's scorers, write JSONL rows and print a one-line summary."))
    parser.add_argument("--from", dest="source", required=True,
                        help="a .ckpt file, a run folder (its newest last.ckpt) or an export folder")
    parser.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for several)")
    parser.add_argument("--prompts", help="a text file, one prompt per line")
    parser.add_argument("--config", help="a lit_align config whose scorers and prompts to use")
    parser.add_argument("--n", type=int, default=16, help="samples per prompt (default 16)")
    parser.add_argument("--max_new_tokens", type=int, help="default: the run's")
    parser.add_argument("--out", default="samples.jsonl", help="the JSONL file to write (default samples.jsonl)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        raise ValueError(f"--n must be ≥ 1, got {args.n}")
    model, tok, settings, config = load_policy(args.source)
    if args.config:
        config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += [line for line in Path(args.prompts).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = prompts or config_prompts(config)
    if not prompts:
        raise ValueError("no prompts: give --prompt TEXT or --prompts FILE (the run's config names none)")
    if args.max_new_tokens is not None:
        settings["max_new_tokens"] = args.max_new_tokens
    policy = Policy(tok, **settings)
    torch.manual_seed(args.seed)
    rows = sample_rows(model.eval(), policy, prompts, args.n, config_scorers(config))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    summary = summarize(rows)
    print(f"{summary_line(summary)}  -> {out}")
    return summary
