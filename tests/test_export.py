"""Export to a Hugging Face folder: a trained tiny policy (causal, seq2seq, LoRA merged and
adapter-only, written under DDP, an FSDP-style sharded folder) loads with transformers / peft
and computes the trained policy's logits."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from lit_align.callbacks.export import ExportPretrained
from lit_align.data.prompts import PromptDataModule
from lit_align.export import export, export_checkpoint, read_checkpoint
from lit_align.methods import DPG
from lit_align.models import load
from lit_align.scorers import Regex
from lit_align.targets import Pointwise

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("single_thread")]

COMMON = dict(target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=8, minibatch_size=4, max_new_tokens=6,
              lr=0.05)
IDS = torch.tensor([[5, 70, 71, 72, 32, 101, 102], [120, 9, 33, 34, 35, 36, 37]])


def train(model: str, steps: int = 2, lora: dict | None = None, **trainer_kwargs) -> tuple[DPG, L.Trainer]:
    L.seed_everything(0, verbose=False)
    module = DPG(model=model, lora=lora, **COMMON)
    kwargs = dict(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100))
    return module, trainer


@torch.no_grad()
def logits(model, seq2seq: bool = False) -> torch.Tensor:
    model.eval()
    kwargs = {"decoder_input_ids": IDS[:, :4]} if seq2seq else {}
    return model(input_ids=IDS, **kwargs).logits.float()


def assert_trained(module: DPG, exported_logits: torch.Tensor, seq2seq: bool = False, exact: bool = True) -> None:
    """The exported model computes the trained policy (and not the untouched base model)."""
    trained = logits(module.model, seq2seq)
    diff = (exported_logits - trained).abs().max().item()
    assert diff == 0.0 if exact else diff < 1e-5, diff
    base, _ = load(module.hparams.model, seed=module.hparams.model_seed)
    assert (logits(base, seq2seq) - trained).abs().max() > 1e-3, "training changed the policy"


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    module, trainer = train("tiny-gpt2")
    path = tmp_path_factory.mktemp("gpt2") / "run.ckpt"
    trainer.save_checkpoint(path)
    return module, path


def test_causal_export_loads_in_transformers_and_pipeline(gpt2_run, tmp_path, run_cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, pipeline

    module, ckpt = gpt2_run
    out = run_cli("export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "exported"))
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "generation_config.json",
                                               "tokenizer.json", "README.md"}
    model = AutoModelForCausalLM.from_pretrained(out)
    assert_trained(module, logits(model))
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("hello world")["input_ids"] == module.tokenizer("hello world")["input_ids"]
    gen = GenerationConfig.from_pretrained(out)
    assert (gen.do_sample, gen.temperature, gen.top_k, gen.top_p, gen.max_new_tokens) == (True, 1.0, 0, 1.0, 6)
    # greedy continuation: the pipeline of the folder writes what the trained policy writes
    prompt = "abc"
    ids = module.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = module.model.generate(ids, max_new_tokens=5, do_sample=False, min_new_tokens=5,
                                         pad_token_id=module.tokenizer.pad_token_id)
    text = pipeline("text-generation", model=str(out))(prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                                         return_full_text=False)[0]["generated_text"]
    assert text == module.tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)
    card = (out / "README.md").read_text()
    assert "DPG" in card and "`tiny-gpt2`" in card and "arXiv:2012.11635" in card


def test_seq2seq_export(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    module, trainer = train("tiny-t5")
    trainer.save_checkpoint(tmp_path / "t5.ckpt")
    out = export(tmp_path / "t5.ckpt", tmp_path / "t5")
    assert_trained(module, logits(AutoModelForSeq2SeqLM.from_pretrained(out), seq2seq=True), seq2seq=True)


def test_lora_merged_and_adapter_only(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    module, trainer = train("tiny-llama", lora={"r": 4})
    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    ckpt = read_checkpoint(tmp_path / "lora.ckpt")
    assert all(".lora_" in k or k.startswith("proposal.") for k in ckpt["state_dict"]), "only trained weights saved"
    merged = export_checkpoint(ckpt, tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    assert_trained(module, logits(AutoModelForCausalLM.from_pretrained(merged)), exact=False)  # W + s·BA in fp32
    adapter = export_checkpoint(ckpt, tmp_path / "adapter", adapter_only=True)
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    base, _ = load("tiny-llama", seed=module.hparams.model_seed)
    assert_trained(module, logits(peft.PeftModel.from_pretrained(base, adapter)))


def test_refusals(gpt2_run, tmp_path):
    _, ckpt = gpt2_run
    with pytest.raises(ValueError, match="adapter_only needs a checkpoint of a run with `lora:`"):
        export(ckpt, tmp_path / "x", adapter_only=True)
    with pytest.raises(ValueError, match="RewardModel"):
        export_checkpoint({"state_dict": {}, "hyper_parameters": {"model": "tiny-gpt2"},
                           "lit_align": {"method": "RewardModel"}}, tmp_path / "x")
    with pytest.raises(ValueError, match="toy"):
        export_checkpoint({"state_dict": {}, "hyper_parameters": {"model": "toy"}}, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no last"):
        export(tmp_path, tmp_path / "x")


def test_fsdp_sharded_folder(gpt2_run, tmp_path):
    """Lightning's FSDP ``state_dict_type: sharded`` layout: torch.distributed.checkpoint shards of
    ``{"model": state_dict, ...}`` plus ``meta.pt`` with everything else (written here in one process)."""
    import torch.distributed.checkpoint as dcp

    module, ckpt_path = gpt2_run
    ckpt = torch.load(ckpt_path, weights_only=False)
    folder = tmp_path / "sharded.ckpt"
    dcp.save({"model": ckpt.pop("state_dict")}, checkpoint_id=folder)
    torch.save(ckpt, folder / "meta.pt")
    from transformers import AutoModelForCausalLM

    assert_trained(module, logits(AutoModelForCausalLM.from_pretrained(export(folder, tmp_path / "out"))))


class SaveWeights(L.Callback):
    """Rank 0 writes the trained policy's weights (a forked DDP run trains in the child processes)."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero:
            torch.save({k: v.detach().clone() for k, v in module.model.state_dict().items()}, self.path)


