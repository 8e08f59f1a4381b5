"""Exact resume across real process deaths: SIGKILL mid-run and SIGTERM, then ``fit --ckpt_path last``.

One training run of the toy DPG config (off-policy, proposal updates, validation every few
steps) lives through three processes: the first is killed with SIGKILL once a few step
checkpoints exist, the second (``--ckpt_path last``) is sent SIGTERM a few steps later and
saves ``last.ckpt`` on its way out, the third (``--ckpt_path last`` again) finishes. It must end
with the weights, proposal, optimizer, DPG state and RNG state of an uninterrupted run bit
for bit, and every metric any of the processes logged must equal the uninterrupted run's
value at the same step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_align.callbacks.resume import PARTIAL, find_last_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MAX_STEPS = 18
KILL_AFTER = 4  # step checkpoints that must exist before SIGKILL
TERM_AFTER = 4  # steps after the first resume before SIGTERM
CALLBACKS = ("[{class_path: lit_align.callbacks.AtomicCheckpoint, init_args: "
             "{every_n_train_steps: 1, save_top_k: -1, filename: '{step}'}}]")


def fit_args(name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lit_align", "fit", "--config", "dpg_toy",
        f"--trainer.max_steps={MAX_STEPS}", "--trainer.val_check_interval=5",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.name={name}",
        f"--trainer.callbacks={CALLBACKS}",
        "--model.init_args.n_samples=16", "--model.init_args.minibatch_size=8",
        "--model.init_args.val_samples=8", "--model.init_args.proposal_update_interval=3", *extra,
    ]


def start(cwd: Path, name: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = open(cwd / f"{name}.log", "a")
    return subprocess.Popen(fit_args(name, *extra), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_in_process(cwd: Path, name: str) -> None:
    """The uninterrupted run, in this process (saves a Python start-up), single-threaded like the others."""
    from toy_exact import torch_threads

    from lit_align.cli import main

    with pytest.MonkeyPatch.context() as mp, torch_threads(1):
        mp.chdir(cwd)
        mp.setattr("sys.argv", ["lit_align"])
        main(fit_args(name)[3:])


def ckpt_dir(cwd: Path, name: str, version: int) -> Path:
    return cwd / "runs" / name / f"version_{version}" / "checkpoints"


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < end, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


def finish(proc: subprocess.Popen, cwd: Path, what: str) -> None:
    assert proc.wait(timeout=300) == 0, f"{what} failed:\n" + "".join(
        p.read_text()[-3000:] for p in cwd.glob("*.log"))


def scalars(log_dir: Path) -> dict[tuple[str, int], float]:
    """Every logged scalar by (tag, step), timings excluded (they are not deterministic)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {(t, e.step): e.value for t in acc.Tags()["scalars"] if not t.startswith("perf/") for e in acc.Scalars(t)}


