"""``xecg explain``: maps of hand-built and real networks, the 12-lead page, the command (pages
and --evaluate) in a subprocess, its refusals, and the end-of-training scores."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import (
    ROOT,
    give_records_the_id,
    make_signal,
    write_wfdb_record,
    xecg_command,
    xecg_env,
)
from torch import nn

from xecg.classes import CLASSES, NUM_CLASSES
from xecg.cli import main
from xecg.explain.maps import GRADCAM_STRIDE, MapUnavailable, explain, randomised_copy
from xecg.explain.scores import evidence_mask, rma
from xecg.models import CNNBaseline, XECGNet, XECGNetOutput
from xecg.module import XECGModule

PNG = b"\x89PNG\r\n\x1a\n"
PAGE_PX = (1169, 827)  # A4 landscape at 100 dpi


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return struct.unpack(">II", data[16:24])


def save_module(module: XECGModule, path: Path) -> Path:
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


# ------------------------------------------------------------------ a hand-built network
class _Gate(nn.Module):
    """``B x 12 x N`` -> ``B x 2 x N // 81``: the lead mean pooled over 81 samples, inside the
    window (channel 0) and outside it (channel 1)."""

    def __init__(self, inside: torch.Tensor):
        super().__init__()
        self.register_buffer("inside", inside)

    def forward(self, x):
        pooled = nn.functional.avg_pool1d(x.mean(1, keepdim=True), GRADCAM_STRIDE)
        return torch.cat([pooled * self.inside, pooled * (1 - self.inside)], 1)


class WindowNet(nn.Module):
    """Class ``target``'s logit is the sum of the signal inside one window; nothing else counts.
    Shaped like the registered models for Grad-CAM (``features.blocks[-1][-1]``)."""

    def __init__(self, n: int, window: tuple[int, int], target: int = 5):
        super().__init__()
        inside = torch.zeros(n // GRADCAM_STRIDE)
        inside[window[0] // GRADCAM_STRIDE:window[1] // GRADCAM_STRIDE] = 1.0
        self.features = nn.Module()
        self.features.blocks = nn.ModuleList([nn.ModuleList([_Gate(inside)])])
        self.target = target
        self.in_leads = 12

    def forward(self, x, mask=None):
        h = self.features.blocks[-1][-1](x)
        logits = torch.zeros(x.shape[0], NUM_CLASSES, dtype=x.dtype, device=x.device)
        logits = logits.index_add(1, torch.tensor([self.target]), h[:, :1].sum(-1) * 0.05)
        return XECGNetOutput(perception_logits=logits, probs=torch.sigmoid(logits),
                             mask=torch.ones(x.shape[0], h.shape[-1], dtype=torch.bool))


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_gradient_maps_point_into_the_window_the_output_depends_on(method):
    n = GRADCAM_STRIDE * 40
    window = (GRADCAM_STRIDE * 22, GRADCAM_STRIDE * 26)
    net = WindowNet(n, window)
    x = 1.0 + torch.rand(1, 12, n, generator=torch.Generator().manual_seed(0))
    ex = explain(net, x, method, [5], ig_steps=16)
    values = ex.classes[5]
    assert values.shape == (n,) and (values >= 0).all()
    assert window[0] <= int(np.argmax(values)) < window[1]
    assert rma(values, evidence_mask([window], n)) > 0.99


# ------------------------------------------------------------------ real networks
@pytest.fixture(scope="module")
def xecg_module() -> XECGModule:
    torch.manual_seed(0)
    module = XECGModule(XECGNet(width=0.125))
    gen = torch.Generator().manual_seed(1)
    for layer in module.modules():  # random BatchNorm statistics: outputs depend on the input
        if isinstance(layer, nn.BatchNorm1d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=gen) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=gen) + 0.5)
    module.eval_windows = {"policy": "crop", "length": 1215, "bucket_multiple": 243}
    return module.eval()


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    module = XECGModule(CNNBaseline(width=0.125))
    module.eval_windows = {"policy": "crop", "length": 1215, "bucket_multiple": 243}
    return save_module(module, tmp_path_factory.mktemp("cnn") / "cnn.ckpt")


def test_every_method_gives_one_value_per_sample(xecg_module):
    n = 2000
    x = torch.as_tensor(make_signal(n, seed=2)).unsqueeze(0)
    att = explain(xecg_module.net, x, "attention", [0, 6])
    assert att.shared.shape == (n,) and set(att.classes) == {0, 6}
    assert ((att.shared > 0) & (att.shared < 1)).all()
    # The tail beyond 8 x 243 samples takes the last pooled value.
    assert (att.shared[8 * 243:] == att.shared[8 * 243 - 1]).all()
    for method in ("cam", "gradcam", "ig"):
        ex = explain(xecg_module.net, x, method, [0, 6], ig_steps=4)
        assert ex.shared is None and set(ex.classes) == {0, 6}, method
        for values in ex.classes.values():
            assert values.shape == (n,) and np.isfinite(values).all() and (values >= 0).all()
    np.testing.assert_allclose(att.probs, xecg_module.net(x).probs[0].detach().numpy(),
                               rtol=1e-5)


def test_a_model_without_attention_names_the_method_and_itself():
    net = CNNBaseline(width=0.125).eval()
    x = torch.zeros(1, 12, 972)
    for method in ("attention", "cam"):
        with pytest.raises(MapUnavailable, match=f"{method}.*CNNBaseline"):
            explain(net, x, method, [0])
    assert explain(net, x, "gradcam", [0]).classes[0].shape == (972,)


def test_the_randomised_copy_is_the_same_architecture_with_new_weights(xecg_module):
    state = torch.random.get_rng_state()
    fresh = randomised_copy(xecg_module.net, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert type(fresh) is XECGNet and fresh.hparams == xecg_module.net.hparams
    a, b = xecg_module.net.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a["features.blocks.0.0.conv.weight"],
                           b["features.blocks.0.0.conv.weight"])
    again = randomised_copy(xecg_module.net, seed=3)
    assert torch.equal(again.state_dict()["attention_branch.response.weight"],
                       b["attention_branch.response.weight"])


def test_the_page_has_twelve_leads_a_rhythm_strip_and_one_strip_per_label(xecg_module,
                                                                           tiny_data, tmp_path):
    from xecg.callbacks import render_attention
    from xecg.data.store import Store
    from xecg.plots import ECG_DPI, save_figure

    store = Store(tiny_data.store)
    i = next(i for i in range(len(store)) if store.labels[i].sum() >= 2)
    rec = store.record(i)
    out = xecg_module.predict_record(rec.signal)
    predicted = {c for c, on in zip(CLASSES, out["labels"].tolist()) if on}
    shown = predicted | set(rec.label_names)
    for method in ("attention", "gradcam"):
        fig, caption = render_attention(xecg_module, rec.signal, rec.fs, rec.id,
                                        rec.label_names, rec.evidence, out=out, method=method)
        assert len(fig.axes) == 12 + 1 + len(shown)
        assert tuple(np.round(fig.get_size_inches() * fig.dpi)) == PAGE_PX
        titles = " ".join(t.get_text() for t in fig.texts)
        assert "predicted:" in titles and "true:" in titles and "shaded:" in titles
        leads = {t.get_text() for ax in fig.axes[:13] for t in ax.texts}
        assert {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V6"} <= leads
        assert "true:" in caption
        path = tmp_path / f"{method}.png"
        save_figure(fig, path, dpi=ECG_DPI)
        assert png_size(path) == PAGE_PX


# ------------------------------------------------------------------ the command
def run_xecg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*xecg_command(), "explain", *map(str, args)], capture_output=True,
                          text=True, env=xecg_env(), cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tiny_config, tiny_data, tmp_path_factory) -> Path:
    """One short fit with the end-of-training explanation scores (W&B off)."""
    folder = tmp_path_factory.mktemp("explain-run")
    callback = {"class_path": "xecg.explain.callback.ExplanationScores",
                "init_args": {"max_records": 6}}
    config = tiny_config(folder, "expl", experiment={"wandb": False},
                         trainer={"limit_train_batches": 2, "limit_val_batches": 2,
                                  "callbacks": [callback]})
    assert main(["fit", "--config", str(config)]) == 0
    return folder / "runs" / "expl"


def test_end_of_training_scores_go_into_metrics_json(trained_run, tiny_data, tiny_config):
    from xecg.data.splits import load_split
    from xecg.data.store import Store

    val = json.loads((trained_run / "metrics.json").read_text())["val"]
    assert "micro_f1" in val  # MetricsReport's section, extended, not replaced
    for key in ("expl_rma_attention", "expl_rra_attention", "expl_pointing_attention",
                "expl_rma_adj_attention", "expl_aopc_attention", "expl_rma_cam",
                "expl_rma_gradcam", "expl_rma_union_gradcam"):
        assert key in val and np.isfinite(val[key]), key
    for key in ("expl_rma_attention", "expl_rra_cam", "expl_pointing_gradcam"):
        assert 0.0 <= val[key] <= 1.0
    store = Store(tiny_data.store)
    first = store.indices(load_split(tiny_data.split)["val"])[:6]
    if (store.labels[first].sum(1) >= 2).any():
        assert 0.0 <= val["expl_coverage"] <= 1.0

    # A separate validation (as `xecg train` runs on the best checkpoint) scores again, and
    # its keys survive MetricsReport rewriting the section.
    config = trained_run.parent.parent / "expl.yaml"
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    (trained_run / "metrics.json").unlink()
    assert main(["validate", "--config", str(config), "--ckpt_path", str(ckpt)]) == 0
    val = json.loads((trained_run / "metrics.json").read_text())["val"]
    assert "micro_f1" in val and "expl_rma_attention" in val


def test_explain_writes_a_page_per_record_and_method(trained_run, tmp_path):
    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    write_wfdb_record(src, "X0002", make_signal(7000, seed=2), ["PVC", "RBBB"])
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "pages"
    done = run_xecg("--ckpt", ckpt, src, "--out", out, "--method", "attention", "gradcam",
                    "--window", "3")
    assert done.returncode == 0, done.stderr
    pages = sorted(p.name for p in out.glob("*.png"))
    assert pages == ["X0001_attention.png", "X0001_gradcam.png", "X0002_attention.png",
                     "X0002_gradcam.png"]
    assert all(png_size(out / p) == PAGE_PX for p in pages)


def test_explain_limit_leaves_the_rest_of_the_folder_unread(trained_run, tmp_path, capsys):
    """`--limit 1`: the first record's pages; the folder's other inputs (here a .mat without
    its header) are not reported as skipped by a run that did not look at them."""
    from xecg.explain.cli import explain_records

    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    write_wfdb_record(src, "X0002", make_signal(3000, seed=2), ["PVC"])
    (src / "X0002.hea").unlink()
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    pages = explain_records(ckpt, src, tmp_path / "one", methods=["attention"], limit=1)
    assert [p.name for p in pages] == ["X0001_attention.png"]
    assert "1 pages written, records 0 skipped" in capsys.readouterr().out
    assert not (tmp_path / "one" / "skipped.csv").exists()
    explain_records(ckpt, src, tmp_path / "all", methods=["attention"])
    assert "1 pages written, records 1 skipped" in capsys.readouterr().out


def test_explain_evaluate_writes_scores_with_the_randomised_check(trained_run, tiny_data,
                                                                   tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "scores"
    done = run_xecg("--ckpt", ckpt, "--evaluate", tiny_data.store, "--out", out, "--limit", 5,
                    "--method", "attention", "cam", "gradcam", "ig", "--ig-steps", 4,
                    "--bootstrap", 100)
    assert done.returncode == 0, done.stderr
    with open(out / "scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    with open(out / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert {r["model"] for r in scores} == {"trained", "randomised"}
    assert {r["method"] for r in scores} == {"attention", "cam", "gradcam", "ig"}
    assert len({r["record"] for r in scores}) == 5
    for r in scores:
        value = float(r["value"])
        if r["metric"] == "aopc":
            assert -1.0 <= value <= 1.0
        else:
            assert 0.0 <= value <= 1.0, r
        if r["chance"]:
            assert 0.0 <= float(r["chance"]) <= 1.0 or r["metric"] == "aopc"
    overall = [r for r in summary if r["label"] in ("all", "union")]
    assert {r["model"] for r in overall} == {"trained", "randomised"}
    for r in overall:
        if r["metric"] in ("rma", "rra", "pointing"):
            assert 0.0 <= float(r["mean"]) <= 1.0 and 0.0 <= float(r["chance"]) <= 1.0
            assert float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"])
    text = (out / "summary.md").read_text()
    assert "## trained model" in text and "## randomised model" in text


def test_evaluate_refuses_a_store_without_evidence(trained_run, tmp_path, capsys):
    from xecg.classes import multi_hot
    from xecg.data.record import Record
    from xecg.data.store import StoreWriter

    store = tmp_path / "plain"
    with StoreWriter(store, fs=500) as w:
        w.add(Record("R0001", make_signal(2000), 500.0, multi_hot(["AF"])))
    code = main(["explain", "--ckpt", str(trained_run / "checkpoints" / "last.ckpt"),
                 "--evaluate", str(store), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no evidence" in err and str(store) in err
    assert not (tmp_path / "out" / "scores.csv").exists()


def test_the_cnn_gets_gradcam_and_a_clear_refusal_for_attention(cnn_checkpoint, tmp_path,
                                                                  capsys):
    src = tmp_path / "src"
    write_wfdb_record(src, "C0001", make_signal(2500, seed=5), ["STD"])
    assert main(["explain", "--ckpt", str(cnn_checkpoint), str(src), "--out",
                 str(tmp_path / "ok")]) == 0
    assert png_size(tmp_path / "ok" / "C0001_gradcam.png") == PAGE_PX
    capsys.readouterr()
    assert main(["explain", "--ckpt", str(cnn_checkpoint), str(src), "--out",
                 str(tmp_path / "no"), "--method", "cam"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cam" in err and "CNNBaseline" in err


def test_explain_writes_nothing_outside_its_folder(cnn_checkpoint, tmp_path, monkeypatch):
    """A record id naming a path (see give_records_the_id): the pages stay inside --out."""
    from xecg.data.synthetic import make_synthetic_store

    store = make_synthetic_store(tmp_path / "in" / "store", n=1, seed=1, durations=(6, 7),
                                 progress=False)
    give_records_the_id(monkeypatch, "../../escape")
    out = tmp_path / "in" / "out"
    before = set(tmp_path.rglob("*"))
    assert main(["explain", "--ckpt", str(cnn_checkpoint), str(store), "--out", str(out)]) == 0
    new = set(tmp_path.rglob("*")) - before
    assert new and all(p == out or out in p.parents for p in new), new
    assert png_size(out / ".._.._escape_gradcam.png") == PAGE_PX
    assert not [p for p in tmp_path.rglob("escape*")]


def test_train_scores_the_explanations_once_for_the_best_checkpoint(tiny_config, tmp_path,
                                                                     monkeypatch):
    """``xecg train`` validates the best checkpoint after the fit: the scores are computed
    there, once (not also at the end of the fit), and land in metrics.json's ``val``."""
    import xecg.explain.evaluate

    calls = []

    def fake_scores(module, store, indices, *args, **kwargs):
        calls.append(len(indices))
        return {"expl_rma_attention": 0.5}

    monkeypatch.setattr(xecg.explain.evaluate, "evaluate_maps", fake_scores)
    config = tiny_config(tmp_path, "once", experiment={"wandb": False},
                         attention={"num_records": 0}, explanations={"max_records": 3},
                         trainer={"limit_train_batches": 1, "limit_val_batches": 1,
                                  "limit_test_batches": 1})
    assert main(["train", "--config", str(config)]) == 0
    assert calls == [3]
    val = json.loads((tmp_path / "runs" / "once" / "metrics.json").read_text())["val"]
    assert "micro_f1" in val and val["expl_rma_attention"] == 0.5


