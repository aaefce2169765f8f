"""Security: checkpoints are loaded with ``weights_only=True`` (a checkpoint that would run code
is refused with one line, and runs nothing), configs are parsed as safe YAML, secrets (the W&B
API key, passwords in URLs, secret-named arguments) never reach config.yaml, the W&B run or the
output, and record ids never make xecg write outside its output folder."""

from __future__ import annotations

import os
import pickletools
import re
import zipfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from fixtures import ROOT, give_records_the_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_store import error_lines
from test_training import wandb_records

from xecg.cli import main
from xecg.data.datamodule import CPSCDataModule, SyntheticOptions
from xecg.data.synthetic import make_synthetic_store
from xecg.guards import SAFE_GLOBALS, CheckpointError, load_module
from xecg.models import XECGNet
from xecg.module import XECGModule
from xecg.predict import output_name
from xecg.redact import mask_url, redact


@pytest.fixture(scope="module")
def checkpoint(tiny_config, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("secure")
    config = tiny_config(folder, "secure", trainer={"limit_train_batches": 2,
                                                    "limit_val_batches": 1})
    assert main(["fit", "--config", str(config), "--experiment.wandb", "false"]) == 0
    return folder / "runs" / "secure" / "checkpoints" / "last.ckpt"


def pickled_globals(path: Path) -> set[str]:
    """``module.name`` of every global a torch checkpoint's pickle refers to."""
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith("data.pkl")]
        data = z.read(name)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(f"{strings[-2]}.{strings[-1]}")
    return found


def _qualname(t) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def test_our_checkpoints_hold_tensors_and_plain_data_only(checkpoint):
    names = pickled_globals(checkpoint)
    assert names and all(n.startswith("torch.") or n == "collections.OrderedDict"
                         for n in names), names
    torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert isinstance(load_module(checkpoint), XECGModule)


def test_a_hand_made_run_needs_only_the_listed_safe_globals(tmp_path):
    """A DataModule built in Python keeps SyntheticOptions, and numpy numbers may reach the
    hyperparameters: both are in SAFE_GLOBALS, nothing else is needed."""
    dm = CPSCDataModule(str(tmp_path / "store"), source="synthetic", split=None,
                        synthetic=SyntheticOptions(n=12, durations=(6.0, 8.0)),
                        protocol="kfold", folds=4, length=972, batch_size=4, num_workers=0)
    module = XECGModule(XECGNet(width=0.125), lr=np.float64(1e-3))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1,
                        limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "hand.ckpt")
    torch_defaults = {"collections.OrderedDict", "_codecs.encode"}  # allowed by torch itself
    extra = {n for n in pickled_globals(tmp_path / "hand.ckpt")
             if not n.startswith("torch.") and n not in torch_defaults}
    assert "xecg.data.datamodule.SyntheticOptions" in extra
    assert extra <= {_qualname(t) for t in SAFE_GLOBALS} | {"numpy._core.multiarray.scalar",
                                                             "numpy.core.multiarray.scalar"}
    restored = load_module(tmp_path / "hand.ckpt")
    assert restored.hparams.lr == pytest.approx(1e-3)