def stop_at(cwd: Path, proc: subprocess.Popen, version: int, step: int, sig: int) -> int:
    """Send ``sig`` once checkpoint ``step`` of run ``version`` exists; the step of its last.ckpt."""
    wait_for(ckpt_dir(cwd, "run", version) / f"step={step}.ckpt", proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    (cwd / f"returncode{version}").write_text(str(proc.returncode))
    return torch.load(find_last_checkpoint([ckpt_dir(cwd, "run", version)]), weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("resume")
    first = start(cwd, "run")
    killed_at = stop_at(cwd, first, 0, KILL_AFTER, signal.SIGKILL)
    second = start(cwd, "run", "--ckpt_path", "last")
    termed_at = stop_at(cwd, second, 1, killed_at + TERM_AFTER, signal.SIGTERM)
    assert second.returncode == 0, "a run stopped by SIGTERM exits cleanly"
    third = start(cwd, "run", "--ckpt_path", "last")
    run_in_process(cwd, "full")
    finish(third, cwd, "the last resumed run")
    return {"cwd": cwd, "killed_at": killed_at, "termed_at": termed_at,
            "returncodes": [int((cwd / f"returncode{v}").read_text()) for v in (0, 1)]}


def load_last(cwd: Path, name: str, version: int) -> dict:
    return torch.load(ckpt_dir(cwd, name, version) / "last.ckpt", map_location="cpu", weights_only=True)


def test_runs_were_interrupted_mid_run(runs):
    assert runs["returncodes"][0] == -signal.SIGKILL
    # (SIGKILL may land between writing step=K.ckpt and last.ckpt: last is then the step before)
    assert KILL_AFTER - 1 <= runs["killed_at"] < runs["termed_at"] < MAX_STEPS, "both signals arrived mid-run"
    cwd = runs["cwd"]
    log = (cwd / "run.log").read_text()
    assert "SIGTERM: saved" in log, "the SIGTERM handler saved a checkpoint"
    assert not list(ckpt_dir(cwd, "run", 1).glob(f"*{PARTIAL}"))
    assert load_last(cwd, "run", 1)["global_step"] == runs["termed_at"]


def test_resumed_run_matches_uninterrupted_weights_and_state(runs):
    full, resumed = load_last(runs["cwd"], "full", 0), load_last(runs["cwd"], "run", 2)
    assert resumed["global_step"] == full["global_step"] == MAX_STEPS
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    assert any(k.startswith("proposal.") for k in full["state_dict"]), "the DPG proposal is in the checkpoint"
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])), k
    ours, theirs = full["lit_align"]["state"], resumed["lit_align"]["state"]
    assert ours["z_count"] == theirs["z_count"] == MAX_STEPS * 16
    assert ours["log_z_sum"] == theirs["log_z_sum"] and ours["proposal_updates"] == theirs["proposal_updates"]
    assert torch.equal(full["lit_align"]["rng"]["torch"], resumed["lit_align"]["rng"]["torch"])


def test_logged_metrics_match_uninterrupted(runs):
    logs = runs["cwd"] / "runs"
    full = scalars(logs / "full" / "version_0")
    parts = [scalars(logs / "run" / f"version_{v}") for v in (0, 1, 2)]
    for part in parts:  # everything any process wrote agrees with the uninterrupted run
        assert part, "each process logged something"
        assert all(full[k] == v for k, v in part.items()), [k for k, v in part.items() if full.get(k) != v][:5]
    # the resumed processes log exactly the uninterrupted run's steps from where they resumed
    bounds = [runs["killed_at"], runs["termed_at"], MAX_STEPS]
    for part, lo, hi in ((parts[1], bounds[0], bounds[1]), (parts[2], bounds[1], bounds[2])):
        expected = {k: v for k, v in full.items() if lo <= k[1] < hi and k[0] != "hp_metric"}
        assert {k: v for k, v in part.items() if k[0] != "hp_metric" and k[1] < hi} == expected
    assert any(t.startswith("val/") for part in parts[1:] for t, _ in part), "validation ran after a resume"


# ------------------------------------------------------------------ every method, in process
# One shipped config per method (tiny models, as tests/test_configs.py runs them): 3 steps
# uninterrupted, and the same run resumed from its step-1 checkpoint, must end identical.
# (DPG itself is covered by the multi-process test above; f-DPG and RL-KL share DPG's and REINFORCE's state.)
RESUME_CONFIGS = ["ppo_amazing.yaml", "reinforce_amazing.yaml", "rloo_amazing.yaml", "cdpg_translate_offline.yaml",
                  "dpo_toy.yaml", "pmle_toy.yaml", "pref_distill_toy.yaml", "reward_model_sentiment_offline.yaml",
                  "phf_pep8_filtering.yaml"]


