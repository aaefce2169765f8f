"""Reliability of stores: damage of every kind is found when a store is opened or prepared, with
a one-line answer that says how to rebuild it; ``prepare`` and the DataModule rebuild a damaged
store instead of reusing it; stores of the previous release still open; failed writes leave no
half store; record ids that could name a path are refused."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_signal, write_wfdb_record, xecg_command, xecg_env

from xecg.cli import main
from xecg.data.datamodule import CPSCDataModule, SyntheticOptions
from xecg.data.prepare import load_or_prepare, prepare_dataset
from xecg.data.readers import WFDBReader
from xecg.data.record import Record
from xecg.data.store import WRITER, Store, StoreError, StoreWriter, is_current
from xecg.data.synthetic import make_synthetic_store
from xecg.errors import WriteError, XECGError


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("xecg: error:")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small synthetic store (8 records), copied by each test before damaging it."""
    return make_synthetic_store(tmp_path_factory.mktemp("pristine") / "store", n=8, seed=0,
                                durations=(6, 8), balanced=True, progress=False)


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "store"))


def _truncate(path: Path, nbytes: int) -> None:
    os.truncate(path, path.stat().st_size - nbytes)


def _flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x55]))


def _edit(path: Path, old: bytes, new: bytes) -> None:
    """Replace the first ``old`` by ``new`` (same length: the file keeps its size)."""
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))