def test_ddp_checkpoint_and_export_callback(tmp_path):
    """Two CPU ranks (gloo): the callback's folder and the exported DDP ``last.ckpt`` hold the trained
    weights of rank 0, the card the final metrics."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from transformers import AutoModelForCausalLM

    ckpts = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True, save_top_k=0, every_n_train_steps=2)
    module, _ = train("tiny-gpt2", steps=2, devices=2, strategy="ddp_fork", enable_checkpointing=True,
                      callbacks=[ExportPretrained(out=str(tmp_path / "callback")), ckpts,
                                 SaveWeights(tmp_path / "rank0.pt")])
    module.configure_model()
    module.model.load_state_dict(torch.load(tmp_path / "rank0.pt"))
    assert_trained(module, logits(AutoModelForCausalLM.from_pretrained(tmp_path / "callback")))
    assert_trained(module, logits(AutoModelForCausalLM.from_pretrained(export(tmp_path / "ckpts", tmp_path / "cli"))))
    assert "train/scorer/letter" in (tmp_path / "callback" / "README.md").read_text()
    assert json.loads((tmp_path / "callback" / "config.json").read_text())["model_type"] == "gpt2"


def test_conditional_training_control_tokens(tmp_path):
    """PHF's conditional training adds <|aligned|>/<|misaligned|> to the vocabulary: the export has
    them in its tokenizer and embeddings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_align.models.phf_init import add_control_tokens

    model, tok = load("tiny-gpt2", seed=0)
    ids = add_control_tokens(model, tok, ["<|aligned|>", "<|misaligned|>"], seed=1)
    ckpt = {"hyper_parameters": {"model": "tiny-gpt2", "objective": "conditional"},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    out = export_checkpoint(ckpt, tmp_path / "conditional")
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(["<|aligned|>", "<|misaligned|>"]) == ids
    exported = AutoModelForCausalLM.from_pretrained(out)
    control = torch.tensor([[ids[0], 70, 71, ids[1]]])
    with torch.no_grad():
        assert torch.equal(exported.eval()(control).logits, model.eval()(control).logits)


def test_model_card_names_f_dpg_when_dpg_descends_another_divergence():
    from lit_align.model_card import model_card

    forward = model_card("DPG", {"model": "toy", "divergence": "kl"}, None, {})
    reverse = model_card("DPG", {"model": "toy", "divergence": "rkl"}, None, {})
    assert "arXiv:2206.00761" in forward and "arXiv:2302.08215" not in forward
    assert "f-divergence `rkl`" in reverse and "arXiv:2302.08215" in reverse
