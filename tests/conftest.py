"""Shared fixtures. Every run is shrunk to CPU-minutes; the real CPSC records in ../shared/data
are used when present and their tests skip with a reason when not."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("XECG_SHARED_DATA", ROOT.parent / "shared" / "data"))

# One intra-op thread: data-loader workers and the 2 cores are not oversubscribed, and step
# times stay stable (2 threads beside workers ran training steps 10x slower here).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# No W&B account or network in tests, and no stray runs in the repository.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real CPSC sample not found at {path} (set XECG_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def wfdb_sample() -> Path:
    """100 real CPSC 2018 records, Challenge 2020 v1.0.0 WFDB layout (abbreviation #Dx)."""
    return _shared("cpsc2018-wfdb-sample")


@pytest.fixture(scope="session")
def snomed_sample() -> Path:
    """9 real Challenge 2020 v1.0.2 records (SNOMED-CT #Dx)."""
    return _shared("cinc2020-snomed-sample")


@pytest.fixture(scope="session")
def reference_csv() -> Path:
    """The official CPSC 2018 REFERENCE.csv for all 6,877 records."""
    return _shared("cpsc2018/REFERENCE.csv")


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="session", autouse=True)
def _wandb_home(tmp_path_factory):
    """W&B's caches, staged artifacts (logged tables) and settings go to a temporary folder, not
    the user's home."""
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home / var.lower()))
        yield


@pytest.fixture(autouse=True)
def _no_active_wandb_run():
    """A test that fails mid-run must not leave its W&B run active: the next WandbLogger in this
    process would attach to it."""
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@dataclass(frozen=True)
class TinyData:
    """A prepared synthetic store and a split JSON of its records."""

    store: Path
    split: Path
    counts: dict[str, int]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    """200 synthetic records of 6-8 s (classes balanced; about 1 s to make), split by id into
    96 train / 80 val / 24 test: a validation split large enough for stable metrics, yet training
    epochs of 6 batches of 16."""
    from xecg.data.splits import save_split
    from xecg.data.store import Store
    from xecg.data.synthetic import make_synthetic_store

    root = tmp_path_factory.mktemp("tiny-data")
    store = make_synthetic_store(root / "store", n=200, seed=0, durations=(6, 8), balanced=True,
                                 progress=False)
    ids = sorted(Store(store).ids)
    split = {"train": ids[:96], "val": ids[96:176], "test": ids[176:]}
    save_split(split, root / "split.json")
    return TinyData(store, root / "split.json", {k: len(v) for k, v in split.items()})


@pytest.fixture(scope="session")
def tiny_config(tiny_data):
    """Factory ``(folder, name="tiny", **sections) -> Path``: writes ``folder/NAME.yaml``, an
    experiment for a CPU run of seconds on ``tiny_data`` (width 0.125, 972-sample crops, one
    epoch, run folder ``folder/runs/NAME``). Keyword arguments are sections (``model={...}``)
    merged over the defaults (one level deep: ``model={"net": ...}`` replaces the net)."""
    import yaml

    def write(folder: Path, name: str = "tiny", **sections: dict) -> Path:
        config = {
            "experiment": {"name": name, "runs_dir": str(folder / "runs")},
            "attention": {"every_n_epochs": 100, "num_records": 1},
            "seed_everything": 0,
            "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1,
                        "precision": "32-true", "log_every_n_steps": 1,
                        "enable_progress_bar": False, "enable_model_summary": False},
            "model": {"net": {"class_path": "xecg.models.XECGNet", "init_args": {"width": 0.125}},
                      "loss": {"class_path": "xecg.losses.XECGLoss"}, "lr": 0.003},
            "data": {"store": str(tiny_data.store), "split": str(tiny_data.split),
                     "policy": "crop", "length": 972, "batch_size": 16, "num_workers": 0},
        }
        for key, values in sections.items():
            config[key] = {**config.get(key, {}), **values}
        path = Path(folder) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
