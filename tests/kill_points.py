"""A callback that holds a training run at a known point, so that a test can kill it there
whatever the machine's load (polling for a checkpoint raced the run's next epoch on a busy
machine). Named by ``class_path`` in a test's experiment config; it imports in the ``xecg``
subprocess because the test puts this folder on that process's ``PYTHONPATH``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

#: The file the held run writes (its global step) before it waits; unset: the callback does nothing.
HOLD_FILE = "XECG_TEST_HOLD_FILE"


class HoldAtEpoch(Callback):
    """Before the first training batch of epoch ``epoch``, when ``$XECG_TEST_HOLD_FILE`` names a
    file: write the global step there and sleep until killed. Stateless, so it adds nothing to
    checkpoints, and with the variable unset (the resumed run) the run is an ordinary one."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        hold = os.environ.get(HOLD_FILE)
        if hold and trainer.current_epoch == self.epoch:
            Path(hold).write_text(str(trainer.global_step))
            while True:
                time.sleep(1)
