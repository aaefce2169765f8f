"""XECGModule: steps for every model and length policy on real DataModule batches, per-record
evaluation of crop windows, gamma defaults, thresholds (tuned on validation, applied at test,
kept in checkpoints), lead statistics from the DataModule, and one-record prediction."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from xecg.classes import NUM_CLASSES, NUM_LEADS
from xecg.data.datamodule import CPSCDataModule
from xecg.data.windows import POLICIES
from xecg.losses import XECGLoss
from xecg.metrics import ECGMetrics, tune_thresholds
from xecg.models import DOWNSAMPLE, MODELS, CNNBaseline, XECGNet
from xecg.module import XECGModule

#: The experiments' variants: network and gamma (ABN is xECGNet with gamma 0).
VARIANTS = {"xecgnet": (XECGNet, 0.01), "abn": (XECGNet, 0.0), "cnn": (CNNBaseline, 0.01)}

# Steps are called here without a Trainer, so `self.log` has nowhere to go and says so.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def datamodule(tiny_data, policy: str = "crop", **kwargs) -> CPSCDataModule:
    dm = CPSCDataModule(str(tiny_data.store), split=str(tiny_data.split), policy=policy,
                        length=972, batch_size=4, num_workers=0, **kwargs)
    dm.setup("fit")
    return dm


def module(model: str = "xecgnet", seed: int = 0, gamma: float | None = None,
           **kwargs) -> XECGModule:
    torch.manual_seed(seed)
    net, default_gamma = VARIANTS[model]
    loss = XECGLoss(gamma=default_gamma if gamma is None else gamma)
    return XECGModule(net(width=0.125), loss, **kwargs)


@pytest.fixture(scope="module")
def batches(tiny_data) -> dict[str, tuple[dict, dict]]:
    """policy -> (a training batch, a validation batch) of 4 records each."""
    out = {}
    for policy in POLICIES:
        dm = datamodule(tiny_data, policy)
        out[policy] = (next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader())))
    return out


def per_record_mean(window_probs: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
    """Mean over each record's windows, written as a loop (independent of average_by_group)."""
    return torch.stack([window_probs[group == r].mean(0) for r in range(n)])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", VARIANTS)
