"""What a lit_align checkpoint holds beyond the weights, so that a resumed run continues exactly:
the method's own state (Ẑ, λ, proposal, controllers: ``extra_state``), skipped-step counters and
every rank's random streams; with LoRA only the trained weights (the base is reloaded by name).

:class:`CheckpointState` is a mixin of the LightningModules of lit_align (on-policy and offline);
it uses :class:`~lit_align.methods.stepping.GuardedSteps` (``attached_trainer``, the step counters).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lit_align import distributed
from lit_align.models import lora as lora_lib
from lit_align.rng_state import gather_objects, rng_state, set_rng


@dataclass
class MethodState:
    """A method's own state between steps (Ẑ, baselines, controllers): a dataclass whose fields
    go into the checkpoint (``extra_state``) under their names."""

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])


class CheckpointState:
    """Lightning's checkpoint hooks for lit_align's methods (see the module docstring)."""

    def extra_state(self) -> dict:
        """Method state (beyond weights) to put in the checkpoint."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lit_align"] = {
            "method": type(self).__name__,
            "state": self.extra_state(),
            "skipped_steps": self.skipped_steps,
            "steps_without_signal": self.steps_without_signal,
            "rng": rng_state(),
        }
        per_rank = gather_objects(self.attached_trainer, checkpoint["lit_align"]["rng"])
        if per_rank is not None:  # every rank draws its own samples: each resumes its own stream
            checkpoint["lit_align"]["rng_per_rank"] = per_rank
        if self.hparams.get("lora") is not None and self.model is not None:
            # only what is trained (adapters, heads) and snapshots: the base is reloaded by name
            state = checkpoint.get("state_dict", {})
            for key in lora_lib.frozen_state_keys(self.model, "model.") & set(state):
                del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.hparams.get("lora") is not None and "state_dict" in checkpoint:  # (FSDP loads and pops it first)
            self.configure_model()
            state = checkpoint["state_dict"]
            trained = {lora_lib.unwrapped_name(f"model.{n}")
                       for n, _ in lora_lib.trainable_named_parameters(self.model)}
            missing = sorted(trained - set(state))
            if missing:
                raise ValueError(f"the checkpoint lacks {len(missing)} trained LoRA weights (e.g. {missing[0]}); "
                                 "was it written with the same `lora:` settings?")
        saved = checkpoint.get("lit_align")
        if saved is None:
            return
        if saved.get("method") != type(self).__name__:
            raise ValueError(
                f"checkpoint was written by method {saved.get('method')!r}, not {type(self).__name__!r}; "
                "resume with the same model class_path"
            )
        self.configure_model()
        self.skipped_steps = saved.get("skipped_steps", 0)
        self.steps_without_signal = saved.get("steps_without_signal", 0)
        self.load_extra_state(saved.get("state", {}))
        rng = saved.get("rng")
        per_rank = saved.get("rng_per_rank")
        own = bool(per_rank) and len(per_rank) == distributed.world_size(self.attached_trainer)
        if own:
            rng = per_rank[self.global_rank]
        self.__dict__["_pending_rng_is_own"] = own
        if rng:
            set_rng(rng)
            # Lightning draws from the global RNG between here and the first resumed step (the
            # train dataloader's iterator seed), which an uninterrupted run does not do at that
            # point; set the state again just before that step so a resumed run continues exactly.
            self._pending_rng = rng

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        rng = self.__dict__.pop("_pending_rng", None)
        if rng is not None:
            set_rng(rng)
            own = self.__dict__.pop("_pending_rng_is_own", False)  # this rank's own saved stream
            if distributed.world_size(self.attached_trainer) > 1 and not own:
                distributed.seed_per_rank(self.global_rank)  # rank 0's saved state → per-rank streams