def _state_equal(a, b, where: str = "") -> list[str]:
    """Paths where two nested checkpoint states differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _state_equal(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _state_equal(x, y, f"{where}[{i}]")]
    if torch.is_tensor(a) and torch.is_tensor(b):
        return [] if a.shape == b.shape and torch.equal(a, b) else [where]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} vs {b!r}"]


@pytest.mark.parametrize("name", RESUME_CONFIGS)
def test_every_method_resumes_exactly_in_process(name, in_tmp, run_cli, single_thread):
    from test_configs import load_yaml, shrink_args

    from lit_align.cli import CONFIG_DIR

    path = CONFIG_DIR / name
    if not path.is_file():
        pytest.skip(f"{name} is not shipped")
    args, _ = shrink_args(path, load_yaml(path), in_tmp)
    args += ["--trainer.max_steps=3", "--trainer.max_epochs=3", "--trainer.limit_train_batches=3",
             "--trainer.val_check_interval=2", "--trainer.logger=false", f"--trainer.callbacks={CALLBACKS}"]
    run_cli(*args)
    resumed_dir = in_tmp / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(in_tmp / "checkpoints" / "step=1.ckpt", resumed_dir / "checkpoints" / "last.ckpt")
    run_cli(*args, f"--trainer.default_root_dir={resumed_dir}", "--ckpt_path", "last")
    full = torch.load(in_tmp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # (the copied last.ckpt is not overwritten: Lightning writes last-v1.ckpt, the newest)
    resumed = torch.load(find_last_checkpoint([resumed_dir / "checkpoints"]), map_location="cpu", weights_only=True)
    assert full["global_step"] == resumed["global_step"] == 3
    diffs = [d for key in ("state_dict", "optimizer_states", "lr_schedulers", "lit_align")
             for d in _state_equal(full.get(key), resumed.get(key), key)]
    assert not diffs, f"{name}: the resumed run differs at {diffs[:8]}"


# ------------------------------------------------------------------ DDP: every rank resumes its own stream
class _RankRecord(L.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, module) -> None:
        torch.save({"texts": list(module.last_rollout.samples.texts), "table": module.model.table.detach().clone()},
                   self.folder / f"rank{trainer.global_rank}.pt")


def _ddp_fit(folder: Path, ckpt_path: str | None = None) -> list[dict]:
    from lit_align.callbacks import AtomicCheckpoint
    from lit_align.data import ToyDataModule
    from lit_align.methods import DPG
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    folder.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0, verbose=False)
    module = DPG(target=[Pointwise(Regex("d", name="d"))], model="toy", n_samples=16, minibatch_size=16,
                 max_new_tokens=4, lr=0.1, off_policy=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp_fork", logger=False,
                        default_root_dir=folder, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[_RankRecord(folder), AtomicCheckpoint(
                            every_n_train_steps=1, save_top_k=-1, filename="{step}")])
    trainer.fit(module, ToyDataModule(steps_per_epoch=12), ckpt_path=ckpt_path)
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.filterwarnings("ignore")
def test_ddp_resume_restores_each_ranks_random_stream(tmp_path, single_thread):
    full = _ddp_fit(tmp_path / "full")
    ckpt = torch.load(tmp_path / "full" / "checkpoints" / "step=1.ckpt", weights_only=True)
    per_rank = ckpt["lit_align"]["rng_per_rank"]
    assert len(per_rank) == 2 and not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])
    resumed = _ddp_fit(tmp_path / "resumed", str(tmp_path / "full" / "checkpoints" / "step=1.ckpt"))
    assert full[0]["texts"] != full[1]["texts"], "each rank draws its own samples"
    for rank in range(2):  # the last step's samples of each rank, and the weights, as without the interruption
        assert resumed[rank]["texts"] == full[rank]["texts"], rank
        assert torch.equal(resumed[rank]["table"], full[rank]["table"]), rank


def test_atomic_save_replaces_a_folder_checkpoint(tmp_path):
    """DeepSpeed / sharded FSDP checkpoints are folders: a second save replaces the first (os.replace
    alone refuses a non-empty folder), and a file checkpoint is replaced by a folder and back."""
    from types import SimpleNamespace

    from lit_align.callbacks.resume import save_atomic

    def saver(kind):
        def save_checkpoint(path, weights_only=False):
            if kind == "dir":
                os.makedirs(path)
                Path(path, "shard_0.pt").write_text(f"{kind} {len(calls)}")
            else:
                Path(path).write_text(f"{kind} {len(calls)}")
            calls.append(path)
        return save_checkpoint

    calls: list[str] = []
    strategy = SimpleNamespace(barrier=lambda name=None: None)
    target = str(tmp_path / "last.ckpt")
    for i, kind in enumerate(["dir", "dir", "file", "dir"]):
        save_atomic(SimpleNamespace(save_checkpoint=saver(kind), is_global_zero=True, strategy=strategy), target)
        body = Path(target, "shard_0.pt").read_text() if kind == "dir" else Path(target).read_text()
        assert body == f"{kind} {i}"
        assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # no .partial or .old left behind
