"""Log the sanity check's validation at step 0: the curve then starts from the model before training."""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ValidationAtStart(L.Callback):
    """Write the metrics of Lightning's sanity-check validation to the loggers at step 0.

    Lightning runs ``num_sanity_val_steps`` validation batches before the first training step and
    discards what they log. With this callback those values (the mean over the sanity batches of
    every ``val/*`` metric the method logs) are logged at step 0, so that a validation curve shows
    where the untrained model started. Set ``trainer.num_sanity_val_steps: -1`` to validate on the
    whole validation set; a resumed run does no sanity check and logs nothing here. Under several
    processes only rank 0's batches are logged.
    """

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = getattr(pl_module, "val_batch_metrics", None)
        if not batches:
            warnings.warn("ValidationAtStart: the sanity check logged no val/ metric; nothing to log at step 0",
                          stacklevel=2)
            return
        keys = sorted({k for b in batches for k in b})
        means = {k: sum(b[k] for b in batches if k in b) / sum(k in b for b in batches) for k in keys}
        for logger in trainer.loggers:
            logger.log_metrics(means, step=0)
        shown = ", ".join(f"{k} {v:.3g}" for k, v in means.items() if "scorer/" in k or k.endswith("/kl_policy_base"))
        rank_zero_info(f"Validation before training ({len(batches)} batch(es)): {shown or 'logged at step 0'}")