# ------------------------------------------------------------------ QA defects of the command
@pytest.fixture(scope="module")
def xecg_checkpoint(xecg_module, tmp_path_factory) -> Path:
    """The untrained xECGNet of ``xecg_module`` as a checkpoint: no fit needed."""
    import copy

    # A copy: the trainer that saves it is not left attached to the shared module.
    return save_module(copy.deepcopy(xecg_module), tmp_path_factory.mktemp("xecg") / "xecg.ckpt")


def test_each_trace_stays_in_its_row():
    """A 6 mV artefact in II, III, aVR and aVF (as in the real A0040) is clipped to each
    lead's own panel, as on a printout: nothing changes outside those panels (the title, the
    other leads), and the 10 mm/mV scale stays (3 mV rows of 30 mm). It used to run over
    the title, the neighbouring rows and the rhythm strip."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from xecg.classes import LEADS
    from xecg.plots import MM_PER_MV, PAGE_MM, ROW_MV, plot_ecg

    def pixels(signal):
        fig = plot_ecg(signal, 500.0, title=["a title", "line two", "line three"])
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return fig, np.asarray(canvas.buffer_rgba())[..., :3].astype(int)

    calm = np.zeros((12, 5000), np.float32)
    spiky = calm.copy()
    hit = ["II", "III", "aVR", "aVF"]
    for lead in hit:  # a brief swing of +-6 mV in the middle of each 2.5 s column
        for start in (500, 1750, 3000, 4250):
            spiky[LEADS.index(lead), start:start + 60] = np.linspace(6.0, -6.0, 60)
    fig, before = pixels(calm)
    _, after = pixels(spiky)
    changed = np.any(before != after, axis=-1)
    assert changed.any()
    # The panels that show those leads: II, III and aVR/aVF in their columns, and the II strip.
    panels = {(0, 1), (1, 0), (2, 0), (2, 1), (3, 0)}  # (row, column) of LAYOUT + rhythm
    allowed = np.zeros_like(changed)
    height = changed.shape[0]
    k = 0
    for row, names in enumerate((("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"),
                                 ("III", "aVF", "V3", "V6"), ("II",))):
        for col in range(len(names)):
            ax = fig.axes[k]
            k += 1
            assert ax.get_ylim()[1] - ax.get_ylim()[0] == ROW_MV  # 30 mm for 3 mV
            box = ax.get_position()
            assert box.height * PAGE_MM[1] == pytest.approx(ROW_MV * MM_PER_MV)
            if (row, col) in panels:
                x0, x1 = int(box.x0 * changed.shape[1]), int(np.ceil(box.x1 * changed.shape[1]))
                y0 = int(height - np.ceil(box.y1 * height))
                y1 = int(height - box.y0 * height)
                allowed[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = True
    assert not (changed & ~allowed).any(), np.argwhere(changed & ~allowed)[:5]


def test_explain_replaces_what_an_earlier_run_wrote_in_its_folder(xecg_checkpoint, tmp_path):
    """An output folder used again holds this run's pages only: the earlier run's pages
    (and skipped.csv) are removed, and said so; the user's own files stay. The old pages used
    to stay beside the new ones."""
    src = tmp_path / "src"
    for i in range(3):
        write_wfdb_record(src, f"X000{i}", make_signal(3000, seed=i), ["AF"])
    bad = tmp_path / "bad"
    write_wfdb_record(bad, "B0001", make_signal(3000, seed=9), ["AF"], checksums=[7] * 12)
    out = tmp_path / "out"
    done = run_xecg("--ckpt", xecg_checkpoint, src, "--out", out)
    assert done.returncode == 0, done.stderr
    (out / "mine_attention.png").write_bytes(PNG + b"the user's own picture")
    (out / "notes.txt").write_text("mine")
    done = run_xecg("--ckpt", xecg_checkpoint, src / "X0001.hea", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "removed what an earlier `xecg explain` wrote there (3 pages)" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["X0001_attention.png",
                                                     "mine_attention.png", "notes.txt"]

    # Every record skipped: exit 2, one line naming the file, skipped.csv written.
    done = run_xecg("--ckpt", xecg_checkpoint, bad, "--out", out)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith(f"xecg: error: {bad / 'B0001.hea'}: ") and "checksum" in err
    assert "no record was explained" in err and "Traceback" not in done.stderr
    assert not list(out.glob("X*.png"))
    assert (out / "skipped.csv").read_text().startswith("file,reason")
    done = run_xecg("--ckpt", xecg_checkpoint, src / "X0002.hea", "--out", out)
    assert done.returncode == 0, done.stderr
    assert not (out / "skipped.csv").exists()  # no stale list beside "0 skipped"
    assert "records 0 skipped" in done.stdout


def test_explain_refuses_bad_numbers_before_any_work(xecg_checkpoint, tiny_data, tmp_path):
    """--ig-steps below 1 (a captum traceback, or 0 steps accepted), --window negative or NaN
    (silently clamped) and --limit 0 with --evaluate (an empty summary, exit 0): each is
    refused at argument parsing, exit 2. A window past the record is shown clamped, and
    the console says so."""
    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])  # 6 s
    for args, name in ((("--method", "ig", "--ig-steps", "-5"), "--ig-steps"),
                       (("--method", "ig", "--ig-steps", "0"), "--ig-steps"),
                       (("--window", "nan"), "--window"), (("--window", "-2"), "--window")):
        done = run_xecg("--ckpt", xecg_checkpoint, src, "--out", tmp_path / "o", *args)
        assert done.returncode == 2, (args, done.stderr[-500:])
        assert f"argument {name}: must be" in done.stderr and "Traceback" not in done.stderr
    done = run_xecg("--ckpt", xecg_checkpoint, "--evaluate", tiny_data.store, "--out",
                    tmp_path / "s", "--limit", "0")
    assert done.returncode == 2 and "argument --limit: must be at least 1" in done.stderr
    assert not (tmp_path / "s").exists()
    done = run_xecg("--ckpt", xecg_checkpoint, src, "--out", tmp_path / "o", "--window", "30")
    assert done.returncode == 0, done.stderr
    assert "X0001: --window 30 s lies past its last 10 s (6.0 s record); shown from 0.0 s" \
        in done.stdout


def test_explain_evaluate_on_a_dataset_folder_says_to_prepare_it(xecg_checkpoint, tmp_path):
    """A raw dataset folder given to --evaluate: how to make a store, and no advice to delete
    the folder (the user's data); a store left half-written may still be deleted."""
    src = tmp_path / "raw"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    done = run_xecg("--ckpt", xecg_checkpoint, "--evaluate", src, "--out", tmp_path / "o")
    assert done.returncode == 2
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"xecg: error: {src}: a dataset folder")
    assert "xecg prepare" in err and "delete" not in err
    assert sorted(p.name for p in src.iterdir()) == ["X0001.hea", "X0001.mat"]


