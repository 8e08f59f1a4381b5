"""Does an offline CDPG config give a learning signal from its first step? Checked cheaply.

CDPG (Korbak et al. 2022, arXiv:2112.00791, §2) only learns on a context that has at least one
sample with ``b(x, c) = 1`` among its ``n_samples`` (else Ẑ_c = 0 and the context carries no
gradient; a step where no context has one is skipped). This script samples the config's own base
model on a few dozen of the config's own training contexts, ``n_samples`` each, with the config's
sampling settings, scores them with the config's own target, and prints per config:

    contexts tried, share of contexts with ≥ 1 satisfying sample, mean b over all samples

For the synthetic-preference configs (DPO, reward model: Bradley–Terry labels σ(scale·Δs) from a
scorer, Yun et al. 2025 §6.1) the signal is in the pairs whose label is not a coin flip: it prints
the pairs tried, the share with P(chosen ≻ rejected) ≥ 0.6, and the mean P(chosen ≻ rejected).

Usage (offline, a few minutes on 2 cores per config)::

    python benchmarks/offline_signal.py cdpg_summarize_offline cdpg_translate_offline
    python benchmarks/offline_signal.py cdpg_summarize_offline --contexts 16 \\
        --set model.init_args.n_samples=16 --set data.init_args.max_source_chars=300
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
import yaml

from lit_align.cli import resolve_config
from lit_align.predict import instantiate

DEFAULT = ["cdpg_translate_offline", "cdpg_summarize_offline", "cdpg_code_compile_offline",
           "cdpg_code_pep8_offline"]


def apply_override(config: dict, assignment: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into the nested config."""
    key, _, raw = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = yaml.safe_load(raw)


def signal(config: dict, n_contexts: int, seed: int) -> dict:
    """Sample the base on ``n_contexts`` training contexts of ``config``; share with ≥ 1 b = 1."""
    torch.manual_seed(seed)
    method = instantiate(config["model"])
    method.configure_model()
    method.model.eval()
    data = instantiate(config["data"])
    data.setup("fit")
    contexts = random.Random(seed).sample(list(data.train_contexts), min(n_contexts, len(data.train_contexts)))
    n = method.hparams.n_samples
    per_context, b_all, example, kept = [], [], None, []
    for i in range(0, len(contexts), 4):  # 4 contexts per sampling call (as contexts_per_step)
        chunk = contexts[i:i + 4]
        with torch.no_grad():
            samples = method.sample(chunk, n)
        log_a = torch.zeros(len(samples), dtype=torch.float64)
        ok = torch.isfinite(method.target.log_score(log_a, samples.texts, samples.contexts))
        idx = samples.context_index
        for c in range(len(chunk)):
            per_context.append(bool(ok[idx == c].any()))
        b_all += ok.double().tolist()
        kept += [{"context": str(chunk[int(c)]), "source": getattr(chunk[int(c)], "source", None), "text": t}
                 for c, t in zip(idx.tolist(), samples.texts)]
        print(f"  {len(per_context)}/{len(contexts)} contexts: {sum(per_context)} with signal", file=sys.stderr, flush=True)
        if example is None and ok.any():
            example = samples.texts[int(ok.nonzero()[0])]
    return {"contexts": len(per_context), "share_with_signal": sum(per_context) / len(per_context),
            "mean_b": sum(b_all) / len(b_all), "n_samples": n,
            "max_new_tokens": method.hparams.max_new_tokens, "example_satisfying": example, "samples": kept}


def preference_signal(config: dict, n_pairs: int, seed: int) -> dict:
    """Label ``n_pairs`` pairs as the config's data module would; share of informative labels."""
    from lit_align.data.synthetic_preferences import SOFT_LABEL_COLUMN, synthesize_preferences

    method = instantiate(config["model"])
    method.configure_model()
    method.model.eval()
    data = instantiate(config["data"])
    with torch.no_grad():
        records = synthesize_preferences(method.policy, method.model, data.prompts, n_pairs,
                                         scorer=data.scorer, scale=data.scale, seed=seed)
    p = [r[SOFT_LABEL_COLUMN] for r in records]
    return {"contexts": len(p), "share_with_signal": sum(x >= 0.6 for x in p) / len(p), "mean_b": sum(p) / len(p),
            "n_samples": 2, "max_new_tokens": method.hparams.max_new_tokens,
            "example_satisfying": max(records, key=lambda r: r[SOFT_LABEL_COLUMN])["chosen"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", default=DEFAULT, help="shipped config names or paths")
    ap.add_argument("--contexts", type=int, default=24, help="training contexts tried per config")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="override, e.g. model.init_args.n_samples=16")
    ap.add_argument("--json", type=Path, help="also append one JSON line per config here (with the samples)")
    args = ap.parse_args(argv)
    print("config | contexts | share with ≥1 satisfying | mean b | n_samples | max_new_tokens", flush=True)
    for name in args.configs:
        config = yaml.safe_load(Path(resolve_config(name)).read_text())
        for assignment in args.set:
            apply_override(config, assignment)
        synthetic = str(config["data"]["class_path"]).endswith("SyntheticPreferenceDataModule")
        measure = preference_signal if synthetic else signal
        row = {"config": name, "overrides": args.set, **measure(config, args.contexts, args.seed)}
        print(f"{name} | {row['contexts']} | {row['share_with_signal']:.2f} | {row['mean_b']:.3f} | "
              f"{row['n_samples']} | {row['max_new_tokens']}", flush=True)
        print(f"  e.g. {row['example_satisfying']!r}", flush=True)
        if args.json:  # with every sample, to score other variants of the scorer on the same samples
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
