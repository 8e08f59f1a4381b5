"""Evaluation of conditional tasks (CDPG, arXiv:2112.00791): beam-search ("map") decoding of the
policy on left-padded batches of contexts, for decoder-only and encoder-decoder models, and
the validation run of CDPG logging task metrics for both decodings plus per-context KL."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch

from lit_align.callbacks.task_metrics import TaskMetrics, beam_decode
from lit_align.data import ContextListDataModule
from lit_align.methods import CDPG
from lit_align.scorers import Regex
from lit_align.targets import Pointwise

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]

CONTEXTS = ["def f(x):", "a much longer context, so that the batch is left-padded:"]


def module_for(model: str, **kw) -> CDPG:
    # b = 1 iff the completion has a printable ASCII character: ~0.94 per sample for the random
    # byte-level tiny models, so every validation context has Ẑ_c > 0
    m = CDPG(target=[Pointwise(Regex("[ -~]", name="ascii"))], model=model, n_samples=4, minibatch_size=8,
             max_new_tokens=6, lr=1e-4, val_samples=8, **kw)
    m.configure_model()
    return m


@torch.no_grad()
def greedy_alone(module: CDPG, context: str, steps: int) -> str:
    """Greedy decoding of one unpadded context by explicit argmax over full forward passes."""
    model, policy = module.model, module.policy
    seq2seq = bool(model.config.is_encoder_decoder)
    prompt = torch.tensor([policy.encode_context(context, seq2seq)])
    out: list[int] = []
    for _ in range(steps):
        if seq2seq:
            start = model.config.decoder_start_token_id
            dec = torch.tensor([[start] + out])
            logits = model(input_ids=prompt, decoder_input_ids=dec).logits[0, -1]
        else:
            logits = model(input_ids=torch.cat([prompt, torch.tensor([out], dtype=torch.long)], 1)).logits[0, -1]
        nxt = int(logits.argmax())
        if nxt == policy.eos_id:
            break
        out.append(nxt)
    return policy.tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-t5"])
def test_one_beam_is_greedy_on_a_padded_batch(name):
    """num_beams=1 (no n-gram blocking) must equal per-context greedy decoding: the batch is
    left-padded, so this checks the attention mask / position handling and the prompt strip."""
    module = module_for(name)
    texts = beam_decode(module, CONTEXTS, num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=6)
    assert texts == [greedy_alone(module, c, 6) for c in CONTEXTS]
    beams = beam_decode(module, CONTEXTS, num_beams=4, max_new_tokens=6)
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)


def test_validation_logs_both_decodings_and_per_context_kl(tmp_path):
    L.seed_everything(0, verbose=False)
    module = module_for("tiny-gpt2")
    cb = TaskMetrics(metrics=["length"], decoding=["sampling", "beam"], num_beams=2, max_contexts=8)
    dm = ContextListDataModule(CONTEXTS, val_contexts_per_step=2)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb], default_root_dir=tmp_path)
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        (metrics,) = trainer.validate(module, dm)
    finally:
        log.setLevel(level)
    assert {"val/sampling/length_words", "val/beam/length_words"} <= set(metrics)
    assert len(cb.last_texts["beam"]) == len(CONTEXTS) == len(cb.last_texts["sampling"])
    # greedy-like map decoding is deterministic: decoding again gives the same texts
    assert cb.last_texts["beam"] == beam_decode(module, CONTEXTS, num_beams=2, max_new_tokens=None)
    assert "val/kl_target_policy" in metrics and metrics["val/kl_target_policy"] >= -1e-6
    assert 0 < metrics["val/z"] <= 1 and metrics["val/contexts_with_signal"] == 1.0
