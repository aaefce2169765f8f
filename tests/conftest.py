"""Shared fixtures. Every run is shrunk to CPU-minutes; the real CPSC records in ../shared/data
are used when present and their tests skip with a reason when not."""

from __future__ import annotations

import os
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