def test_steps_give_finite_losses_and_one_metric_row_per_record(batches, model, policy):
    train_batch, val_batch = batches[policy]
    m = module(model)
    m.train()
    loss = m.training_step(train_batch, 0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    m.eval()
    with torch.no_grad():
        m.validation_step(val_batch, 0)
        window_probs = m(val_batch["x"], val_batch["mask"]).probs
    n = len(val_batch["index"])
    (probs, target), = m._rows["val"]  # the metrics see the epoch's rows at its end
    assert probs.shape == (n, NUM_CLASSES) and torch.equal(target, val_batch["y"])
    assert ((probs >= 0) & (probs <= 1)).all()
    if policy == "crop":  # several windows per record, averaged before the metrics see them
        assert window_probs.shape[0] > n
        expected = per_record_mean(window_probs, val_batch["group"], n)
    else:
        assert "group" not in val_batch
        expected = window_probs
    torch.testing.assert_close(probs, expected)


def test_a_repeated_training_batch_trains_but_is_not_counted(batches):
    """DDP pads a training epoch's batches to a multiple of the processes with repeats
    (``BatchPlanner``): such a batch still gives a gradient, as every process must step, but
    adds no metric row and no weight to the logged mean loss."""
    train_batch, _ = batches["crop"]
    m = module()
    m.train()
    m._logs_this_step = lambda: False  # keep the loss sums (without a Trainer, each step logs)
    m.training_step(train_batch, 0)
    loss = m.training_step({**train_batch, "repeat": True}, 1)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert [len(p) for p, _ in m._rows["train"]] == [len(train_batch["y"]), 0]
    assert m._loss_sums["train"][1] == len(train_batch["y"])  # records the mean is over
    m._loss_sums.pop("train")
    # an epoch of repeats alone (a process dealt fewer batches than another): no rows at all
    m._rows["train"] = m._rows["train"][1:]
    assert m._epoch_rows("train") is None


@pytest.mark.parametrize("name", list(MODELS))
def test_checkpoint_rebuilds_the_injected_network_and_loss(tmp_path, name):
    torch.manual_seed(0)
    m = XECGModule(MODELS[name](width=0.125, activation="none"),
                   XECGLoss(gamma=0.3, reference="all9"), lr=0.02, scheduler="cosine")
    trainer = L.Trainer(max_epochs=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = XECGModule.load_from_checkpoint(tmp_path / "m.ckpt", map_location="cpu")
    assert type(restored.net) is MODELS[name]
    assert restored.net.hparams["activation"] == "none"
    assert restored.criterion.gamma == 0.3 and restored.criterion.reference == "all9"
    assert restored.hparams.lr == 0.02 and restored.hparams.scheduler == "cosine"
    for key, value in m.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_module_defaults_to_the_papers_loss_and_refuses_unknown_choices():
    assert XECGModule(XECGNet(width=0.125)).criterion.gamma == pytest.approx(0.01)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        XECGModule(XECGNet(width=0.125), scheduler="linear")
    with pytest.raises(ValueError, match="compile_mode must be one of .*reduce-overhead"):
        XECGModule(XECGNet(width=0.125), compile=True, compile_mode="fast")


def test_cnn_has_no_attention_and_its_loss_no_regulariser(batches):
    batch = batches["pad"][0]
    terms = {}
    for model in ("cnn", "xecgnet"):
        m = module(model, gamma=10.0)
        out = m(batch["x"], batch["mask"])
        terms[model] = m.criterion(out, batch["y"])
        assert (out.attention is None) == (model == "cnn")
        assert (out.response_maps is None) == (model == "cnn")
    cnn, xecg = terms["cnn"], terms["xecgnet"]
    assert cnn.regularizer == 0 and cnn.bce_attention == 0
    torch.testing.assert_close(cnn.total, cnn.bce_perception)  # gamma 10 adds nothing
    assert xecg.regularizer > 0
    torch.testing.assert_close(
        xecg.total, xecg.bce_attention + xecg.bce_perception + 10.0 * xecg.regularizer)


def test_thresholds_are_applied_at_test_and_not_at_validation(batches):
    batch = batches["pad"][1]
    m = module(threshold=0.5).eval()
    m.thresholds.fill_(0.0)  # as if tuned: every label predicted present
    with torch.no_grad():
        probs = m(batch["x"], batch["mask"]).probs
        m.validation_step(batch, 0)
        m.test_step(batch, 0)
    y = batch["y"].bool()

    def micro_f1(pred: torch.Tensor) -> float:
        tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
        return float(2 * tp / (2 * tp + fp + fn))

    test, val = (m._epoch_end(stage, m._epoch_rows(stage))["micro_f1"] for stage in ("test", "val"))
    assert test.item() == pytest.approx(micro_f1(torch.ones_like(y)))
    assert val.item() == pytest.approx(micro_f1(probs >= 0.5))


def val_probs(m: XECGModule, dm: CPSCDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-record validation probabilities ``R x 9`` and targets of the model as it is."""
    m.eval()
    probs, target = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            p = m(batch["x"], batch["mask"]).probs
            n = len(batch["index"])
            probs.append(per_record_mean(p, batch["group"], n) if "group" in batch else p)
            target.append(batch["y"])
    return torch.cat(probs), torch.cat(target)


@pytest.mark.parametrize("tune", [False, True])
def test_fit_tunes_thresholds_on_validation_and_checkpoints_them(tiny_data, tmp_path, tune):
    dm = datamodule(tiny_data)
    m = module(tune_thresholds=tune, threshold=0.4, lr=3e-3)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(m, datamodule=dm)

    # Lead statistics of the training split, copied from the DataModule at fit.
    assert dm.mean is not None and dm.mean.std() > 0
    torch.testing.assert_close(m.lead_mean, torch.as_tensor(dm.mean))
    torch.testing.assert_close(m.lead_std, torch.as_tensor(dm.std))
    if tune:  # what the last validation epoch's model would tune on the validation split
        expected = tune_thresholds(*val_probs(m, dm))
        assert not torch.all(expected == 0.4)
    else:
        expected = torch.full((NUM_CLASSES,), 0.4)
    torch.testing.assert_close(m.thresholds, expected)

    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    for name in ("thresholds", "lead_mean", "lead_std"):
        torch.testing.assert_close(state[name], getattr(m, name))
    restored = XECGModule.load_from_checkpoint(path, map_location="cpu")
    torch.testing.assert_close(restored.thresholds, m.thresholds)
    torch.testing.assert_close(restored.lead_mean, m.lead_mean)


@pytest.mark.parametrize("model", ["xecgnet", "cnn"])
def test_predict_record_normalises_and_returns_maps(tiny_data, model):
    dm = datamodule(tiny_data)
    record = dm.store.record(int(dm.indices["test"][0]))
    n = record.signal.shape[1]
    m = module(model)
    m.lead_mean.copy_(torch.as_tensor(dm.mean))
    m.lead_std.copy_(torch.as_tensor(dm.std))
    m.thresholds.fill_(0.3)
    m.train()
    out = m.predict_record(record.signal)
    assert m.training  # the caller's mode is restored

    assert out["probs"].shape == (NUM_CLASSES,)
    assert torch.equal(out["labels"], out["probs"] >= 0.3)
    x = (torch.as_tensor(record.signal) - m.lead_mean[:, None]) / m.lead_std[:, None]
    # The maps' (and xecg explain's) input is that same normalised record.
    torch.testing.assert_close(m.model_input(record.signal), x[None])
    with torch.no_grad():
        expected = m.eval()(x[None]).probs[0]
    torch.testing.assert_close(out["probs"], expected)
    if model == "cnn":
        assert out["attention"] is None and out["response_maps"] is None
    else:
        steps = n // DOWNSAMPLE
        assert out["attention"].shape == (steps,)
        assert out["response_maps"].shape == (NUM_CLASSES, steps)
        assert ((out["attention"] > 0) & (out["attention"] < 1)).all()
        assert (out["response_maps"] >= 0).all()


class StepLosses(L.Callback):
    """Each training step's total loss and records, as the module returned them."""

    def __init__(self):
        self.rows: list[tuple[float, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((float(outputs["loss"]), len(batch["index"])))


def test_losses_are_logged_as_means_over_the_steps_since_the_last_log(tiny_data, tmp_path):
    """Training: every log_every_n_steps, the mean loss of the steps since the last logged one
    (across epochs too); validation: once per epoch, the mean over its records."""
    dm = datamodule(tiny_data)
    m = module(lr=3e-3)
    steps = StepLosses()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=5, log_every_n_steps=2,
                        accelerator="cpu", logger=CSVLogger(tmp_path, name="", version=""),
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[steps])
    trainer.fit(m, datamodule=dm)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}
    assert sorted(logged) == [1, 3, 5, 7, 9]
    for step, value in logged.items():
        window = steps.rows[step - 1:step + 1]
        expected = sum(loss * n for loss, n in window) / sum(n for _, n in window)
        assert value == pytest.approx(expected, rel=1e-5)
    assert all(r.get("train/bce_perception") for r in rows if r.get("train/loss"))
    assert {"train/micro_f1", "val/loss", "val/regularizer"} <= trainer.callback_metrics.keys()

    # The epoch's validation loss: the mean over its records of each batch's loss.
    got = trainer.validate(m, datamodule=dm, verbose=False)[0]["val/loss"]
    m.eval()
    total = records = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            y = batch["y"][batch["group"]] if "group" in batch else batch["y"]
            n = len(batch["index"])
            total += float(m.criterion(m(batch["x"], batch["mask"]), y).total) * n
            records += n
    assert got == pytest.approx(total / records, rel=1e-5)


def test_training_metrics_from_one_update_per_epoch_equal_one_per_step():
    torch.manual_seed(0)
    probs, target = torch.rand(40, NUM_CLASSES), (torch.rand(40, NUM_CLASSES) > 0.7).float()
    per_step, per_epoch = ECGMetrics(with_auroc=False), ECGMetrics(with_auroc=False)
    for i in range(0, 40, 8):
        per_step.update(probs[i:i + 8], target[i:i + 8])
    per_epoch.update(probs, target)
    expected = per_step.compute()
    for name, value in per_epoch.compute().items():
        torch.testing.assert_close(value, expected[name], msg=name)


def test_compile_option_compiles_the_network_once_in_place(tiny_data, monkeypatch, caplog):
    compiled = []
    original = torch.nn.Module.compile

    def compile_eagerly(self, **kwargs):  # torch.compile's tracing, without code generation
        compiled.append(dict(kwargs))
        kwargs.pop("mode", None)  # (torch takes no mode beside a backend)
        original(self, backend="eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    caplog.set_level("INFO")
    dm = datamodule(tiny_data, "bucket")
    m = module(compile=True, compile_mode="reduce-overhead")
    names = list(m.state_dict())
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                        accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, datamodule=dm)
    m.configure_model()  # every Trainer entry calls it again
    # bucket: a new length every batch; the mode is passed on
    assert compiled == [{"dynamic": True, "mode": "reduce-overhead"}]
    generic = {mod.length_generic for mod in m.net.modules() if hasattr(mod, "length_generic")}
    assert generic == {True}  # layers that keep the length symbolic (tests/test_compile.py)
    assert list(m.state_dict()) == names  # checkpoints are those of the plain network
    assert not module(compile=False).hparams.compile
    # The still progress bar is explained, once.
    said = [r.getMessage() for r in caplog.records if "model.compile" in r.getMessage()]
    assert len(said) == 1 and "mode reduce-overhead" in said[0] and "bucket" in said[0], said
    # torch's default mode is left to torch: no mode argument (set up as a pad fit would)
    compiled.clear()
    plain = module(compile=True)
    plain.eval_windows = {"policy": "pad", "length": 972, "bucket_multiple": 972}
    plain.configure_model()
    assert compiled == [{"dynamic": None}]


def test_a_trainer_restores_packed_batches(tiny_data):
    """``pad_on_device`` (the default on a GPU): Lightning calls the DataModule's
    ``on_after_batch_transfer`` on every batch, so validation gives exactly the metrics of
    unpacked batches (here on a CPU, where the default is off)."""
    results = []
    for trim in (False, True):
        dm = datamodule(tiny_data, policy="pad", pad_on_device=trim)
        dm.length = 4000  # longer than the records: batches share leading zeros
        assert trim == all("spans" in b for b in dm.val_dataloader())
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=3)
        results.append(trainer.validate(module(), datamodule=dm, verbose=False)[0])
    assert results[0].keys() == results[1].keys() and results[0]
    for k in results[0]:
        assert results[0][k] == pytest.approx(results[1][k], abs=1e-6), k


def test_half_transfer_through_a_trainer_gives_the_same_metrics(tiny_data):
    """``half_transfer`` (the default under bf16-mixed on a GPU; here asked for on a CPU):
    Lightning's transfer hook makes x float32 again, and validation under bf16-mixed gives
    exactly the metrics of float32 batches."""
    results = []
    for half in (False, True):
        dm = datamodule(tiny_data, policy="pad", half_transfer=half)
        trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=3)
        results.append(trainer.validate(module(), datamodule=dm, verbose=False)[0])
    assert results[0] == results[1] and results[0]


@pytest.fixture
def eager_compile(monkeypatch):
    """``nn.Module.compile`` with dynamo's eager backend (traced graphs, no code generation);
    yields dynamo's counters (``counters["stats"]["unique_graphs"]``)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **kw: original(self, backend="eager", **kw))
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("mask_padding", [False, True])
def test_compiled_for_one_length_one_graph_serves_every_batch_size(eager_compile, mask_padding):
    """pad: the epoch's last batch is smaller; torch would compile the network again for it."""
    m = XECGModule(XECGNet(width=0.0625), XECGLoss(gamma=0.01), compile=True,
                   mask_padding=mask_padding)
    m.eval_windows = {"policy": "pad", "length": 972}
    m.configure_model()
    with torch.no_grad():
        for batch in (4, 3, 5):
            mask = torch.arange(972) < torch.randint(500, 973, (batch, 1))
            m(torch.randn(batch, NUM_LEADS, 972), mask)
    assert eager_compile["stats"]["unique_graphs"] == 1


def test_compiled_under_bucket_an_unpadded_batch_needs_no_second_graph(eager_compile):
    """bucket: a batch whose records all fill its length (``padded`` False) still gets its mask
    when the network is compiled, so the masked graph serves it (None would be a new graph);
    uncompiled, it runs the plain path."""
    for compile_ in (True, False):
        m = XECGModule(XECGNet(width=0.0625), XECGLoss(gamma=0.01), compile=compile_)
        m.eval_windows = {"policy": "bucket", "length": 1944, "bucket_multiple": 972}
        m.configure_model()
        given = []
        for length, padded in ((972, True), (1944, True), (1944, False)):
            mask = torch.arange(length) < (length - 100 if padded else length)
            batch = {"x": torch.randn(3, NUM_LEADS, length), "y": torch.zeros(3, NUM_CLASSES),
                     "mask": mask.expand(3, -1), "padded": padded, "index": torch.arange(3)}
            given.append(m.mask_for(batch) is not None)
            with torch.no_grad():
                m.predict_step(batch, 0)
        assert given == [True, True, compile_]
        if compile_:
            assert eager_compile["stats"]["unique_graphs"] == 1


class HostReads(L.Callback):
    """Records, inside training and validation steps after the first (the loader's next batch
    and every per-step hook included, epoch ends not), each op whose result the host has to wait
    for on an accelerator: a tensor read as a Python number or bool (``.item()``, ``if t``),
    or a shape that depends on the data (``nonzero``, boolean indexing, ``unique``). On a GPU
    each one stalls the step until the device catches up."""

    OPS = ("_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique",
           "_unique2", "unique_consecutive", "argwhere")

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        reads = self.reads = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                bool_index = name == "index" and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ())
                if name in HostReads.OPS or bool_index:
                    import traceback

                    reads.append((name, traceback.extract_stack()[:-1]))
                return func(*args, **(kwargs or {}))

        self.mode, self.active, self.train_steps = Mode(), False, 0

    def _enter(self, trainer, index: int) -> None:
        if index >= 1 and not trainer.sanity_checking and not self.active:
            self.mode.__enter__()
            self.active = True

    def _exit(self) -> None:
        if self.active:
            self.mode.__exit__(None, None, None)
            self.active = False

    def on_train_batch_start(self, trainer, pl_module, batch, index):
        self._enter(trainer, index)
        self.train_steps += self.active

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, index):
        if index == trainer.num_training_batches - 1:  # before validation and the epoch's end
            self._exit()

    def on_validation_batch_start(self, trainer, pl_module, batch, index, dataloader_idx=0):
        self._enter(trainer, index)

    def on_validation_epoch_end(self, trainer, pl_module):  # called before the module's
        self._exit()


