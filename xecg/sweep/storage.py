"""Where a study lives: a journal file (with a heartbeat of our own, which Optuna 5's
``JournalStorage`` lacks) or any SQLAlchemy URL, with passwords masked in all that is printed."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from xecg.errors import ConfigError, one_line

#: Trial system attribute: the last heartbeat (journal storage).
HEARTBEAT_KEY = "xecg:heartbeat"


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) without the password of ``url``."""
    if "://" in url:
        with contextlib.suppress(Exception):
            from sqlalchemy.engine import make_url

            password = make_url(url).password
            if password:
                text = text.replace(str(password), "***")
    return text.replace(url, mask_url(url))


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for anything printed or written)."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, _, rest = url.partition("://")
        creds, at, host = rest.rpartition("@")
        if at and ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        return url


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with Optuna's heartbeat (Optuna 5 has it for RDB storages only): a
    running trial's worker writes the time into a system attribute every ``heartbeat_interval``
    seconds; a RUNNING trial that has not done so for ``grace_period`` seconds is stale, and
    ``optuna.storages.fail_stale_trials`` (which ``study.optimize`` calls before every trial)
    marks it FAIL and calls ``stale_trial_callback``. Times are the workers' clocks."""

    def __init__(self, backend, heartbeat_interval: int, grace_period: int | None = None,
                 stale_trial_callback=None) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 2 * heartbeat_interval
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False,
                                         states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_KEY)
            if beat is None:  # as RDBStorage: a trial that never beat is not judged
                continue
            # A re-queued trial carries the heartbeat of the one it retries: count from its start.
            start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
            if now - max(float(beat), start) > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback


def make_storage(url: str, heartbeat: dict[str, int]):
    """An Optuna storage with heartbeat: a SQLAlchemy URL (``scheme://...``) or a journal file."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = (RetryHeartbeatStaleTrialCallback(max_retry=heartbeat["retries"])
                 if heartbeat["retries"] else None)
    options = {"heartbeat_interval": heartbeat["interval"],
               "grace_period": heartbeat["grace_period"]}
    if "://" in url:
        if url.startswith("redis"):
            raise ConfigError(f"--storage {mask_url(url)}: Redis is not supported; use a "
                              "database URL or a journal file")
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(url, engine_kwargs=engine,
                                  heartbeat_stale_trial_callback=retry, **options)
            except Exception as err:
                raise ConfigError(f"--storage {mask_url(url)}: cannot open "
                                  f"({scrub(one_line(err, 240), url)})") from None
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileOpenLock,
        JournalFileSymlinkLock,
    )

    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Optuna's default lock (a symlink, atomic on NFS too); Windows needs admin rights for it.
    lock = (JournalFileOpenLock if os.name == "nt" else JournalFileSymlinkLock)(str(path))
    return JournalHeartbeatStorage(JournalFileBackend(str(path), lock_obj=lock),
                                   stale_trial_callback=retry, **options)


