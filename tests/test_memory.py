"""Memory-lean paths give the same numbers as the plain ones: eagerly allocated optimizer
state, and logits computed only at the completion's positions."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_NAMES
from lit_align.memory import preallocate_optimizer_state
from lit_align.models import Policy


@pytest.mark.parametrize("cls,kw", [
    (torch.optim.Adam, {}),
    (torch.optim.Adam, {"weight_decay": 0.1, "foreach": False}),
    (torch.optim.AdamW, {"weight_decay": 0.1}),
    (torch.optim.AdamW, {"weight_decay": 0.1, "fused": True}),
    (torch.optim.AdamW, {"amsgrad": True, "foreach": True}),
])
def test_preallocated_adam_state_gives_bitwise_the_lazy_updates(cls, kw):
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(7)]
    lazy = [p.clone().requires_grad_() for p in params]
    eager = [p.clone().requires_grad_() for p in params]
    opt_lazy, opt_eager = cls(lazy, lr=0.01, **kw), cls(eager, lr=0.01, **kw)
    assert preallocate_optimizer_state(opt_eager)
    assert not preallocate_optimizer_state(opt_eager), "a second call must leave the state alone"
    for p, q in zip(eager, params):
        assert torch.equal(p.detach(), q), "preallocation must not move the parameters"
        st = opt_eager.state[p]
        assert float(st["step"]) == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()
        assert p.grad is None
    assert opt_eager.param_groups[0]["lr"] == 0.01 and opt_eager.param_groups[0]["weight_decay"] == kw.get(
        "weight_decay", opt_lazy.param_groups[0]["weight_decay"])
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for ps, opt in ((lazy, opt_lazy), (eager, opt_eager)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(lazy, eager):
        assert torch.equal(a, b)
    assert float(opt_eager.state[eager[0]]["step"]) == 3


def test_preallocation_leaves_other_optimizers_and_filled_states_alone():
    p = torch.zeros(3, requires_grad=True)
    assert not preallocate_optimizer_state(torch.optim.SGD([p], lr=0.1, momentum=0.9))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    assert not preallocate_optimizer_state(opt)
    assert all(torch.equal(before[k], v) for k, v in opt.state[p].items())


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_log_probs_and_gradients_from_completion_logits_only(name, share, make_model):
    """The policy asks the model for logits at the completion's positions only (an index
    ``logits_to_keep``; with shared prompts, the prompt pass's last position and then the
    completion pass); log-probs and parameter gradients equal the full-sequence computation."""
    model, tok = make_model(name)
    if getattr(model.config, "is_encoder_decoder", False):
        pytest.skip("encoder-decoder models compute decoder logits only")
    policy = Policy(tok, max_new_tokens=6)
    policy.share_prompts = share
    torch.manual_seed(1)
    samples = policy.sample(model, ["hello there", "a"], 3)
    lc = samples.completion_ids.shape[1]
    scored = int(samples.completion_mask.any(0).nonzero()[-1]) + 1  # columns after it are not computed
    head = model.get_output_embeddings()
    seen = []
    handle = head.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model.zero_grad()
    lp = policy.token_log_probs(model, samples)
    lp.sum().backward()
    handle.remove()
    assert seen == ([1, scored - 1] if share else [scored]), "logits at the completion's positions only"
    ours = [p.grad.clone() for p in model.parameters()]
    # plain: every position's logits, full log-softmax, then the completion's slice
    model.zero_grad()
    ids = torch.cat([samples.prompt_ids, samples.completion_ids], 1)
    mask = torch.cat([samples.prompt_mask, torch.ones_like(samples.completion_ids)], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -(lc + 1):-1].float()
    plain = logits.log_softmax(-1).gather(-1, samples.completion_ids[..., None]).squeeze(-1) * samples.completion_mask
    plain.sum().backward()
    torch.testing.assert_close(lp, plain, atol=1e-5, rtol=0)
    for g, p in zip(ours, model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_is_active_for_a_pretrained_model_in_a_fit(tmp_path):
    """``from_pretrained`` returns a model in eval mode, Lightning keeps it so, and transformers
    checkpoints only in train mode: the policy must be put in train mode, or
    ``gradient_checkpointing: true`` silently does nothing. Checked by counting an attention
    block's forward calls with gradients on: a checkpointed layer runs again in the backward."""
    import lightning as L

    from lit_align.data.prompts import PromptDataModule
    from lit_align.methods import DPG
    from lit_align.models import load
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    model, tok = load("tiny-llama")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    calls = {}
    for ckpt in (False, True):
        module = DPG(target=[Pointwise(Regex(".", name="any"))], model=str(tmp_path / "m"), n_samples=4,
                     minibatch_size=4, max_new_tokens=4, off_policy=False, gradient_checkpointing=ckpt)
        module.configure_model()
        module.policy.share_prompts = False  # one pass per forward either way (checkpointing turns sharing off)
        attention = [m for m in module.model.modules() if type(m).__name__ == "LlamaAttention"][0]
        count = {"grad": 0}
        attention.register_forward_hook(lambda m, i, o: count.__setitem__("grad", count["grad"] + torch.is_grad_enabled()))
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            default_root_dir=tmp_path)
        trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=1))
        calls[ckpt] = count["grad"]
    assert calls[False] >= 1
    assert calls[True] == 2 * calls[False], calls  # recomputed once in the backward
