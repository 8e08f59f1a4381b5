"""LoRA (peft) for the policy: the base LM is the adapter-disabled policy, the DPG proposal is a
snapshot of the adapters only, checkpoints keep only what is trained, memory is below full."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_align.data.prompts import PromptDataModule
from lit_align.memory import held_bytes
from lit_align.methods import DPG
from lit_align.models import load
from lit_align.models.lora import AdapterDisabled, AdapterSnapshot, trainable_named_parameters
from lit_align.scorers import Regex
from lit_align.targets import Pointwise

pytest.importorskip("peft")
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("single_thread")]

# a random byte-level model writes a lower-case letter in ~half of its 6-byte samples: Z ≈ 0.5
COMMON = dict(target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=8, minibatch_size=4, max_new_tokens=6,
              lr=0.05, off_policy=True, proposal_update_interval=1000)


def fit(module: DPG, steps: int, root=None, ckpt_path=None) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=root)
    trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module", params=["tiny-gpt2", "tiny-t5"])
def trained(request):
    module = DPG(model=request.param, lora={"r": 4}, **COMMON)
    trainer = fit(module, steps=3)
    assert module.skipped_steps < 3, "some steps updated the adapters"
    return module, trainer


def test_reference_is_the_adapter_disabled_policy(trained):
    module, _ = trained
    assert isinstance(module.engine.base, AdapterDisabled) and not list(module.engine.base.parameters())
    reference, _ = load(module.hparams.model, seed=module.hparams.model_seed)  # the pretrained model itself
    samples = module.sample(["x", "hello"], n=4)
    log_a = module.engine.base_log_prob(samples)
    assert torch.equal(log_a, module.engine.log_prob(reference, samples)), "exactly the base log-probs"
    log_pi = module.engine.log_prob(module.model, samples)
    assert (log_pi - log_a).abs().max() > 1e-4, "the trained adapters change the policy"
    # the policy's frozen weights are still the pretrained ones
    ref = dict(reference.named_parameters())
    for name, p in module.model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, ref[name.replace(".base_layer", "")]), name


def test_proposal_snapshot_holds_only_adapter_weights(trained):
    module, _ = trained
    proposal = module.proposal
    assert isinstance(proposal, AdapterSnapshot)
    trainable = trainable_named_parameters(module.model)
    assert sum(t.numel() for t in proposal.state_dict().values()) == sum(p.numel() for _, p in trainable)
    samples = module.sample(["x"], n=6, model=proposal)
    before = {n: p.detach().clone() for n, p in trainable}
    # the snapshot was taken before training (LoRA B = 0), and no update happened: q = a exactly
    log_q = module.engine.log_prob(proposal, samples)
    assert torch.equal(log_q, module.engine.base_log_prob(samples))
    torch.testing.assert_close(samples.log_q, log_q, rtol=0, atol=1e-4)  # the sampler's own log q
    assert all(torch.equal(p, before[n]) for n, p in trainable), "swapping restores the policy's weights"
    module.engine.refresh(proposal)  # q ← π
    assert torch.equal(module.engine.log_prob(proposal, samples), module.engine.log_prob(module.model, samples))


def test_checkpoint_holds_only_trained_weights_and_resumes(trained, tmp_path):
    module, trainer = trained
    path = tmp_path / "lora.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and all(".lora_" in k or k.startswith("proposal.") for k in state), sorted(state)[:5]
    n_saved = sum(t.numel() for t in state.values())
    assert n_saved == 2 * sum(p.numel() for _, p in trainable_named_parameters(module.model))  # adapters + snapshot
    resumed = DPG(model=module.hparams.model, lora={"r": 4}, **COMMON)
    fit(resumed, steps=trainer.global_step, ckpt_path=path)  # restores, runs no further step
    saved = dict(trainable_named_parameters(module.model))
    for n, p in trainable_named_parameters(resumed.model):
        assert torch.equal(p, saved[n]), n
    for a, b in zip(resumed.proposal.snapshot_tensors(), module.proposal.snapshot_tensors()):
        assert torch.equal(a, b)


def test_lora_memory_and_trainable_parameters_below_full():
    held, trainable = {}, {}
    for name, lora in (("full", None), ("lora", {"r": 4})):
        module = DPG(model="tiny-llama", lora=lora, **COMMON)
        trainer = fit(module, steps=2)
        trainable[name] = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
        held[name] = held_bytes(module, module.engine.base, trainer.optimizers)
    # full: policy + base copy + proposal copy + Adam moments; LoRA: one model + small adapters
    assert trainable["lora"] < trainable["full"] / 4, trainable
    assert held["lora"] < 0.4 * held["full"], held


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = {}
    for ckpt in (False, True):
        module = DPG(model="tiny-llama", lora={"r": 4}, gradient_checkpointing=ckpt, **COMMON)
        module.configure_model()
        with torch.no_grad():  # non-zero adapters, the same in both runs
            gen = torch.Generator().manual_seed(0)
            for _, p in trainable_named_parameters(module.model):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        torch.manual_seed(0)
        samples = module.sample(["x"], n=4)
        module.model.train()
        module.policy.share_prompts = False  # checkpointing turns the KV cache off: compare the same pass
        module.policy.token_log_probs(module.model, samples).sum().backward()
        grads[ckpt] = {n: p.grad.clone() for n, p in trainable_named_parameters(module.model)}
    assert grads[True].keys() == grads[False].keys()
    for n, g in grads[False].items():
        assert g.abs().sum() > 0, n
        torch.testing.assert_close(grads[True][n], g, rtol=1e-5, atol=1e-7)


def test_lora_errors(monkeypatch):
    with pytest.raises(ValueError, match="lora"):
        DPG(model="toy", lora={}, **COMMON).configure_model()
    with pytest.raises(ValueError, match="lora"):
        DPG(model="tiny-gpt2", lora={"rank": 4}, **COMMON).configure_model()
    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError("no module named peft")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=r"pip install 'lit-align\[lora\]'"):
        DPG(model="tiny-gpt2", lora={"r": 4}, **COMMON)


def test_optional_backends_give_clear_errors():
    import importlib.util

    with pytest.raises(ValueError, match="sampler"):
        DPG(model="tiny-gpt2", sampler="fast", **COMMON)
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match=r"pip install 'lit-align\[vllm\]'"):
            DPG(model="tiny-gpt2", sampler="vllm", **COMMON)
    if importlib.util.find_spec("deepspeed") is None:  # strategies/deepspeed_zero*.yaml without deepspeed
        with pytest.raises(Exception, match="pip install -U deepspeed"):
            L.Trainer(strategy="deepspeed_stage_3", accelerator="cpu", devices=1)


def test_static_cache_sampling_of_lora_views_equals_dynamic(trained):
    """Under bf16 autocast the sampler decodes the peft policy and its views into a StaticCache;
    it draws what the dynamic cache draws, with the same log_q."""
    module, _ = trained
    if module.engine.model.config.is_encoder_decoder:
        pytest.skip("encoder-decoders decode without the static cache")
    policy = module.engine.policy
    for model in (module.engine.model, AdapterDisabled(module.engine.model)):
        runs = []
        for static in (None, False):  # None: static under autocast
            policy.static_cache = static
            torch.manual_seed(0)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                assert policy._use_static_cache(model, torch.zeros(1, dtype=torch.long)) is (static is None)
                runs.append(policy.sample(model, ["x", "xy"], 3))
        policy.static_cache = None
        assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
        torch.testing.assert_close(runs[0].log_q, runs[1].log_q, atol=1e-3, rtol=0)
