"""The Lightning-free engine and its settings: base = frozen copy, q ← π snapshots, sampling
settings checked once, precision contexts."""

from __future__ import annotations

import pytest
import torch

from lit_align.masked import masked_mean
from lit_align.models.engine import Engine
from lit_align.models.settings import EngineSettings, SamplingSettings

pytestmark = pytest.mark.usefixtures("single_thread")


def toy_engine(**kwargs) -> Engine:
    return Engine(EngineSettings(model="toy", minibatch_size=4, sampling=SamplingSettings(max_new_tokens=3), **kwargs))


def test_base_is_a_frozen_copy_and_snapshots_follow_the_policy():
    engine = toy_engine()
    assert engine.base is not engine.model and not any(p.requires_grad for p in engine.base.parameters())
    samples = engine.sample(["", ""], n=5)
    assert len(samples) == 10 and samples.context_index.tolist() == [0] * 5 + [1] * 5
    torch.testing.assert_close(engine.base_log_prob(samples), engine.log_prob(engine.model, samples))
    torch.testing.assert_close(engine.policy_log_prob(samples), samples.log_q)  # exact sampling: log q = log π
    snapshot = engine.frozen_copy(engine.model)
    with torch.no_grad():
        for p in engine.model.parameters():
            p.add_(0.5)
    before = engine.log_prob(snapshot, samples)
    assert not torch.equal(before, engine.log_prob(engine.model, samples))
    engine.refresh(snapshot)  # q ← π
    assert torch.equal(engine.log_prob(snapshot, samples), engine.log_prob(engine.model, samples))
    assert torch.equal(engine.base_log_prob(samples), engine.log_prob(engine.base, samples))