def test_explain_checks_the_device_before_the_checkpoint(xecg_checkpoint, tmp_path):
    """--device cuda without a GPU, or a name torch does not know, is said of the device; it
    used to be blamed on the checkpoint ("does not fit this xecg's model")."""
    src = tmp_path / "src"
    write_wfdb_record(src, "X0001", make_signal(3000, seed=1), ["AF"])
    devices = ["gpu0"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        done = run_xecg("--ckpt", xecg_checkpoint, src, "--out", tmp_path / "o", "--device",
                        device)
        assert done.returncode == 2
        err = done.stderr.strip()
        assert err.startswith(f"xecg: error: --device {device}: "), err
        assert str(xecg_checkpoint) not in err
    if "cuda" in devices:
        assert "no CUDA GPU is available here" in err


@pytest.mark.parametrize("flat", [True, False])
def test_a_nearly_flat_attention_map_stays_pale(xecg_module, tiny_data, flat):
    """A (a sigmoid in [0, 1]) is shaded over its own range, but never one narrower than 0.1:
    a flat map (0.49-0.51) was shaded light to dark over 0.02 and looked decisive. The page's
    title says which range it shades over. A forward hook sets the attention logits: 0.01
    times the network's makes A nearly flat, a ramp from -3 to 3 spreads it over most of
    [0, 1]."""
    from xecg.callbacks import render_attention
    from xecg.data.store import Store
    from xecg.explain.figure import MIN_SPAN

    rec = Store(tiny_data.store).record(0)
    def logits(module, args, out):
        return out * 0.01 if flat else torch.linspace(-3, 3, out.shape[-1]).expand_as(out)

    hook = xecg_module.net.attention_branch.attention.register_forward_hook(logits)
    try:
        a = xecg_module.predict_record(rec.signal)["attention"]
        fig, _ = render_attention(xecg_module, rec.signal, rec.fs, rec.id, rec.label_names,
                                  method="attention")
    finally:
        hook.remove()
    lo, hi = float(a.min()), float(a.max())
    titles = " ".join(t.get_text() for t in fig.texts)
    darkest = max(float(np.max(im.get_array())) for ax in fig.axes[:13] for im in ax.images)
    if flat:
        assert hi - lo < MIN_SPAN
        assert f"(its range {lo:.2f}-{hi:.2f}: nearly flat)" in titles
        assert darkest <= (hi - lo) / MIN_SPAN + 1e-3 < 0.5
    else:
        assert hi - lo >= MIN_SPAN and f"over its range {lo:.2f}-{hi:.2f}" in titles
        assert darkest == pytest.approx(1.0, abs=1e-3)