def _set_meta(store: Path, **changes) -> None:
    meta = json.loads((store / "meta.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    (store / "meta.json").write_text(json.dumps(meta))


DAMAGE = {
    "truncated": (lambda s: _truncate(s / "signals.f32", 4000),
                  "signals.f32 is 4,000 bytes shorter than written: truncated"),
    "extended": (lambda s: open(s / "signals.f32", "ab").write(b"\0" * 48),
                 "signals.f32 is 48 bytes longer than written"),
    "missing file": (lambda s: (s / "moments.npy").unlink(),
                     "moments.npy is missing: the store is incomplete"),
    "other version": (lambda s: _set_meta(s, version=1),
                      "store format version 1, this xecg reads version 2"),
    "edited labels": (lambda s: _edit(s / "records.csv", b"RBBB", b"LBBB"),
                      "records.csv was changed after the store was written (checksum differs)"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damage_is_found_when_the_store_is_opened(store, kind):
    damage, problem = DAMAGE[kind]
    damage(store)
    with pytest.raises(StoreError) as caught:
        Store(store)
    message = str(caught.value)
    assert message.startswith(f"{store}: {problem}")
    assert f"rebuild it with `xecg prepare synthetic --n 8 --seed 0 --out {store}`" in message
    assert "\n" not in message
    assert not is_current(store, json.loads((store / "meta.json").read_text())["fingerprint"])


def test_changed_samples_are_found_by_verify_and_prepare(store):
    """A changed sample keeps every size: opening stays fast and does not see it; the full
    checksum (verify, and the reuse check of prepare) does."""
    fp = json.loads((store / "meta.json").read_text())["fingerprint"]
    assert is_current(store, fp)
    _flip_byte(store / "signals.f32", 12_345)
    Store(store)  # sizes and small files are fine
    with pytest.raises(StoreError, match="signals.f32 was changed after the store was written"):
        Store(store).verify()
    assert not is_current(store, fp)
    # make_synthetic_store (used by `xecg prepare synthetic` and the DataModule) rebuilds it.
    make_synthetic_store(store, n=8, seed=0, durations=(6, 8), balanced=True, progress=False)
    Store(store).verify()


def test_training_on_a_truncated_store_stops_with_one_line(store, tiny_config, tmp_path, capsys):
    """Before: `ValueError: mmap length is greater than file size` deep in a traceback."""
    from xecg.data.splits import make_split, save_split

    save_split(make_split(store, "kfold", folds=4), tmp_path / "split.json")
    config = tiny_config(tmp_path, "broken", data={"store": str(store),
                                                   "split": str(tmp_path / "split.json")})
    _truncate(store / "signals.f32", 4000)
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "signals.f32 is 4,000 bytes shorter than written: truncated" in line
    assert "Traceback" not in err


# ------------------------------------------------------------------- prepare and DataModule

def _source(root: Path) -> Path:
    for i in range(1, 5):
        write_wfdb_record(root / "g1", f"A000{i}", make_signal(400 + 100 * i, seed=i), ["AF"])
    return root


@pytest.mark.parametrize("damage", ["truncated", "changed samples", "no checksums"])
def test_prepare_rebuilds_a_damaged_store_instead_of_reusing_it(tmp_path, capsys, damage):
    src, out = _source(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    if damage == "truncated":
        _truncate(out / "signals.f32", 4000)
        expected = "signals.f32 is 4,000 bytes shorter than written: truncated"
    elif damage == "changed samples":
        _flip_byte(out / "signals.f32", 100)
        expected = "signals.f32 was changed after the store was written"
    else:  # a store of the previous release: no sizes or checksums in meta.json
        _set_meta(out, integrity=None)
        expected = "written without checksums by an earlier xecg"
    capsys.readouterr()
    assert load_or_prepare(src, out, workers=1) == out  # the DataModule's way in
    text = capsys.readouterr().out
    (line,) = [line for line in text.splitlines() if line.startswith(f"{out}: ")]
    assert line.startswith(f"{out}: {expected}") and line.endswith("; preparing it again")
    assert "up to date" not in text
    Store(out).verify()
    assert Store(out).checksummed
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_datamodule_rebuilds_a_damaged_synthetic_store(tmp_path):
    options = {"source": "synthetic", "synthetic": SyntheticOptions(n=12, durations=(6, 8)),
               "protocol": "kfold", "folds": 4, "length": 972, "batch_size": 4,
               "num_workers": 0}
    path = tmp_path / "synthetic"
    CPSCDataModule(str(path), **options).setup()
    _truncate(path / "signals.f32", 4000)
    with pytest.raises(StoreError, match="truncated"):
        Store(path)
    dm = CPSCDataModule(str(path), **options)
    dm.prepare_data()
    dm.setup()
    assert len(dm.store) == 12
    Store(path).verify()
    batch = next(iter(dm.train_dataloader()))
    assert np.isfinite(batch["x"].numpy()).all()


def test_a_store_of_the_previous_release_still_opens(store):
    """meta.json without ``integrity``: the size of signals.f32 comes from records.csv."""
    _set_meta(store, integrity=None)
    opened = Store(store)
    assert not opened.checksummed and len(opened) == 8
    opened.verify()  # nothing more to check, and not an error
    np.testing.assert_array_equal(opened.record(7).signal.shape, (12, opened.lengths[7]))
    _truncate(store / "signals.f32", 4000)
    with pytest.raises(StoreError, match="signals.f32 is 4,000 bytes shorter than written"):
        Store(store)


def test_an_inconsistent_index_of_an_old_store_is_found(store):
    _set_meta(store, integrity=None)
    rows = (store / "records.csv").read_bytes().splitlines(keepends=True)
    (store / "records.csv").write_bytes(b"".join(rows[:-1]))  # a record lost
    with pytest.raises(StoreError, match="records.csv lists 7 records, meta.json 8"):
        Store(store)


def test_garbage_meta_json_is_not_a_store(store):
    (store / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a complete xecg store"):
        Store(store)


# ------------------------------------------------------------------------ failed writes

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_store_that_cannot_be_written_for_a_full_disk_leaves_nothing(tmp_path):
    """A real write failure: the process may write files of at most 1 MB (RLIMIT_FSIZE; Python
    ignores SIGXFSZ, so the write fails with EFBIG as on a full disk)."""
    out = tmp_path / "store"
    limit = 1 << 20

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([*xecg_command(), "prepare", "synthetic", "--n", "30", "--out",
                             str(out)], env=xecg_env(), capture_output=True, text=True,
                            preexec_fn=small_files, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert line == f"xecg: error: could not write {out}: File too large; no store was written"
    assert "Traceback" not in result.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_a_killed_prepare_leaves_no_temporary_folder_behind_the_next(tmp_path, capsys):
    """SIGKILL mid-write leaves the half-written temporary folder (it can hold most of a 3 GB
    store); the next writer of that store removes it and says so. Folders of a live writer, of
    another host or without a writer file are not touched."""
    out = tmp_path / "store"
    proc = subprocess.Popen([*xecg_command(), "prepare", "synthetic", "--n", "3000", "--out",
                             str(out)], env=xecg_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 0 for p in tmp_path.glob(".store.tmp-*/signals.f32")):
        assert proc.poll() is None and time.monotonic() < deadline, "no write to interrupt"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (killed,) = tmp_path.glob(".store.tmp-*")
    live = tmp_path / ".store.tmp-live"
    live.mkdir()
    (live / WRITER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    remote = tmp_path / ".store.tmp-remote"
    remote.mkdir()
    (remote / WRITER).write_text(json.dumps({"host": "another-host", "pid": 1}))
    (tmp_path / ".store.tmp-unknown").mkdir()

    assert main(["prepare", "synthetic", "--n", "20", "--out", str(out)]) == 0
    assert len(Store(out).verify()) == 20  # verify: the full checksum
    assert f"removed {killed}: left by an interrupted writer (process {proc.pid} is gone)" in (
        capsys.readouterr().err)
    assert _leftovers(tmp_path) == [".store.tmp-live", ".store.tmp-remote", ".store.tmp-unknown"]


# A `prepare` killed (SIGKILL) inside the swap that puts a rewritten store in place.
_KILLED_SWAP = """
import os, shutil, signal, sys
from pathlib import Path

out, where = Path(sys.argv[1]), sys.argv[2]
real_replace, real_rmtree = os.replace, shutil.rmtree


def replace(a, b):
    if where == "between the renames" and Path(b) == out:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(a, b)


def rmtree(path, *args, **kwargs):
    if where == "while removing the old store" and Path(path).name.startswith(f".{out.name}.old-"):
        (Path(path) / "signals.f32").unlink()  # removed in part, as a kill leaves it
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rmtree(path, *args, **kwargs)


os.replace, shutil.rmtree = replace, rmtree
from xecg.cli import main

main(["prepare", "synthetic", "--n", "20", "--out", str(out), "--force"])
"""


@pytest.mark.parametrize("where", ["while removing the old store", "between the renames"])
def test_a_prepare_killed_while_swapping_stores_loses_neither_store_nor_disk(
        tmp_path, capsys, where):
    """Killed while removing the replaced store (which can take a while: 3 GB), the new store is
    in place and the old one's remains are removed by the next writer. Killed between the two
    renames, there is no store at all: the next writer puts the old one back (it passed the
    full check) and reuses it, and removes the new one's temporary folder."""
    out = tmp_path / "store"
    assert main(["prepare", "synthetic", "--n", "20", "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "signals.f32").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SWAP, str(out), where],
                            env=xecg_env(), stderr=subprocess.PIPE, text=True)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == -9, stderr[-2000:]
    (old,) = tmp_path.glob(".store.old-*")
    assert old.name.endswith(f"-{proc.pid}") and socket.gethostname() in old.name
    assert out.exists() == (where == "while removing the old store")

    assert main(["prepare", "synthetic", "--n", "20", "--out", str(out)]) == 0
    err = capsys.readouterr()
    if where == "while removing the old store":
        assert f"removed {old}: the copy of {out} that process {proc.pid} replaced" in err.err
    if where == "between the renames":
        assert f"restored {out} from {old}: process {proc.pid} was stopped" in err.err
        assert "reusing it" in err.out  # put back whole: not written again
        assert "left by an interrupted writer" in err.err  # the new store's folder
    assert _leftovers(tmp_path) == []
    assert len(Store(out).verify()) == 20 and not (out / WRITER).exists()
    assert (out / "signals.f32").read_bytes() == before  # same options, same records


def test_a_store_under_a_file_is_one_line_and_nothing(tmp_path, capsys):
    src = _source(tmp_path / "src")
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "store"
    assert main(["prepare", str(src), "--out", str(out), "--workers", "1"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"xecg: error: could not write {out}: ")
    assert line.endswith("; no store was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "src"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_store_in_a_read_only_folder_is_one_line_and_nothing(tmp_path, capsys):
    src = _source(tmp_path / "src")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    try:
        assert main(["prepare", str(src), "--out", str(folder / "store"), "--workers", "1"]) == 2
        assert "Permission denied" in capsys.readouterr().err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_failed_final_rename_keeps_the_previous_store(tmp_path, monkeypatch, capsys):
    """ENOSPC at the rename that puts a rebuilt store in place: the old store is put back."""
    src, out = _source(tmp_path / "src"), tmp_path / "store"
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = os.replace

    def full_disk(a, b):
        if Path(b) == out and Path(a).name.startswith(".store.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(a, b)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(WriteError, match=f"could not write {out}: No space left on device; no "
                                         "store was written"):
        prepare_dataset(src, out, workers=1, force=True, progress=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []
    Store(out).verify()


# ---------------------------------------------------------------------- path-like record ids

@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "a\\b", "", "tab\there"])
def test_the_writer_refuses_ids_that_could_name_a_path(tmp_path, bad):
    record = Record(id=bad, signal=make_signal(300), fs=500.0, labels=np.zeros(9, np.float32))
    with pytest.raises(StoreError, match="record id|empty record id"):
        with StoreWriter(tmp_path / "store", fs=500) as writer:
            writer.add(record)
    assert list(tmp_path.iterdir()) == []


def test_prepare_skips_a_record_whose_id_is_a_path(tmp_path, monkeypatch, capsys):
    src, out = _source(tmp_path / "src"), tmp_path / "store"
    load = WFDBReader.load_record

    def hostile(self, rec, *args, **kwargs):
        record = load(self, rec, *args, **kwargs)
        return Record(**{**record.__dict__, "id": "../../escape"}) if rec == "A0002" else record

    monkeypatch.setattr(WFDBReader, "load_record", hostile)
    assert prepare_dataset(src, out, workers=1, progress=False) == 0
    assert Store(out).ids == ["A0001", "A0003", "A0004"]
    assert "holds a path separator" in (out / "skipped.csv").read_text()
    assert "escape" not in " ".join(p.name for p in tmp_path.rglob("*"))


def test_a_store_naming_a_path_does_not_open(store):
    _set_meta(store, integrity=None)  # else the checksum of records.csv stops it first
    rows = (store / "records.csv").read_text().splitlines()
    rows[1] = "../../escape," + rows[1].split(",", 1)[1]
    (store / "records.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(XECGError, match="record id '../../escape' holds a path separator"):
        Store(store)


def test_a_store_cut_short_during_training_stops_with_its_name_not_sigbus(store, tmp_path):
    """A copy over a store that a run is reading truncates the mapped file in place; reading a
    lost page would kill the process with SIGBUS (with loader threads: the training itself, with
    no word of why). The loader checks the mapped size before each batch and raises a
    StoreError naming the file. In a subprocess, where SIGBUS would show as the exit status.
    (The check narrows the window, no more: a truncation while a batch is being read still ends
    in SIGBUS, so the test truncates once the thread has built the batches it prefetches.)"""
    script = (
        "import os, sys, time\n"
        "from xecg.data.datamodule import CPSCDataModule\n"
        f"dm = CPSCDataModule({str(store)!r}, policy='pad', length=4000, batch_size=1,\n"
        "                     num_workers=1, worker_kind='thread')\n"
        "dm.setup()\n"
        "batches = iter(dm.train_dataloader())\n"
        "next(batches)\n"
        "time.sleep(1)\n"
        f"os.truncate({str(store / 'signals.f32')!r}, 0)\n"
        "for b in batches:\n"
        "    float(b['x'].sum())\n"
        "print('read every batch')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=xecg_env(), timeout=120, cwd=tmp_path)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # not -SIGBUS
    assert "StoreError" in done.stderr and "signals.f32 was truncated while it was being read" \
        in done.stderr and str(store) in done.stderr
    assert "read every batch" not in done.stdout