def test_no_base_when_not_needed_and_frozen_dtype():
    assert toy_engine().__class__ is Engine
    assert Engine(EngineSettings(model="toy"), needs_base=False).base is None
    half = toy_engine(frozen_dtype="bfloat16")
    assert next(half.base.parameters()).dtype == torch.bfloat16
    assert next(half.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("frozen,grad,expected", [
    ("auto", "bfloat16", torch.bfloat16), ("auto", None, torch.float32), ("auto", "float32", torch.float32),
    ("float32", "bfloat16", torch.float32), (None, "bfloat16", torch.float32), ("auto", "float16", torch.float16),
])
def test_auto_frozen_dtype_follows_the_gradient_passes(frozen, grad, expected):
    engine = toy_engine(frozen_dtype=frozen, grad_dtype=grad)
    assert next(engine.base.parameters()).dtype == expected
    assert next(engine.frozen_copy(engine.model).parameters()).dtype == expected  # proposals too
    assert next(engine.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_frozen_copy_in_a_dtype_is_the_cast_copy_and_shares_nothing(dtype):
    """The base is copied straight into ``frozen_dtype`` (no full-precision copy in between): the same
    tensors as ``deepcopy(model).to(dtype)``, tied weights still tied, no storage shared with the
    policy even when the dtype is the policy's own."""
    import copy

    from lit_align.models.loading import load

    model, _ = load("tiny-llama")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    engine = Engine(EngineSettings(model="tiny-llama", frozen_dtype=dtype), loaded=(model, load("tiny-llama")[1]))
    want = copy.deepcopy(engine.model).to(getattr(torch, dtype))
    base = engine.base
    assert base.get_input_embeddings().weight is base.get_output_embeddings().weight
    got, ref = dict(base.named_parameters()), dict(want.named_parameters())
    assert got.keys() == ref.keys()
    for name, t in {**got, **dict(base.named_buffers())}.items():
        r = ref.get(name, dict(want.named_buffers()).get(name))
        assert t.dtype == r.dtype and torch.equal(t, r), name
    policy = {t.untyped_storage().data_ptr() for t in [*engine.model.parameters(), *engine.model.buffers()]}
    assert not policy & {t.untyped_storage().data_ptr() for t in [*base.parameters(), *base.buffers()]}
    assert not any(p.requires_grad for p in base.parameters()) and not base.training


def test_on_policy_methods_default_to_auto_and_offline_to_none():
    import inspect

    from lit_align.methods.offline import OfflineModule
    from lit_align.methods.on_policy import OnPolicyModule

    assert inspect.signature(OnPolicyModule.__init__).parameters["frozen_dtype"].default == "auto"
    assert inspect.signature(OfflineModule.__init__).parameters["frozen_dtype"].default is None


def test_model_source_redirects_the_policy():
    engine = toy_engine()
    other = engine.frozen_copy(engine.model)
    engine.model_source = lambda: other
    assert engine.model is other


@pytest.mark.parametrize("field,value,message", [
    ("max_new_tokens", 0, "max_new_tokens"), ("temperature", 0.0, "temperature"), ("top_p", 1.5, "top_p"),
    ("top_k", -1, "top_k"), ("max_prompt_length", 0, "max_prompt_length"),
])
def test_sampling_settings_name_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SamplingSettings(**{field: value})


@pytest.mark.parametrize("field,value", [("grad_dtype", "fp8"), ("frozen_dtype", "int8"), ("sampler", "hf"),
                                         ("train_attention", "flash9"), ("minibatch_size", 0)])
def test_engine_settings_name_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        EngineSettings(**{field: value})


def test_settings_from_a_mapping_and_exactness():
    s = EngineSettings.from_mapping({"model": "toy", "max_new_tokens": 5, "top_k": 3, "lr": 1.0})
    assert s.model == "toy" and s.sampling.max_new_tokens == 5 and not s.sampling.exact
    assert SamplingSettings().exact and not EngineSettings().low_precision
    assert EngineSettings(sample_dtype="bfloat16").low_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch, native):
    import lit_align.models.settings as settings

    monkeypatch.setattr(settings, "native_bf16", lambda: native)
    s = EngineSettings(grad_dtype="auto", sample_dtype="auto", frozen_dtype="auto")
    want = "bfloat16" if native else None
    assert (s.grad_dtype, s.sample_dtype, s.frozen_copy_dtype, s.low_precision) == (want, want, want, native)
    assert EngineSettings(grad_dtype="float32", sample_dtype="bfloat16").grad_dtype == "float32"  # as given


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import lit_align.models.settings as settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, native in (("fpu avx2 avx512f avx512_bf16 amx_tile", True), ("fpu avx2 avx512f avx512bw", False),
                          ("Features: fp asimd bf16 i8mm", True)):
        (tmp_path / "cpuinfo").write_text(f"flags\t\t: {flags}\n")
        monkeypatch.setattr(settings, "Path", lambda _p, f=tmp_path / "cpuinfo": f)
        settings.native_bf16.cache_clear()
        assert settings.native_bf16() is native
    settings.native_bf16.cache_clear()


def test_grad_autocast_is_off_by_default_and_bf16_when_asked():
    engine = toy_engine()
    with engine.grad_autocast():
        assert not torch.is_autocast_enabled("cpu")
    engine = toy_engine(grad_dtype="bfloat16")
    with engine.grad_autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, m).item() == 1.5
    assert masked_mean(x).item() == 3.5
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0


def test_the_method_of_docs_architecture_trains(monkeypatch):
    """The one-file method of docs/architecture.md runs as written: three steps, its state moves."""
    import re
    import types
    from pathlib import Path

    import lightning as L

    from lit_align.data.prompts import PromptDataModule
    from lit_align.scorers import Regex

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    mod = types.ModuleType("my_method")
    monkeypatch.setitem(__import__("sys").modules, "my_method", mod)  # (dataclasses look their module up)
    exec(re.findall(r"```python\n(.*?)```", doc, re.S)[0], mod.__dict__)
    module = mod.MyMethod(reward=Regex("d", name="d"), model="toy", n_samples=8, minibatch_size=4,
                          max_new_tokens=3, lr=0.1)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=10))
    assert trainer.global_step == 3 and module.last_rollout is not None
    assert module.state.running_mean > 0 and "train/reward" in trainer.callback_metrics
    assert module.extra_state() == {"running_mean": module.state.running_mean}