# crop (make train's policy) with loader threads, bucket (the mask; pad is bucket at one length)
@pytest.mark.parametrize("policy, workers", [("crop", 2), ("bucket", 0)])
def test_training_and_validation_steps_never_wait_for_the_device(tiny_config, tmp_path, policy,
                                                                 workers):
    """A step of ``xecg train`` (its callbacks, progress bar, the GPU's packed 16-bit transfer)
    asks the device nothing between two logging steps: a host-device sync per step is a fixed
    cost that a GPU step of 24 ms cannot hide (issue 11). Two epochs: in the second the progress
    bar also shows the first validation's metrics. One read is the CPU's own and is let
    through: the mask check that a GPU batch skips (``check_input``, which on a GPU trusts the
    loader's ``padded``). NonFiniteLossGuard used to read the loss before each backward, and
    single-tensor Adam its step counter; the module's Adam is now fused, and the guard's
    verdict skips a bad step on the device and is read back once in a while
    (tests/test_reliability_training.py)."""
    from xecg.lightning_cli import fit_and_test

    probe = HostReads()
    config = tiny_config(tmp_path, experiment={"name": "sync", "runs_dir": str(tmp_path / "runs"),
                                               "wandb": False},
                         trainer={"max_epochs": 2, "accelerator": "cpu", "devices": 1,
                                  "precision": "bf16-mixed", "log_every_n_steps": 1000,
                                  "enable_progress_bar": True, "enable_model_summary": False},
                         data={"policy": policy, "length": 972 if policy == "crop" else 4000,
                               "batch_size": 16, "num_workers": workers, "worker_kind": "thread",
                               "pad_on_device": True, "half_transfer": True})
    fit_and_test(["--config", str(config)], callbacks=[probe])
    assert not probe.active
    waits = []
    for name, stack in probe.reads:
        # Whose read it is: the innermost frame of xecg, Lightning or torch.optim (Lightning
        # runs the whole step, backward and its hooks included, inside optimizer.step).
        ours = [f for f in stack if "/xecg/" in f.filename or "/lightning/" in f.filename
                or "/torch/optim/" in f.filename]
        if ours[-1].name != "check_input":
            waits.append(f"{name} at " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                                     for f in reversed(ours[-6:])))
    assert probe.train_steps > 0, "the probe saw no step"
    assert not waits, "\n".join(waits)


def test_adam_is_fused_except_under_float16():
    """The fused Adam skips a non-finite step on the device (NonFiniteLossGuard); under float16
    GradScaler's unscaling inside a fused step would rule out Lightning's gradient clipping, so
    there the Adam is torch's default (and the guard reads each loss)."""
    from types import SimpleNamespace

    m = XECGModule(XECGNet(width=0.0625), XECGLoss(), scheduler="none")
    for precision, fused in (("32-true", True), ("bf16-mixed", True), ("16-mixed", None)):
        m._trainer = SimpleNamespace(precision=precision, max_epochs=1)
        assert m.configure_optimizers().defaults["fused"] is fused, precision
    m._trainer = None