class RunsCode:
    """Unpickling this calls ``open(path, "w")``: what a malicious checkpoint would do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def hostile(checkpoint, tmp_path) -> tuple[Path, Path]:
    """A checkpoint of ours with one object whose unpickling creates a file."""
    marker = tmp_path / "code-ran"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["xecg_note"] = RunsCode(marker)
    path = tmp_path / "hostile.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_predict_refuses_a_checkpoint_that_would_run_code(hostile, tiny_data, tmp_path, capsys):
    path, marker = hostile
    assert main(["predict", "--ckpt", str(path), str(tiny_data.store), "--out",
                 str(tmp_path / "out"), "--no-images"]) == 2
    out = capsys.readouterr().err
    assert (f"xecg: error: {path}: refused to load: it holds the global io.open, not only "
            "tensors and plain data") in out
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["fit", "test"])
def test_resuming_or_testing_refuses_it_too(hostile, tiny_config, tmp_path, capsys, command):
    path, marker = hostile
    config = tiny_config(tmp_path, "hostile")
    assert main([command, "--config", str(config), "--ckpt_path", str(path),
                 "--experiment.wandb", "false"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"xecg: error: {path}: refused to load: it holds the global io.open")
    assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line(checkpoint, tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(checkpoint.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match=r"cut.ckpt: not a complete checkpoint \(truncated"):
        load_module(cut)


def _damaged(checkpoint: Path, out: Path) -> Path:
    """``checkpoint`` with one byte of its pickle changed: the first letter of the key
    ``state_dict`` made a byte that starts no UTF-8 character (a bit flip on disk or in a copy;
    torch's zip reader does not check its checksums)."""
    data = checkpoint.read_bytes()
    at = data.index(b"state_dict")
    out.write_bytes(data[:at] + b"\x85" + data[at + 1:])
    return out


def test_a_damaged_checkpoint_is_one_line(checkpoint, tmp_path, capsys):
    """A changed byte inside the pickle made torch's unpickler raise UnicodeDecodeError (or
    IndexError, TypeError, ... for other bytes): a traceback from predict, test and resume."""
    bad = _damaged(checkpoint, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"bad.ckpt: damaged: torch cannot read what it "
                                              r"holds \(UnicodeDecodeError: "):
        load_module(bad)
    assert main(["test", "--config", str(checkpoint.parents[1] / "config.yaml"),
                 "--ckpt_path", str(bad), "--experiment.wandb", "false"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"xecg: error: {bad}: damaged: torch cannot read what it holds")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_damage_to_a_checkpoint_is_one_line(checkpoint, tmp_path, data):
    """Bytes changed (most often in the pickle, at the start of the archive) or the file cut:
    loading it works or raises CheckpointError, never another exception."""
    raw = bytearray(checkpoint.read_bytes())
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    else:
        span = data.draw(st.sampled_from([4096, len(raw)]))
        for at in data.draw(st.lists(st.integers(0, span - 1), min_size=1, max_size=6)):
            raw[at] = data.draw(st.integers(0, 255))
    bad = tmp_path / "mutated.ckpt"
    bad.write_bytes(bytes(raw))
    try:
        load_module(bad)
    except CheckpointError:
        pass


def test_a_file_that_is_no_checkpoint_is_named_so(tmp_path):
    """A config or a plain pickle given as --ckpt: not accused of holding Python objects."""
    text = tmp_path / "notes.md"
    text.write_text("# not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes.md: not a checkpoint \(torch.save writes"):
        load_module(text)


# ------------------------------------------------------------------------------- safe YAML

def test_configs_are_safe_yaml(tiny_config, tmp_path, capsys):
    marker = tmp_path / "yaml-ran"
    tag = f'!!python/object/apply:builtins.open ["{marker}", "w"]'
    base = tiny_config(tmp_path, "base")
    extends = tmp_path / "extends.yaml"
    extends.write_text(f"extends: base.yaml\nexperiment:\n  group: {tag}\n")
    assert main(["fit", "--config", str(extends)]) == 2  # xecg reads `extends` chains itself
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"xecg: error: {extends}: not valid YAML (could not determine a "
                           "constructor for the tag")
    plain = tmp_path / "plain.yaml"  # every config file goes through the same safe_load
    plain.write_text(base.read_text() + f"\nextra: {tag}\n")
    assert main(["fit", "--config", str(plain)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "plain.yaml: not valid YAML (could not determine a constructor" in line
    with pytest.raises(SystemExit) as caught:  # inline YAML: jsonargparse's SafeLoader
        main(["fit", "--config", str(base), "--config", f"{{experiment: {{group: {tag}}}}}"])
    assert caught.value.code == 2
    assert not marker.exists()


def test_no_unsafe_loader_in_the_code():
    """Every YAML load is safe and every torch.load says weights_only=True."""
    for path in (ROOT / "xecg").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b",
                             text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


# ---------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://user:pass@host/db", "postgresql://user:***@host/db"),
    ("mysql+pymysql://optuna:p%40ss:w0rd@db.example:3306/study?ssl=true",
     "mysql+pymysql://optuna:***@db.example:3306/study?ssl=true"),
    ("postgresql://host/db", "postgresql://host/db"),
    ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
    ("https://api.example/x?token=abc&page=2", "https://api.example/x?token=***&page=2"),
    ("storage postgresql://u:secret@h/db failed", "storage postgresql://u:***@h/db failed"),
])
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_redact_masks_secret_keys_and_url_passwords_anywhere():
    config = {"trainer": {"logger": {"init_args": {"api_key": "k-123", "save_dir": "runs"}}},
              "callbacks": [{"init_args": {"url": "redis://:hunter2@cache:6379/0",
                                           "password": "pw", "tokenizer": "bpe"}}],
              "lr": 0.003, "WANDB_API_KEY": "abc", "data": {"source": None}}
    out = redact(config)
    assert out["trainer"]["logger"]["init_args"] == {"api_key": "***", "save_dir": "runs"}
    assert out["callbacks"][0]["init_args"] == {"url": "redis://:***@cache:6379/0",
                                                "password": "***", "tokenizer": "bpe"}
    assert out["lr"] == 0.003 and out["WANDB_API_KEY"] == "***"
    assert out["data"] == {"source": None}
    assert config["callbacks"][0]["init_args"]["password"] == "pw"  # a copy


class Notify(L.Callback):
    """A user's callback that takes a database URL and a token (what it received is kept)."""

    seen: dict[str, str] = {}

    def __init__(self, url: str = "", api_token: str = ""):
        Notify.seen = {"url": url, "api_token": api_token}


def test_no_secret_reaches_the_run_folder_wandb_or_output(tiny_config, tmp_path, monkeypatch,
                                                          capfd):
    key, password, token = "wandb-key-0123456789abcdef", "db-pass-s3cr3t", "tok-9876543210"
    monkeypatch.setenv("WANDB_API_KEY", key)  # WANDB_MODE stays offline (conftest)
    config = tiny_config(tmp_path, "secrets", trainer={"limit_train_batches": 1,
                                                       "limit_val_batches": 1})
    url = f"postgresql://optuna:{password}@db.example/study"
    assert main(["fit", "--config", str(config),
                 "--trainer.callbacks+=test_reliability_security.Notify",
                 "--trainer.callbacks.url", url, "--trainer.callbacks.api_token", token]) == 0
    assert Notify.seen == {"url": url, "api_token": token}  # the run itself had them
    run = tmp_path / "runs" / "secrets"
    saved = (run / "config.yaml").read_text()
    assert "postgresql://optuna:***@db.example/study" in saved and "api_token: '***'" in saved
    # The W&B run (among the files searched below) logged the config, the password masked.
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(log)
    (info,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert "postgresql://optuna:***@db.example/study" in " ".join(
        item.value_json for item in info.config.update)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    # The log's records are read whole too: a secret split by a 32 KiB block header would
    # escape a search of the raw bytes.
    contents = {p: p.read_bytes() for p in files}
    contents[log] += b"".join(r.SerializeToString() for r in records)
    for secret in (key, password, token):
        leaks = [str(p) for p, data in contents.items() if secret.encode() in data]
        assert not leaks, f"{secret} written to {leaks}"
    printed = capfd.readouterr()
    assert not any(s in printed.out + printed.err for s in (key, password, token))


# ------------------------------------------------------------------------- record ids, paths

@pytest.mark.parametrize(("record_id", "name"), [
    ("A0001", "A0001.png"), ("../../escape", ".._.._escape.png"), ("..", "_...png"),
    ("a\\b/c", "a_b_c.png"), ("", "_.png"), ("x\ny", "x_y.png")])
def test_output_names_stay_in_the_folder(tmp_path, record_id, name):
    assert output_name(record_id, ".png") == name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_predict_writes_nothing_outside_its_folder(checkpoint, tmp_path, monkeypatch):
    """A reader that hands predict a record id naming a path (no xecg reader or store does:
    ids are file names, and stores refuse such ids)."""
    store = make_synthetic_store(tmp_path / "in" / "store", n=2, seed=1, durations=(6, 7),
                                 progress=False)
    give_records_the_id(monkeypatch, "../../escape")
    out = tmp_path / "in" / "out"
    before = {p for p in tmp_path.rglob("*")}
    assert main(["predict", "--ckpt", str(checkpoint), str(store), "--out", str(out)]) == 0
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p == out or out in p.parents for p in new), new
    assert (out / ".._.._escape.png").is_file()
    assert "../../escape" in (out / "predictions.csv").read_text()
    os.chdir(tmp_path)  # nothing named escape anywhere above the output folder
    assert not list(tmp_path.rglob("escape*"))
