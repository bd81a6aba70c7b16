import json
import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_utils.checkpoint import CheckpointError, atomic_save, load_checkpoint, save_checkpoint
from course_utils.config import TrainConfig, choose_recipe
from course_utils.data import load_cifar10, make_loaders
from course_utils.models import BaselineNet, CifarNet, CifarNetConfig
from course_utils.training import TrainingDivergedError, evaluate, fit, train_one_epoch

CPU = torch.device("cpu")


def tiny_model():
    return CifarNet(CifarNetConfig(stem=8, c1=8, c3=16, c4=16))


def tiny_batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_loss_falls_on_a_small_batch():
    torch.manual_seed(0)
    x, y = tiny_batch()
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = [train_one_epoch(model, loader, opt, CPU, progress=False)[0] for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]  # it memorises 64 random images
    assert train_one_epoch(model, loader, opt, CPU, progress=False)[1] > 60


def test_evaluate_returns_the_mean_loss_per_image():
    x, y = tiny_batch(50)
    model = tiny_model().eval()
    loss, acc = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=16), CPU)  # 16+16+16+2
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert loss > 0
    assert acc == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())


@pytest.fixture
def tiny_data(image_folder):
    return load_cifar10(image_folder, download=False)


def small_config(**kw):
    return TrainConfig(**{**dict(epochs=3, batch_size=16, lr=0.05, seed=3), **kw})


def run(data, config, **kw):
    torch.manual_seed(config.seed)
    model = tiny_model()
    train, test = make_loaders(data, config.batch_size, seed=config.seed)
    return model, fit(model, train, test, config, CPU, progress=False, log=None, **kw)


def test_fit_history(tiny_data, tmp_path):
    model, h = run(tiny_data, small_config(), checkpoint=tmp_path / "c.pt")
    assert h.epoch == [1, 2, 3] and len(h.test_acc) == 3 and all(l > 0 for l in h.test_loss)
    assert h.lr[0] == pytest.approx(0.05 / 10)  # OneCycle starts at lr / div_factor
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3


def test_same_seed_gives_the_same_history(tiny_data):
    _, a = run(tiny_data, small_config(epochs=2))
    _, b = run(tiny_data, small_config(epochs=2))
    assert a.train_loss == b.train_loss and a.test_acc == b.test_acc
    _, other = run(tiny_data, small_config(epochs=2, seed=4))
    assert other.train_loss != a.train_loss         # the seed is what makes them equal


class StopAfter:
    """A loader wrapper that raises KeyboardInterrupt when epoch ``n`` starts (the stop button)."""

    def __init__(self, loader, n):
        self.loader, self.n, self.epochs = loader, n, 0
        self.dataset, self.generator = loader.dataset, loader.generator

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epochs += 1
        if self.epochs == self.n:
            raise KeyboardInterrupt
        return iter(self.loader)


def test_interrupted_run_resumes_to_the_same_weights_and_history(tiny_data, tmp_path):
    config = small_config()
    full_model, full = run(tiny_data, config)

    torch.manual_seed(config.seed)
    model = tiny_model()
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    ckpt = tmp_path / "run.pt"
    part = fit(model, StopAfter(train, 2), test, config, CPU, checkpoint=ckpt, progress=False, log=None)
    assert part.interrupted and part.epoch == [1]
    assert load_checkpoint(ckpt)["epoch"] == 1

    model2 = tiny_model()  # a fresh process: new model, new loaders
    train2, test2 = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    resumed = fit(model2, train2, test2, config, CPU, checkpoint=ckpt, resume=True, progress=False, log=None)
    assert resumed.epoch == [1, 2, 3] and not resumed.interrupted
    assert resumed.train_loss == full.train_loss and resumed.test_acc == full.test_acc
    for (k, a), b in zip(full_model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k


class StopMidEpoch(StopAfter):
    """Raises KeyboardInterrupt after the first batch of epoch ``n``: the weights have moved past the
    checkpoint of epoch ``n - 1``."""

    def __iter__(self):
        self.epochs += 1
        batches = iter(self.loader)
        if self.epochs != self.n:
            return batches

        def one_then_stop():
            yield next(batches)
            raise KeyboardInterrupt
        return one_then_stop()


def test_a_run_stopped_mid_epoch_gives_back_the_last_complete_epochs_weights_in_eval_mode(tiny_data, tmp_path):
    """What a notebook does with the model after the stop button (predict, plot) describes the epoch the
    history and the checkpoint end at, not a half-trained one; with no checkpoint, the log says so."""
    config = small_config()
    torch.manual_seed(config.seed)
    model = tiny_model()
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    lines = []
    part = fit(model, StopMidEpoch(train, 2), test, config, CPU, checkpoint=tmp_path / "c.pt", progress=False,
               log=lines.append)
    assert part.interrupted and part.epoch == [1] and not model.training
    saved = load_checkpoint(tmp_path / "c.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert lines[-1].startswith("interrupted after 1 complete epoch(s); the last complete epoch is saved in ")
    assert "the model holds its weights again" in lines[-1]

    torch.manual_seed(config.seed)
    unsaved = tiny_model()
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    fit(unsaved, StopMidEpoch(train, 2), test, config, CPU, progress=False, log=lines.append)
    assert not unsaved.training and "partway through the next epoch (no checkpoint of this epoch" in lines[-1]
    assert "resume=True" not in lines[-1]                    # advice that would fail without a checkpoint
    assert not all(torch.equal(saved[k], v) for k, v in unsaved.state_dict().items())   # it did move on


def test_a_stop_never_loads_another_epochs_checkpoint(tiny_data, tmp_path):
    """Resumed from one file with checkpoint= naming an older one, and stopped before an epoch is saved:
    the model keeps the resumed weights (the older file is not this history's epoch) and the history
    comes back, no error from the stop."""
    config = small_config(epochs=3)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    torch.manual_seed(config.seed)
    fit(tiny_model(), StopAfter(train, 2), test, config, CPU, checkpoint=tmp_path / "old.pt", progress=False, log=None)
    torch.manual_seed(config.seed)
    fit(tiny_model(), StopAfter(train, 3), test, config, CPU, checkpoint=tmp_path / "new.pt", progress=False, log=None)
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 1 and load_checkpoint(tmp_path / "new.pt")["epoch"] == 2
    model, lines = tiny_model(), []
    h = fit(model, StopAfter(train, 1), test, config, CPU, checkpoint=tmp_path / "old.pt", resume=tmp_path / "new.pt",
            progress=False, log=lines.append)
    assert h.interrupted and h.epoch == [1, 2] and not model.training
    resumed = load_checkpoint(tmp_path / "new.pt")["model"]
    assert all(torch.equal(resumed[k], v) for k, v in model.state_dict().items())
    assert "no checkpoint of this epoch" in lines[-1]


def test_a_stopped_runs_result_refuses_the_test_set_until_it_is_finished():
    """Notebook 11's per-class cells ask result.predictions(), which calls require_finished first: a run stopped after epoch 1 of 2 is to be
    continued, not scored on the test set; a finished one passes."""
    from course_utils.experiment import RunNotFinished, RunResult
    from course_utils.training import History

    history = History()
    history.append(epoch=1)
    history.interrupted = True
    result = RunResult(None, history, None, small_config(epochs=2), CPU, {}, None, None, None)
    assert not result.finished
    with pytest.raises(RunNotFinished, match=r"stopped after epoch 1 of 2.*set RESUME = True in the training cell"):
        result.require_finished()
    history.interrupted = False
    with pytest.raises(RunNotFinished):          # not marked, but short of its epochs all the same
        result.require_finished()
    history.append(epoch=2)
    assert result.finished and result.require_finished() is None


def test_resume_needs_a_run_to_continue(tiny_data, tmp_path):
    """resume=True with no checkpoint is an error, not a silent fresh run; a weights-only file (shipped or
    exported) is named as such, with the way to train from it; a file without weights is refused."""
    config = small_config(epochs=2)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    with pytest.raises(ValueError, match=r"resume=True continues the run saved in checkpoint=.*pass checkpoint="):
        fit(tiny_model(), train, test, config, CPU, resume=True, progress=False, log=None)
    save_checkpoint(tmp_path / "weights.pt", tiny_model())          # what export writes: the weights alone
    with pytest.raises(CheckpointError, match=r"holds weights only \(shipped or exported\?\).*lacks optimizer, "
                                              r"scheduler, epoch, history, config.*load_checkpoint\(path, model\)"):
        fit(tiny_model(), train, test, config, CPU, resume=tmp_path / "weights.pt", progress=False, log=None)
    torch.save({"format": load_checkpoint(tmp_path / "weights.pt")["format"], "model_class": "Sequential"},
               tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint(tmp_path / "empty.pt", tiny_model())


def test_a_whole_number_for_a_float_setting_is_the_same_run():
    """label_smoothing=0 and 0.0 are one setting: the same config, the same run name (so --resume finds a
    run started from Python, and the other way round), the same record."""
    from course_utils.experiment import checkpoint_path

    as_int, as_float = TrainConfig.recipe("course", label_smoothing=0), TrainConfig.recipe("course", label_smoothing=0.0)
    assert isinstance(as_int.label_smoothing, float) and as_int.to_dict() == as_float.to_dict()
    assert checkpoint_path("cifarnet", as_int).name == checkpoint_path("cifarnet", as_float).name
    assert checkpoint_path("cifarnet", TrainConfig(weight_decay=0)).name == checkpoint_path(
        "cifarnet", TrainConfig(weight_decay=0.0)).name
    assert isinstance(TrainConfig(epochs=3).epochs, int)          # whole-number settings stay ints


def recording_scaler(made):
    """A GradScaler class that keeps every instance in ``made`` and counts its steps and loads. It starts
    at a scale of 16 so that fp16 on the CPU does not overflow at once."""
    class Recording(torch.amp.GradScaler):
        def __init__(self, device="cuda", **kw):
            super().__init__(device, init_scale=16.0)
            self.device_type, self.steps, self.loaded = device, 0, []
            made.append(self)

        def step(self, optimizer, *args, **kw):
            self.steps += 1
            return super().step(optimizer, *args, **kw)

        def load_state_dict(self, state):
            self.loaded.append(dict(state))
            return super().load_state_dict(state)
    return Recording


def test_fp16_training_scales_the_loss_and_a_resume_restores_the_scale(tiny_data, tmp_path, monkeypatch):
    """The path of a card below compute capability 8.0 (a T4): float16 autocast and a GradScaler, run on
    the CPU with ``mixed_precision`` answering float16 as it does there. Every step goes through the
    scaler, the checkpoint keeps its scale, and a resumed run starts from that scale."""
    import course_utils.training as training

    monkeypatch.setattr(training, "mixed_precision", lambda device, amp=True: torch.float16 if amp else None)
    made = []
    monkeypatch.setattr(torch.amp, "GradScaler", recording_scaler(made))
    config = small_config(epochs=2)
    torch.manual_seed(config.seed)
    model = tiny_model()
    dtypes = set()
    model.register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    ckpt = tmp_path / "c.pt"
    part = fit(model, StopAfter(train, 2), test, config, CPU, checkpoint=ckpt, progress=False, log=None)
    assert part.epoch == [1] and dtypes == {torch.float16}
    assert len(made) == 1 and made[0].device_type == "cpu"      # the scaler is built for the run's device
    assert made[0].steps == len(train)                          # every step went through the scaler
    saved = load_checkpoint(ckpt)["scaler"]
    assert saved["scale"] == made[0].get_scale() > 0

    state = load_checkpoint(ckpt)
    state["scaler"]["scale"] = 2.0                              # a scale no fresh scaler starts at
    atomic_save(state, ckpt)
    h = fit(tiny_model(), train, test, config, CPU, checkpoint=ckpt, resume=True, progress=False, log=None)
    assert h.epoch == [1, 2] and len(made) == 2
    assert [s["scale"] for s in made[1].loaded] == [2.0] and made[1].steps == len(train)


def test_a_run_resumed_in_another_precision_says_so_and_its_history_keeps_both(tiny_data, tmp_path, monkeypatch):
    """Started in fp16 (a T4's path, simulated), resumed in fp32: the resume says which epochs ran how, and
    the history (so the run record's 'ran_on') keeps each stretch. A checkpoint written before epochs kept
    their precision reads back as not recorded."""
    import course_utils.training as training

    monkeypatch.setattr(training, "mixed_precision", lambda device, amp=True: torch.float16 if amp else None)
    monkeypatch.setattr(torch.amp, "GradScaler", recording_scaler([]))
    config = small_config(epochs=3)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    ckpt = tmp_path / "c.pt"
    torch.manual_seed(config.seed)
    part = fit(tiny_model(), StopAfter(train, 2), test, config, CPU, checkpoint=ckpt, progress=False, log=None)
    cpu = training.device_name(CPU)                                 # the processor's name, as in run records
    assert part.epoch == [1] and part.precision == ["fp16 + GradScaler"] and part.device == [cpu]
    monkeypatch.setattr(training, "mixed_precision", lambda device, amp=True: None)
    notes = []
    h = fit(tiny_model(), train, test, config, CPU, checkpoint=ckpt, resume=True, progress=False, log=notes.append)
    assert (f"note: epoch 1 ran in fp16 + GradScaler on {cpu}; from epoch 2 this run trains in fp32 on {cpu} "
            "(its record lists each stretch under 'ran_on')") in notes
    assert h.ran_on() == [{"first_epoch": 1, "last_epoch": 1, "device": cpu, "precision": "fp16 + GradScaler"},
                          {"first_epoch": 2, "last_epoch": 3, "device": cpu, "precision": "fp32"}]
    # another machine, the same precision: the card's (or processor's) name is what changed
    other = tmp_path / "other.pt"
    fit(tiny_model(), StopAfter(train, 3), test, config, CPU, checkpoint=other, progress=False, log=None)
    monkeypatch.setattr(training, "device_name", lambda device: "NVIDIA A100-SXM4-40GB")
    notes.clear()
    h = fit(tiny_model(), train, test, config, CPU, checkpoint=other, resume=True, progress=False, log=notes.append)
    assert (f"note: epochs 1–2 ran in fp32 on {cpu}; from epoch 3 this run trains in fp32 on NVIDIA A100-SXM4-40GB "
            "(its record lists each stretch under 'ran_on')") in notes
    assert [(r["first_epoch"], r["last_epoch"]) for r in h.ran_on()] == [(1, 2), (3, 3)]
    notes.clear()      # read back when finished: nothing left to train, nothing to note
    fit(tiny_model(), train, test, config, CPU, checkpoint=ckpt, resume=True, progress=False, log=notes.append)
    assert not any(n.startswith("note:") for n in notes)

    old = h.to_dict()
    old.pop("device"), old.pop("precision")
    assert training.History.from_dict(old).ran_on() == [
        {"first_epoch": 1, "last_epoch": 3, "device": None, "precision": None}]
    old["device"], old["precision"] = ["cpu"], ["fp32"]            # kept from epoch 3 on (resumed after 2)
    assert [(r["first_epoch"], r["precision"]) for r in training.History.from_dict(old).ran_on()] == [(1, None), (3, "fp32")]
    old["precision"] = ["bf16", "bf16", "fp32", "fp32"]             # longer than the epochs: the last three count
    assert training.History.from_dict(old).precision == ["bf16", "fp32", "fp32"]


def test_a_step_the_scaler_skips_still_advances_the_schedule_and_torch_does_not_warn_about_the_order():
    """At GradScaler's starting scale (65,536) the first fp16 steps often overflow and are skipped; the
    schedule goes on. torch would warn as if lr_scheduler.step() came before optimizer.step() (shown by the
    bare loop below); train_one_epoch does not print that on every fp16 run."""
    import warnings

    from course_utils.training import training_step

    x, y = tiny_batch(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    for silenced in (True, False):
        torch.manual_seed(0)
        model = tiny_model()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=len(loader) + 1)
        scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))   # every step overflows: all skipped
        if silenced:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                train_one_epoch(model, loader, optimizer, CPU, scheduler, amp=False, scaler=scaler, progress=False)
        else:
            with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
                for xb, yb in loader:
                    training_step(model, xb, yb, optimizer, nn.CrossEntropyLoss(), CPU, amp=False, scaler=scaler)
                    scheduler.step()
        assert scheduler.last_epoch == len(loader)                       # the schedule advanced every step
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # no step was applied


def _overflowing(module, batches_at_inf):
    """Hooks ``module`` so that its output on the listed batches (counted from 0) is inf, as an fp16 forward
    that overflows gives (the whole model: its logits); returns the list of every batch's output, filled as
    it trains."""
    outputs = []

    def hook(module, args, out):
        if len(outputs) in batches_at_inf:
            out = out + float("inf")                     # inf, with its graph kept
        outputs.append(out.detach().clone())
        return out

    module.register_forward_hook(hook)
    return outputs


def test_an_fp16_batch_that_overflows_is_a_skipped_step_not_a_diverged_run():
    """With a GradScaler, logits at inf on one batch of four: the scaler skips that step, the epoch's loss
    and accuracy are the other three batches' (a warning counts the one left out), and the run goes on.
    Most of the batches at inf is divergence; without a scaler (fp32), one is."""
    x, y = tiny_batch(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    torch.manual_seed(0)
    model = tiny_model()
    outputs = _overflowing(model, {2})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.warns(UserWarning, match=r"1 of 4 batches overflowed in fp16 .*leave them out"):
        loss, acc = train_one_epoch(model, loader, optimizer, CPU, amp=False, scaler=scaler, progress=False)
    kept = [(logits, y[16 * i:16 * (i + 1)]) for i, logits in enumerate(outputs) if i != 2]
    assert len(outputs) == 4 and torch.isinf(outputs[2]).all()
    assert loss == pytest.approx(sum(nn.functional.cross_entropy(o, t, reduction="sum").item() for o, t in kept) / 48,
                                 rel=1e-5)
    assert acc == pytest.approx(100 * sum((o.argmax(1) == t).sum().item() for o, t in kept) / 48)
    assert scaler.get_scale() < 65536.0                  # the scaler saw the overflow and backed off
    for at_inf, scaler in (({0, 1, 3}, torch.amp.GradScaler("cpu")), ({2}, None)):
        model = tiny_model()
        _overflowing(model, at_inf)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        match = r"3 of 4 batches overflowed in fp16.*train --no-amp; TrainConfig\(amp=False\)" if scaler else \
            "the training loss became nan"
        with pytest.raises(TrainingDivergedError, match=match):
            train_one_epoch(model, loader, optimizer, CPU, amp=False, scaler=scaler, progress=False)


def test_an_fp16_overflow_that_reached_batchnorms_statistics_stops_the_run():
    """The scaler skips the update, not the forward pass: an overflow inside the network (a conv's output at
    inf, before its BatchNorm) leaves the running statistics at inf or NaN, and every evaluation after it
    would be NaN. That epoch stops the run with the fp16 fix named, not a warning."""
    x, y = tiny_batch(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    torch.manual_seed(0)
    model = tiny_model()
    _overflowing(next(m for m in model.modules() if isinstance(m, nn.Conv2d)), {2})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(TrainingDivergedError, match=r"1 of 4 batches overflowed in fp16.*running statistics.*"
                                                    r"train --no-amp"):
        train_one_epoch(model, loader, optimizer, CPU, amp=False, scaler=torch.amp.GradScaler("cpu"), progress=False)
    assert not all(torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point())


def test_bf16_and_fp32_training_use_no_scaler(tiny_data, tmp_path, monkeypatch):
    """bfloat16 keeps float32's exponent (capability 8.0 and later) and fp32 needs nothing: no scaler is
    built, and the checkpoint's scaler entry is empty."""
    import course_utils.training as training

    made = []
    monkeypatch.setattr(torch.amp, "GradScaler", recording_scaler(made))
    for answer in (torch.bfloat16, None):
        monkeypatch.setattr(training, "mixed_precision", lambda device, amp=True, a=answer: a if amp else None)
        model = tiny_model()
        dtypes = set()
        model.register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
        train, test = make_loaders(tiny_data, 16, seed=3)
        fit(model, train, test, small_config(epochs=1), CPU, checkpoint=tmp_path / "c.pt", progress=False, log=None)
        assert dtypes == {answer or torch.float32}
        assert made == [] and load_checkpoint(tmp_path / "c.pt")["scaler"] == {}


def test_resume_with_other_settings_is_refused(tiny_data, tmp_path):
    run(tiny_data, small_config(epochs=1), checkpoint=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="resume with the same settings"):
        run(tiny_data, small_config(epochs=4), checkpoint=tmp_path / "c.pt", resume=True)


@pytest.mark.parametrize("other", [dict(epochs=4), dict(ema_decay=0.9)], ids=["other settings", "no weight average"])
def test_a_refused_resume_leaves_the_callers_model_as_it_was(tiny_data, tmp_path, other):
    """fit checks the checkpoint against the run before the model takes its weights: a learner who passes their
    own trained model with resume= and another config gets the error, and keeps their weights."""
    run(tiny_data, small_config(epochs=1), checkpoint=tmp_path / "c.pt")
    torch.manual_seed(99)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, test = make_loaders(tiny_data, 16, seed=3)
    with pytest.raises(CheckpointError):
        fit(model, train, test, small_config(**{"epochs": 1, **other}), CPU, checkpoint=tmp_path / "c.pt", resume=True,
            progress=False, log=None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_finished_run_read_back_by_fit_gives_its_model_in_eval_mode(tiny_data, tmp_path):
    """No epoch runs when the checkpoint is a finished run's, so no evaluation sets eval mode: fit does, as
    after a run it trains, or the model's BatchNorm would use each batch's statistics in what the learner does next."""
    _, history = run(tiny_data, small_config(epochs=1), checkpoint=tmp_path / "c.pt")
    model = tiny_model().train()
    train, test = make_loaders(tiny_data, 16, seed=3)
    again = fit(model, train, test, small_config(epochs=1), CPU, checkpoint=tmp_path / "c.pt", resume=True,
                progress=False, log=None)
    assert len(again) == len(history) == 1 and not model.training
    saved = load_checkpoint(tmp_path / "c.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(tiny_data, tmp_path):
    """Epoch 1 trains normally and is checkpointed; from epoch 2 on the network's outputs turn to NaN.
    The run must stop with a message, and the checkpoint on disk must still be epoch 1's, byte for byte,
    history included."""
    config = small_config(epochs=3)
    train_loader, test_loader = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    ckpt, seen = tmp_path / "c.pt", {}

    def poison(module, args, out):  # once epoch 1's checkpoint exists, remember it and return NaN
        if not ckpt.exists():
            return out
        seen.setdefault("epoch 1", ckpt.read_bytes())
        return out * float("nan")

    model = tiny_model()
    model.register_forward_hook(poison)
    log = None
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        fit(model, train_loader, test_loader, config, CPU, checkpoint=ckpt, progress=False, log=log)
    assert "epoch 1" in seen, "epoch 1 was never checkpointed"
    assert ckpt.read_bytes() == seen["epoch 1"]                # the diverging epoch overwrote nothing
    kept = load_checkpoint(ckpt)
    assert kept["epoch"] == 1 and kept["history"]["epoch"] == [1]
    assert np.isfinite(kept["history"]["train_loss"][0])


def test_checkpoint_round_trip_gives_the_same_next_step(tmp_path):
    torch.manual_seed(0)
    x, y = tiny_batch(32)
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    train_one_epoch(model, loader, opt, CPU, progress=False)
    save_checkpoint(tmp_path / "c.pt", model, optimizer=opt.state_dict())

    model2 = tiny_model()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    state = load_checkpoint(tmp_path / "c.pt", model2)
    opt2.load_state_dict(state["optimizer"])
    torch.manual_seed(1)  # the same dropout masks for both
    train_one_epoch(model, loader, opt, CPU, progress=False)
    torch.manual_seed(1)
    train_one_epoch(model2, loader, opt2, CPU, progress=False)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    atomic_save({"format": "x", "value": 1}, path)
    good = path.read_bytes()

    def dies_midway(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": "x", "value": 2}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_a_drive_without_permissions_still_gets_the_checkpoint_and_the_record(tmp_path, monkeypatch):
    """FAT, exFAT and some network shares refuse chmod (EPERM): the permissions are cosmetic, the file is not."""
    import errno
    import os

    from course_utils.checkpoint import atomic_write_text

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    atomic_save({"format": "x", "value": 3}, tmp_path / "c.pt")
    atomic_write_text('{"epochs": 1}', tmp_path / "c.json")
    assert torch.load(tmp_path / "c.pt", weights_only=True) == {"format": "x", "value": 3}
    assert (tmp_path / "c.json").read_text() == '{"epochs": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.pt"]   # no temporary file left


def test_wrong_or_corrupt_checkpoints_get_clear_errors(tmp_path):
    save_checkpoint(tmp_path / "cifar.pt", tiny_model())
    with pytest.raises(CheckpointError, match="holds a CifarNet, but the model given is a BaselineNet; "
                                              "build a CifarNet to load it, or start without resume"):
        load_checkpoint(tmp_path / "cifar.pt", BaselineNet())
    fix = "Build the model it was saved from .its run record names the model and config., or start without resume"
    with pytest.raises(CheckpointError, match=r"does not fit this CifarNet \(another width or version\?\): "
                                              r"c1\.0\.0\.weight: checkpoint \(8, 3, 3, 3\) vs model \(\d+, 3, 3, 3\).*" + fix):
        load_checkpoint(tmp_path / "cifar.pt", CifarNet())
    state = load_checkpoint(tmp_path / "cifar.pt")
    extra = {**state, "model": {**state["model"], "head.extra": torch.zeros(1)}}
    save_path = tmp_path / "extra.pt"
    atomic_save(extra, save_path)
    with pytest.raises(CheckpointError, match=r"unexpected \['head.extra'\]\. " + fix):
        load_checkpoint(save_path, tiny_model())
    first = next(iter(state["model"]))
    atomic_save({**state, "model": {k: v for k, v in state["model"].items() if k != first}}, save_path)
    with pytest.raises(CheckpointError, match=rf"missing \['{re.escape(first)}'\]\. " + fix):
        load_checkpoint(save_path, tiny_model())
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"bad.pt is not a readable checkpoint \(UnpicklingError\)\. It may be "
                                              r"truncated, .*delete it to start afresh\.$") as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert "False" not in str(err.value)    # torch's advice to load with weights_only=False is not passed on
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(RuntimeError: PytorchStreamReader failed "
                                              r"reading zip archive: [^.]*\)\. It may be truncated"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at .*missing.pt; check the path, or start without resume"):
        load_checkpoint(tmp_path / "missing.pt")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    # each setting of its own type, named: these were accepted (or failed later with a raw TypeError)
    for settings, message in ((dict(epochs=1.5), "epochs must be a whole number, got 1.5 (float)"),
                              (dict(lr="0.1"), "lr must be a number, got '0.1' (str)"),
                              (dict(validation="no"), "validation must be True or False, got 'no' (str)"),
                              (dict(crop_size=True), "crop_size must be a whole number or None, got True (bool)"),
                              (dict(batch_size=None), "batch_size must be a whole number, got None (NoneType)"),
                              (dict(train_per_class=0), "train_per_class must be 1 or more images per class, or None")):
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainConfig(**settings)
    assert TrainConfig(lr=1).lr == 1 and TrainConfig(crop_size=None).crop_size is None   # an int is a number
    with pytest.raises(ValueError, match="unknown setting.s. 'foo'; TrainConfig takes epochs, batch_size, "):
        TrainConfig.recipe("long", foo=1)


def test_smoke_mode_shrinks_the_recipe(monkeypatch):
    assert TrainConfig.for_environment().train_per_class is None
    monkeypatch.setenv("COURSE_SMOKE", "1")
    c = TrainConfig.for_environment(seed=5)
    assert c.epochs == 2 and c.train_per_class == 100 and c.seed == 5


def test_fast_recipe_scales_the_learning_rate_with_the_batch(monkeypatch):
    course, fast = TrainConfig(), TrainConfig.fast()
    assert fast.batch_size > course.batch_size and fast.epochs == course.epochs and fast.compile
    assert fast.crop_epochs == 0                       # one input shape on the GPU: one compiled graph
    assert fast.lr / fast.batch_size == pytest.approx(course.lr / course.batch_size)  # linear scaling rule
    assert TrainConfig.for_environment("fast", epochs=20) == TrainConfig.fast(epochs=20)
    monkeypatch.setenv("COURSE_SMOKE", "1")
    smoke = TrainConfig.for_environment("fast")
    assert smoke.batch_size == fast.batch_size and smoke.epochs == 2 and smoke.train_per_class == 100


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ValueError, match="unknown recipe 'turbo'; choose one of auto, course, fast, long"):
        TrainConfig.for_environment("turbo")


def test_auto_recipe_is_fast_on_cuda_and_course_elsewhere(monkeypatch):
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    assert choose_recipe("auto", "cpu") == "course" and choose_recipe("fast", "cpu") == "fast"
    assert TrainConfig.for_environment("auto", device="cpu") == TrainConfig()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend a GPU is there
    assert choose_recipe("auto") == "fast" and choose_recipe("auto", "cuda") == "fast"
    assert choose_recipe("auto", "cpu") == "course" and choose_recipe("course", "cuda") == "course"
    assert TrainConfig.for_environment("auto", device="cuda", seed=3) == TrainConfig.fast(seed=3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        choose_recipe("auto", "cuda")


def test_compile_is_ignored_on_a_cpu(tiny_data, monkeypatch):
    # `compiled` falls back to the eager model on any error torch.compile raises, so a stub that raised
    # would be swallowed: record the calls instead
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: calls.append(args) or args[0])
    _, h = run(tiny_data, small_config(epochs=1, compile=True))
    assert h.epoch == [1] and calls == []


def test_compile_on_cuda_needs_triton(monkeypatch):
    """No GPU is needed: compiling only wraps the model, and a torch.device object is just a name."""
    import importlib.util

    from course_utils import training

    model, notes = nn.Linear(2, 2), []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: ("compiled", m))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "triton" else None)
    guarded = training.compiled(model, torch.device("cuda"), notes.append)
    assert isinstance(guarded, training.CompileGuard) and guarded._compiled == ("compiled", model) and notes == []
    assert training.compiled(model, torch.device("cpu"), notes.append) is model and notes == []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no Triton (e.g. Windows)
    assert training.compiled(model, torch.device("cuda"), notes.append) is model
    assert notes == ["torch.compile off: Triton is not installed (pip install triton); training uncompiled "
                     "(--no-compile skips this note)"]


def test_a_compile_that_fails_at_its_first_step_falls_back_to_eager_once(monkeypatch):
    """Inject a compiled function that raises when first called (as inductor does when it cannot build
    its kernels): the step runs eagerly instead, one note names the cause, and the run goes on."""
    import importlib.util

    from course_utils import training

    calls = []

    def broken_compile(module, **kw):
        def run(*args):
            calls.append(1)
            raise RuntimeError("InductorError: no working C compiler found\n(long traceback)")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    torch.manual_seed(0)
    model, notes = nn.Linear(3, 2), []
    guarded = training.compiled(model, torch.device("cuda"), notes.append)
    x = torch.randn(4, 3)
    assert torch.equal(guarded(x), model(x)) and torch.equal(guarded(x), model(x))
    assert calls == [1] and guarded.state == "eager"  # tried once, never again
    assert len(notes) == 1 and "RuntimeError: InductorError: no working C compiler found" in notes[0]
    assert "--no-compile" in notes[0] and "long traceback" not in notes[0]
    assert list(guarded.state_dict()) == ["module.weight", "module.bias"]  # one copy of the weights
    guarded.eval()
    assert not model.training


def test_a_compile_that_works_is_used_and_later_errors_are_raised(monkeypatch):
    import importlib.util

    from course_utils import training

    state = {"calls": 0}

    def flaky_compile(module, **kw):
        def run(x):
            state["calls"] += 1
            if state["calls"] > 1:
                raise ValueError("a real error in step 2")
            return module(x) * 0 + 7
        return run

    monkeypatch.setattr(torch, "compile", flaky_compile)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    guarded, notes = training.compiled(nn.Linear(3, 2), torch.device("cuda"), []), []
    assert (guarded(torch.randn(2, 3)) == 7).all() and guarded.state == "compiled"
    with pytest.raises(ValueError, match="a real error in step 2"):
        guarded(torch.randn(2, 3))


def test_checkpoint_names_tell_the_recipes_apart(tmp_path, monkeypatch):
    from course_utils.experiment import checkpoint_path

    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    e, b = TrainConfig().epochs, TrainConfig.fast().batch_size
    assert checkpoint_path("cifarnet", TrainConfig()).name == f"cifarnet-full-e{e}-s1.pt"
    assert checkpoint_path("cifarnet", TrainConfig.fast()).name == f"cifarnet-full-e{e}-b{b}-s1.pt"
    assert checkpoint_path("baseline", TrainConfig(train_per_class=100, seed=2)).name == f"baseline-sub100-e{e}-s2.pt"
    assert checkpoint_path("cifarnet", TrainConfig(), tmp_path / "bench").parent == tmp_path / "bench"


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7])
def test_schedule_works_for_very_short_runs(steps):
    model = nn.Linear(2, 2)
    opt, sched = __import__("course_utils.training", fromlist=["build_optimizer"]).build_optimizer(
        model, TrainConfig(epochs=1, lr=0.1), steps_per_epoch=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
    if steps < 3:                                   # one or two steps: no cycle, the peak throughout
        assert lrs == [pytest.approx(0.1)] * steps
    else:                                           # lr / div_factor, up, then down to lr / (10 * 100)
        peak = lrs.index(max(lrs))
        assert lrs[0] == pytest.approx(0.1 / 10) and lrs[-1] == pytest.approx(0.1 / 1000)
        assert 0 < peak < steps - 1 and lrs[:peak + 1] == sorted(lrs[:peak + 1])
        assert lrs[peak:] == sorted(lrs[peak:], reverse=True)


@pytest.mark.parametrize("momentum, high, low", [(0.9, 0.95, 0.85), (0.8, 0.85, 0.75), (0.02, 0.07, 0.0)])
def test_sgd_momentum_cycles_around_the_configured_value(momentum, high, low):
    """OneCycle swings SGD's momentum 0.05 either side of config.momentum, against the learning rate:
    highest at the start and the end, lowest at the peak learning rate (the default 0.9 gives exactly
    OneCycleLR's own 0.95 and 0.85, which the recorded runs trained with)."""
    from course_utils.training import build_optimizer

    config = TrainConfig(epochs=1, momentum=momentum, pct_start=0.5)
    opt, sched = build_optimizer(nn.Linear(2, 2), config, steps_per_epoch=101)
    seen = []
    for _ in range(101):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    at_peak = max(seen)                                   # the step with the highest learning rate
    assert seen[0][1] == pytest.approx(high) and at_peak[1] == pytest.approx(low, abs=1e-3)
    assert seen[-1][1] == pytest.approx(high, abs=1e-3)
    assert all(low - 1e-12 <= m <= high + 1e-12 for _, m in seen)
    group = opt.param_groups[0]
    assert (group["max_momentum"], group["base_momentum"]) == (high, low)   # exactly: 0.85, not 0.8500000000000001


def test_momentum_zero_is_plain_sgd():
    from course_utils.training import build_optimizer

    opt, sched = build_optimizer(nn.Linear(2, 2), TrainConfig(epochs=1, momentum=0.0), steps_per_epoch=20)
    for _ in range(20):
        assert opt.param_groups[0]["momentum"] == 0.0 and opt.param_groups[0]["nesterov"] is False
        opt.step()
        sched.step()


def test_checkpoint_names_tell_apart_runs_that_differ_in_any_training_setting(tmp_path):
    from course_utils.experiment import checkpoint_path

    def name(**settings):
        return checkpoint_path("cifarnet", TrainConfig(**settings), tmp_path).name

    course = TrainConfig()
    assert name() == f"cifarnet-full-e{course.epochs}-s{course.seed}.pt"        # course and fast keep plain names
    fast, long = TrainConfig.recipe("fast"), TrainConfig.recipe("long")
    assert checkpoint_path("cifarnet", fast, tmp_path).name == f"cifarnet-full-e{fast.epochs}-b{fast.batch_size}-s1.pt"
    assert long.epochs > course.epochs and (long.crop_epochs, course.crop_epochs) == (150, 30)
    assert replace(long, epochs=course.epochs, dropout_p=course.dropout_p) == course  # course, longer, a smaller hole
    # the hole is a setting no name spells out: a long run carries its fingerprint, so it never shares a file
    # with a course run of the same length
    assert re.fullmatch(rf"cifarnet-full-e{long.epochs}-s1-x[0-9a-f]{{6}}\.pt", checkpoint_path("cifarnet", long, tmp_path).name)
    assert checkpoint_path("cifarnet", long, tmp_path) != checkpoint_path("cifarnet", replace(course, epochs=long.epochs), tmp_path)
    assert checkpoint_path("cifarnet", long, tmp_path) == checkpoint_path("cifarnet", replace(course, epochs=long.epochs, dropout_p=0.1), tmp_path)
    variants = [name(lr=0.05), name(lr=0.1), name(optimizer="adam", lr=3e-3), name(dropout_p=0.0),
                name(label_smoothing=0.0), name(weight_decay=5e-5), name(validation=False)]
    assert len(set(variants + [name()])) == len(variants) + 1                # all different, none the course's
    assert all(re.fullmatch(rf"cifarnet-full-e{course.epochs}-s1-x[0-9a-f]{{6}}\.pt", v) for v in variants)
    # and stable across processes and versions: the long recipe's published run has this very name
    assert checkpoint_path("cifarnet_res20", TrainConfig.recipe("long"), tmp_path).name == "cifarnet_res20-full-e200-s1-x6d2118.pt"
    assert name(num_workers=2, channels_last=False, compile=True, test_each_epoch=True) == name()
    # a smoke run (its test and validation splits cut too) and a --subset run of the same size and length
    from course_utils import ablation
    from course_utils.config import SMOKE_TEST_PER_CLASS, SMOKE_TRAIN_PER_CLASS
    smoke = replace(course, train_per_class=SMOKE_TRAIN_PER_CLASS, test_per_class=SMOKE_TEST_PER_CLASS)
    subset = replace(smoke, test_per_class=None)
    assert checkpoint_path("cifarnet", smoke, tmp_path).name == (
        f"cifarnet-sub{SMOKE_TRAIN_PER_CLASS}-t{SMOKE_TEST_PER_CLASS}-e{course.epochs}-s1.pt")
    assert checkpoint_path("cifarnet", subset, tmp_path).name == f"cifarnet-sub{SMOKE_TRAIN_PER_CLASS}-e{course.epochs}-s1.pt"
    assert ablation.run_folder(smoke, tmp_path) != ablation.run_folder(subset, tmp_path)
    # each recipe's plain name only at its own batch size: the fast recipe at the course batch, or the course
    # recipe at the fast batch, would otherwise share a file with the other recipe's run
    fast_at_course_batch = replace(fast, batch_size=course.batch_size)
    course_at_fast_batch = replace(course, epochs=fast.epochs, batch_size=fast.batch_size)
    others = {checkpoint_path("cifarnet", c, tmp_path).name for c in (fast_at_course_batch, course_at_fast_batch)}
    plain = {checkpoint_path("cifarnet", c, tmp_path).name for c in (replace(course, epochs=fast.epochs), fast)}
    assert len(others | plain) == 4 and all(re.search(r"-x[0-9a-f]{6}\.pt$", n) for n in others)


def test_resume_refuses_a_checkpoint_trained_with_another_optimizer_or_augmentation(tiny_data, tmp_path):
    run(tiny_data, small_config(epochs=1), checkpoint=tmp_path / "c.pt")
    for other in (dict(optimizer="adam"), dict(dropout_p=0.0), dict(weight_decay=0.0)):
        with pytest.raises(CheckpointError, match=f"{next(iter(other))}="):
            run(tiny_data, small_config(epochs=1, **other), checkpoint=tmp_path / "c.pt", resume=True)


def test_only_training_is_compiled_and_the_compile_time_is_recorded(tiny_data, monkeypatch):
    """fit with compile on (the compiled function simulated, as no GPU is here): every call through the
    compiled function is a training step; validation and test run the eager model. The first compiled
    step's duration is kept apart from the epochs' (a stand-in clock that only the compiled steps move: 7 s
    for the first, compiling, and 0.5 s for each after it)."""
    from types import SimpleNamespace

    from course_utils import training

    calls, now = [], [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def fake_compiled(model, device, log):
        def through_compiled(x):
            calls.append(model.training)
            now[0] += 7.0 if len(calls) == 1 else 0.5
            return model(x)
        return training.CompileGuard(model, through_compiled, log)

    monkeypatch.setattr(training, "compiled", fake_compiled)
    config = small_config(epochs=2, compile=True)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    val_calls = []
    model = tiny_model()
    model.register_forward_hook(lambda m, a, o: val_calls.append(m.training))
    h = fit(model, train, test, config, CPU, progress=False, log=None, val_loader=test)
    assert len(calls) == 2 * len(train) and all(calls)                # training steps only, all in train mode
    assert val_calls.count(False) == 2 * len(test) + len(test)         # eval: val twice, test once, eagerly
    steps = len(train)
    assert h.compile_seconds == pytest.approx(7.0)                         # the first step alone
    assert h.train_seconds == pytest.approx([7.0 + 0.5 * (steps - 1), 0.5 * steps])   # inside epoch 1's time
    assert h.seconds == pytest.approx(h.train_seconds)                    # evaluation moved no stand-in clock


def test_compiled_cuda_runs_keep_one_batch_shape_and_let_cudnn_pick_kernels(tiny_data, monkeypatch):
    """run_training on a (simulated) CUDA device: the training loader drops its last partial batch when
    compiling, and cuDNN's autotuner is on. The run is stopped as soon as the loaders are built."""
    from course_utils import experiment

    seen = {}

    class Built(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(experiment, "get_device", lambda name=None: torch.device("cuda"))
    monkeypatch.setattr(experiment, "make_loaders", capture)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for compile_, drop in ((True, True), (False, False)):
        with pytest.raises(Built):
            experiment.run_training("cifarnet", small_config(compile=compile_, validation=False), data=tiny_data,
                                    progress=False, log=None)
        assert seen["drop_last"] is drop
    assert torch.backends.cudnn.benchmark is True
    # asked for deterministic kernels, the run leaves cuDNN's autotuner off
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    with pytest.raises(Built):
        experiment.run_training("cifarnet", small_config(validation=False), data=tiny_data, progress=False, log=None)
    assert torch.backends.cudnn.benchmark is False
    # and on a CPU nothing is dropped, whatever the config says
    monkeypatch.setattr(experiment, "get_device", lambda name=None: torch.device("cpu"))
    with pytest.raises(Built):
        experiment.run_training("cifarnet", small_config(compile=True, validation=False), data=tiny_data,
                                progress=False, log=None)
    assert seen["drop_last"] is False


def test_a_failed_record_write_keeps_the_previous_record(tiny_data, tmp_path, monkeypatch):
    """The run record is written like the checkpoint: to a temporary file, then renamed. A failure at the
    rename (a full disk, a killed process) leaves no half-written record, and the previous run's record
    whole: a fresh run first keeps that run aside, and a failure there leaves it where it was."""
    from course_utils import experiment

    config, runs = small_config(epochs=1, validation=False), tmp_path / "runs"
    first = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=runs)
    before = first.record_path.read_text()
    assert json.loads(before)["epochs"] == 1
    rename = os.replace

    checkpoint = first.checkpoint.read_bytes()

    def fails_for(names):
        def replace(src, dst, *args, **kwargs):
            if any(str(dst).endswith(n) for n in names):
                raise OSError("disk full")
            return rename(src, dst, *args, **kwargs)
        return replace

    # the checkpoint cannot be kept aside: the record, moved first, comes back; nothing else changes
    monkeypatch.setattr(os, "replace", fails_for([".pt"]))
    with pytest.raises(OSError, match="disk full"):
        experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                checkpoint_dir=runs)
    assert first.record_path.read_text() == before and first.checkpoint.read_bytes() == checkpoint
    assert sorted(p.name for p in runs.iterdir()) == sorted([first.record_path.name, first.checkpoint.name])
    # the new run's own record cannot be written: the previous run is whole, aside, and no temporary file is left
    monkeypatch.setattr(os, "replace", fails_for([first.record_path.name]))
    with pytest.raises(OSError, match="disk full"):
        experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                checkpoint_dir=runs)
    kept = sorted(runs.glob("*.finished-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == before and kept[0].with_suffix(".pt").read_bytes() == checkpoint
    assert sorted(p.name for p in runs.iterdir()) == sorted([kept[0].name, kept[0].with_suffix(".pt").name,
                                                             first.checkpoint.name])


def test_a_finished_run_read_back_elsewhere_keeps_the_record_of_the_machine_that_trained_it(tiny_data, tmp_path):
    """``resume`` on a finished run trains nothing: its record keeps the device, threads, precision,
    versions and times of the call that trained it (here: a record as a T4 would have written it) and
    adds when it was read back; a call that trains epochs writes its own."""
    from course_utils import experiment

    config, runs = small_config(epochs=1, validation=False), tmp_path / "runs"
    first = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=runs)
    elsewhere = dict(json.loads(first.record_path.read_text()), device="cuda", device_name="Tesla T4", threads=4,
                     precision="fp16 + GradScaler", layout="contiguous", versions={"torch": "2.9.0", "python": "3.12.1"},
                     wall_seconds_this_call=12.5, finished_at="2026-11-30T10:00:00+0000")
    first.record_path.write_text(json.dumps(elsewhere))
    again = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=runs, resume=True)
    record = json.loads(again.record_path.read_text())
    assert {k: record[k] for k in experiment.TRAINED_BY} == {k: elsewhere[k] for k in experiment.TRAINED_BY}
    assert record["read_back_at"] and record["final_test_acc"] == elsewhere["final_test_acc"]
    assert record["history"] == elsewhere["history"]
    # an older record without some of the fields: those read None, not this machine's
    first.record_path.write_text(json.dumps({k: v for k, v in elsewhere.items() if k not in ("loader", "versions")}))
    experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                            checkpoint_dir=runs, resume=True)
    record = json.loads(again.record_path.read_text())
    assert record["loader"] is None and record["versions"] is None and record["device_name"] == "Tesla T4"
    # a record of another state of the run (stale: written when it was interrupted) is not taken for it
    first.record_path.write_text(json.dumps(dict(elsewhere, epochs=0, interrupted=True)))
    experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                            checkpoint_dir=runs, resume=True)
    record = json.loads(again.record_path.read_text())
    assert record["device_name"] != "Tesla T4" and record["threads"] == torch.get_num_threads()
    assert "read_back_at" not in record

    longer = replace(config, epochs=2)   # another run (its own checkpoint): trained here, recorded as such
    fresh = experiment.run_training("cifarnet", longer, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=runs)
    record = json.loads(fresh.record_path.read_text())
    assert record["device"] == "cpu" and record["threads"] == torch.get_num_threads() and "read_back_at" not in record
    assert record["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("asked, device_decides, layout", [(True, True, "channels_last"),
                                                          (False, True, "contiguous"),
                                                          (True, False, "contiguous")])
def test_the_record_says_which_memory_layout_the_run_used(tiny_data, tmp_path, monkeypatch, asked, device_decides, layout):
    """config.channels_last asks; the device decides (runtime.channels_last_on: never on MPS). The record
    names the layout the run used, and it is the one the trained model is in, so an MPS run's record does not
    read as channels-last from its config."""
    from course_utils import experiment, training

    seen = []
    if not device_decides:   # MPS's answer on this CPU: no MPS here, so its decision is stood in for
        def decides(device, wanted):
            seen.append(wanted)
            return False
        monkeypatch.setattr(training, "channels_last_on", decides)
    run = experiment.run_training("cifarnet", small_config(epochs=1, validation=False, channels_last=asked),
                                  device="cpu", data=tiny_data, progress=False, log=None, checkpoint_dir=tmp_path)
    record = json.loads(run.record_path.read_text())
    assert record["layout"] == layout and record["config"]["channels_last"] is asked
    assert seen[:1] == ([] if device_decides else [asked])
    kernels = [m.weight for m in run.model.modules()   # (a depthwise kernel, one input channel, is both layouts)
               if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 and m.weight.shape[1] > 1]
    trained_in = {"channels_last" if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                  else "contiguous" for w in kernels}
    assert trained_in == {layout}   # what fit did to the model, not only what the record says


@pytest.mark.parametrize("settings, message", [
    (dict(lr=float("inf")), "lr must be a positive, finite number"),
    (dict(lr=float("nan")), "lr must be a positive, finite number"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
    (dict(momentum=1.5), "momentum must be a finite number from 0 to 1, got 1.5"),
    (dict(dropout_p=-0.1), "dropout_p must be a finite number from 0 to 1"),
    (dict(label_smoothing=float("inf")), "label_smoothing must be a finite number"),
    (dict(seed=-5), "seed must be 0 or more, got -5"),
    (dict(pct_start=0.8), "pct_start must be a finite number from 0 to 0.5, got 0.8"),   # not capped in silence
])
def test_train_config_rejects_impossible_numbers_naming_them(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**settings)


def test_a_non_finite_test_loss_stops_training_like_a_non_finite_training_loss(tiny_data):
    """Training stays finite, but the evaluation sees NaN: the run stops with the same message instead of
    ending with a NaN test loss and success."""
    config = small_config(epochs=2, validation=False)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    model = tiny_model()
    model.register_forward_hook(lambda m, a, out: out if m.training else out * float("nan"))
    with pytest.raises(TrainingDivergedError, match="the test loss became nan; lower the learning rate"):
        fit(model, train, test, config, CPU, progress=False, log=None)


def test_a_real_torch_compile_failure_falls_back_to_eager():
    """Not a fake: torch.compile with a backend that fails when dynamo hands it the graph, as inductor does
    without a C compiler or on an unsupported GPU. The guard catches the real error at the first call."""
    from course_utils import training

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no working C compiler found")

    torch._dynamo.reset()
    torch.manual_seed(0)
    model, notes = nn.Linear(3, 2), []
    guarded = training.CompileGuard(model, torch.compile(model, backend=broken_backend), notes.append)
    x = torch.randn(4, 3)
    assert torch.equal(guarded(x), model(x)) and guarded.state == "eager"
    assert len(notes) == 1 and "torch.compile failed at the first step" in notes[0]
    assert "no working C compiler found" in notes[0]
    # and a compile that works (dynamo tracing with the eager backend) is used, and its time kept
    torch._dynamo.reset()
    working = training.CompileGuard(model, torch.compile(model, backend="eager"), notes.append)
    assert torch.allclose(working(x), model(x)) and working.state == "compiled"
    assert working.first_call_seconds is not None and len(notes) == 1


@pytest.mark.parametrize("name", ["cifarnet", "cifarnet_res20", "baseline", "cifarnet10", "cifarnet_cbam"])
def test_a_compiled_model_is_traced_once_for_one_input_shape(name):
    """The models' input checks run eagerly only: min_input_size caches its answer on the model, and a
    graph traced through that first call would guard on the attribute and be traced again at the second
    step (a second full compile on a GPU). Dynamo with a counting backend, on the CPU."""
    from torch._dynamo.testing import CompileCounter

    from course_utils.models import get_model

    torch._dynamo.reset()
    counter = CompileCounter()
    model = get_model(name).train()
    fn = torch.compile(model, backend=counter, dynamic=False)
    for _ in range(3):
        fn(torch.randn(2, 3, 32, 32))
    assert counter.frame_count == 1
    with pytest.raises(ValueError, match="needs images of at least"):   # the eager call still checks
        model(torch.randn(1, 3, 4, 4))
    torch._dynamo.reset()


def test_compiling_asks_for_static_shapes_and_survives_a_torch_compile_that_raises(monkeypatch):
    """On a (simulated) CUDA device with Triton: one static graph per image size (crops, then whole
    images), and if torch.compile itself raises (an unsupported Python, say), one note and the eager model."""
    import importlib.util

    from course_utils import training

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: object() if mod == "triton" else real(mod, *a))
    asked = {}
    monkeypatch.setattr(torch, "compile", lambda model, **kw: asked.update(kw) or model)
    model, notes = tiny_model(), []
    guarded = training.compiled(model, torch.device("cuda"), notes.append)
    assert isinstance(guarded, training.CompileGuard) and asked == {"dynamic": False} and notes == []

    def unsupported(model, **kw):
        raise RuntimeError("Python 3.14+ not yet supported for torch.compile\nmore detail")
    monkeypatch.setattr(torch, "compile", unsupported)
    assert training.compiled(model, torch.device("cuda"), notes.append) is model
    assert notes == ["torch.compile is not available here (RuntimeError: Python 3.14+ not yet supported for "
                     "torch.compile); training uncompiled (--no-compile skips compiling)"]


def test_cudas_autotuner_is_on_for_training_unless_deterministic_kernels_were_asked_for(monkeypatch):
    from course_utils.runtime import seed_everything, use_cudnn_autotuner

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    assert use_cudnn_autotuner("cpu") is False and torch.backends.cudnn.benchmark is False
    assert use_cudnn_autotuner("cuda") is True and torch.backends.cudnn.benchmark is True
    seed_everything(0, deterministic=True)                   # the README's way to ask for reproducible kernels
    assert use_cudnn_autotuner(torch.device("cuda", 0)) is False
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True


def test_a_fresh_run_keeps_an_interrupted_one_and_resume_without_a_checkpoint_says_so(tiny_data, tmp_path):
    """Nothing is lost: a fresh run (the default) over an interrupted run's checkpoint moves that
    checkpoint and its record aside first; resume with no checkpoint of these settings is an error naming
    the checkpoints that are there, not a silent fresh start."""
    from course_utils import experiment

    config = small_config(epochs=2, validation=False)
    first = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=tmp_path)
    state = load_checkpoint(first.checkpoint)
    state["epoch"], state["history"] = 1, {k: v[:1] for k, v in state["history"].items() if isinstance(v, list)}
    atomic_save(state, first.checkpoint)                    # as if stopped after epoch 1 of 2
    lines = []
    again = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False,
                                    log=lines.append, checkpoint_dir=tmp_path)
    kept = tmp_path / f"{first.checkpoint.stem}.interrupted-e1.pt"
    assert load_checkpoint(kept)["epoch"] == 1 and kept.with_suffix(".json").is_file()
    assert lines[0] == (f"kept the interrupted run's checkpoint (epoch 1 of 2) as {kept}; this call starts anew "
                        "(resume would have continued it: --resume, or resume=True)")
    assert load_checkpoint(again.checkpoint)["epoch"] == 2
    lines.clear()                                           # a finished run is kept too, and trained again
    finished = json.loads(again.checkpoint.with_suffix(".json").read_text())
    third = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False,
                                    log=lines.append, checkpoint_dir=tmp_path)
    kept = sorted(tmp_path.glob(f"{first.checkpoint.stem}.finished-*.pt"))
    assert len(kept) == 1 and load_checkpoint(kept[0])["epoch"] == 2
    assert json.loads(kept[0].with_suffix(".json").read_text()) == finished       # its record, unchanged
    assert lines[0] == (f"kept the finished run's checkpoint (2 epochs, final test accuracy "
                        f"{finished['final_test_acc']:.2f}%) as {kept[0]}; this call trains anew (resume would have "
                        "read it back: --resume, or resume=True)")
    assert load_checkpoint(third.checkpoint)["epoch"] == 2
    experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                            checkpoint_dir=tmp_path)          # again within the same second: a second copy
    assert len(list(tmp_path.glob(f"{first.checkpoint.stem}.finished-*.pt"))) == 2
    with pytest.raises(CheckpointError, match=r"resume: no checkpoint of this run at .*-e3-.*other settings are "
                                              r"another run\)\. Checkpoints of cifarnet there: cifarnet-.*\.pt.*start "
                                              r"anew without resume"):
        experiment.run_training("cifarnet", replace(config, epochs=3), device="cpu", data=tiny_data, resume=True,
                                progress=False, log=None, checkpoint_dir=tmp_path)


def test_a_run_stopped_or_diverged_before_its_first_epoch_does_not_claim_a_checkpoint(tiny_data, tmp_path):
    config = small_config(epochs=2)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    lines = []
    h = fit(tiny_model(), StopAfter(train, 1), test, config, CPU, checkpoint=tmp_path / "c.pt", progress=False,
            log=lines.append)
    assert h.interrupted and not (tmp_path / "c.pt").exists()
    assert lines == ["interrupted before the first epoch finished: nothing was saved; run again from the start."]
    model = tiny_model()
    model.register_forward_hook(lambda m, args, out: out * float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"^epoch 1: .*lower the learning rate.*\. No epoch finished, so "
                                                    r"nothing was saved\.$"):
        fit(model, train, test, config, CPU, checkpoint=tmp_path / "c.pt", progress=False, log=None)


def test_resume_refuses_another_number_of_steps_per_epoch_naming_compile(tiny_data, tmp_path):
    """A checkpoint's schedule was laid out for its loader's steps per epoch; on CUDA torch.compile drops
    each epoch's last partial batch, so a resume with --compile switched would run OneCycle past its end
    in the last epoch. Refused up front, by the saved count, and by OneCycle's total in older checkpoints."""
    config = small_config(epochs=2)
    ckpt = tmp_path / "c.pt"
    run(tiny_data, config, checkpoint=ckpt)
    dropped, test = make_loaders(tiny_data, config.batch_size, seed=config.seed, drop_last=True)
    whole, _ = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    assert len(dropped) == len(whole) - 1                      # the tiny set does not divide into batches
    assert load_checkpoint(ckpt)["steps_per_epoch"] == len(whole)
    with pytest.raises(CheckpointError, match=rf"ran {len(whole)} steps per epoch and this loader gives "
                                              rf"{len(dropped)}.*same training images.*keeps or drops each epoch's last partial batch"):
        fit(tiny_model(), dropped, test, config, CPU, progress=False, log=None, resume=ckpt)
    older = load_checkpoint(ckpt)
    del older["steps_per_epoch"]                               # a checkpoint written before the count was saved
    atomic_save(older, ckpt)
    with pytest.raises(CheckpointError, match=rf"ran {len(whole)} steps per epoch"):
        fit(tiny_model(), dropped, test, config, CPU, progress=False, log=None, resume=ckpt)
    h = fit(tiny_model(), whole, test, config, CPU, progress=False, log=None, resume=ckpt)   # the same loader: read back
    assert h.epoch == [1, 2]


def test_resume_refuses_a_checkpoint_of_another_seed(tiny_data, tmp_path):
    """Another seed reshuffles every later epoch and, on a subset, draws other images: not a continuation."""
    run(tiny_data, small_config(epochs=1), checkpoint=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"trained with seed=3; resume with the same settings \(got seed=4\)"):
        run(tiny_data, small_config(epochs=1, seed=4), checkpoint=tmp_path / "c.pt", resume=True)


def test_a_loader_with_no_batches_is_an_error_naming_the_fix(tiny_data):
    """Fewer images than one batch with the last partial batch dropped (compiling on CUDA does that) would
    train for no steps and report a loss of 0.0: refused before anything trains."""
    config = small_config(epochs=1, batch_size=4096)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed, drop_last=True)
    assert len(train) == 0
    with pytest.raises(ValueError, match=rf"no batches: {len(train.dataset)} training images at batch size 4096 and "
                                         r"its last partial batch dropped.*--batch-size.*--subset.*--no-compile"):
        fit(tiny_model(), train, test, config, CPU, progress=False, log=None)
    with pytest.raises(ValueError, match="gave no batches"):
        train_one_epoch(tiny_model(), train, torch.optim.SGD(tiny_model().parameters(), lr=0.1), CPU, progress=False)
    # and the same through the crops-then-whole-images loader that the course recipe trains with
    from course_utils.data import PhasedLoader
    phased = PhasedLoader([(0, train), (1, make_loaders(tiny_data, 4096, seed=3, drop_last=True)[0])])
    assert len(phased) == 0 and phased.drop_last
    with pytest.raises(ValueError, match=r"4096 and its last partial batch dropped"):
        fit(tiny_model(), phased, test, config, CPU, progress=False, log=None)


def test_evaluate_refuses_a_loss_that_averages():
    """evaluate sums per image and divides by the images: a mean-reducing loss would be divided twice."""
    x, y = tiny_batch(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match=r"reduction='sum'.*not one with reduction='mean'"):
        evaluate(tiny_model(), loader, CPU, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))
    summed = evaluate(tiny_model().eval(), loader, CPU, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    assert summed[0] > 0


def test_an_interrupt_during_the_checkpoint_write_leaves_history_and_checkpoint_at_one_epoch(tiny_data, tmp_path,
                                                                                          monkeypatch):
    """Ctrl-C while epoch 2's checkpoint is being written: the file keeps epoch 1, and so do the returned
    history and the log's 'interrupted after' line, so the run record never claims an epoch that is not saved."""
    from course_utils import training

    writes = []

    def save_then_stop(path, model, **state):
        writes.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        return save_checkpoint(path, model, **state)

    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    lines = []
    config = small_config(epochs=3)
    torch.manual_seed(config.seed)
    train, test = make_loaders(tiny_data, config.batch_size, seed=config.seed)
    h = fit(tiny_model(), train, test, config, CPU, checkpoint=tmp_path / "c.pt", progress=False, log=lines.append)
    assert writes == [1, 2] and h.interrupted and h.epoch == [1]
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1 == len(load_checkpoint(tmp_path / "c.pt")["history"]["epoch"])
    assert lines[-1].startswith("interrupted after 1 complete epoch(s)") and sum(l.startswith("epoch") for l in lines) == 1


class _BackwardFails(torch.autograd.Function):
    """The identity forward; a backward that fails as a backward graph's compile can (Inductor compiles it
    at the first backward()), or that takes ``pause`` seconds, as compiling it does: of a stand-in clock's
    time, which ``spend`` advances (no real sleeping)."""

    spend = staticmethod(lambda seconds: None)

    @staticmethod
    def forward(ctx, x, fail, pause):
        ctx.fail, ctx.pause = fail, pause
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.fail:
            raise RuntimeError("backward kernel failed to compile")
        _BackwardFails.spend(ctx.pause)
        return grad, None, None


def test_a_compile_that_fails_in_the_backward_falls_back_and_the_step_is_taken_once(tiny_data):
    """The guard covers the whole first step: a failure in the backward (after the compiled forward has
    returned) turns the run eager, with the one-line note, and the step is taken again eagerly: the weights
    end exactly where an eager run over the same batches ends."""
    from course_utils import training

    torch.manual_seed(0)
    x, y = torch.randn(48, 3, 4, 4), torch.randint(0, 10, (48,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)           # the same batches in the same order
    eager = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    model.load_state_dict(eager.state_dict())
    notes = []
    guard = training.CompileGuard(model, lambda inp: _BackwardFails.apply(model(inp), True, 0.0), notes.append)
    for net in (guard, eager):
        train_one_epoch(net, loader, torch.optim.SGD(net.parameters(), lr=0.5), CPU, progress=False)
    assert guard.state == "eager" and len(notes) == 1
    assert "torch.compile failed at the first step (RuntimeError: backward kernel failed to compile)" in notes[0]
    for a, b in zip(model.parameters(), eager.parameters()):
        assert torch.equal(a, b)


def test_the_first_compiled_steps_time_includes_its_backward(monkeypatch):
    """compile_seconds is the whole first step: a backward that takes 0.3 s (compiling, at the first
    backward) is inside it, and the steps after it run through the compiled function. The clock is a stand-in
    that only the backward moves, so the first step's time is exactly the backward's."""
    from types import SimpleNamespace

    from course_utils import training

    now = [100.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(_BackwardFails, "spend", staticmethod(lambda seconds: now.__setitem__(0, now[0] + seconds)))

    torch.manual_seed(0)
    model, calls = nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), []

    def compiled_fn(inp):
        calls.append(len(calls))
        return _BackwardFails.apply(model(inp), False, 0.3 if len(calls) == 1 else 5.0)

    guard = training.CompileGuard(model, compiled_fn, None)
    loader = DataLoader(TensorDataset(torch.randn(32, 3, 4, 4), torch.randint(0, 10, (32,))), batch_size=16)
    train_one_epoch(guard, loader, torch.optim.SGD(model.parameters(), lr=0.1), CPU, progress=False)
    assert guard.state == "compiled" and len(calls) == 2
    assert guard.first_call_seconds == pytest.approx(0.3)   # the second step's 5 s are not in it


@pytest.mark.parametrize("capability, compiles", [((6, 0), False), ((6, 1), False), ((7, 0), True), ((9, 0), True)])
def test_a_gpu_older_than_triton_supports_trains_uncompiled_with_a_note(monkeypatch, capability, compiles):
    """Triton needs compute capability 7.0: on a P100 (6.0) compiling would trace for minutes and then fail,
    so the model is returned as it is, with one note naming both capabilities and --no-compile."""
    import importlib.util

    from course_utils import training

    model, notes, asked = nn.Linear(2, 2), [], []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: ("compiled", m))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "triton" else None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    result = training.compiled(model, torch.device("cuda:1"), notes.append)
    assert asked == [torch.device("cuda:1")]                     # the card the run uses, not card 0
    if compiles:
        assert isinstance(result, training.CompileGuard) and notes == []
    else:
        assert result is model and len(notes) == 1
        assert notes == [f"torch.compile off: Triton needs compute capability 7.0 or newer, this GPU is "
                         f"{capability[0]}.{capability[1]}; training uncompiled (--no-compile skips this note)"]


def test_a_run_on_cuda_n_makes_its_card_the_current_device(tiny_data, monkeypatch):
    """The loaders' pin-memory thread and torchsummary use the current CUDA device, not the one a run was
    given: fit (and summary) make cuda:N current for their work; on a CPU or a plain 'cuda' nothing is set."""
    from course_utils import inspection, runtime, training

    entered = []

    class Recorder:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append("exit")

    monkeypatch.setattr(torch.cuda, "device", Recorder)
    for name in ("cpu", "cuda", "mps"):
        with runtime.cuda_device_context(name):
            pass
    assert entered == []
    with runtime.cuda_device_context("cuda:1"):
        assert entered == [torch.device("cuda:1")]
    assert entered[-1] == "exit"
    # fit enters it around its epochs with the run's device
    seen = []
    monkeypatch.setattr(training, "cuda_device_context", lambda d: seen.append(torch.device(d)) or runtime.contextlib.nullcontext())
    run(tiny_data, small_config(epochs=1))
    assert seen == [CPU]
    # and summary with the model's device
    import torchsummary
    monkeypatch.setattr(inspection, "cuda_device_context", lambda d: seen.append(("summary", torch.device(d)))
                        or runtime.contextlib.nullcontext())
    monkeypatch.setattr(torchsummary, "summary", lambda model, size, device: print("table"))
    monkeypatch.setattr(inspection, "_true_totals", lambda text, total, trainable: text)
    inspection.summary(nn.Linear(2, 2), (2,), print_table=False)
    assert seen[-1] == ("summary", CPU)


def test_a_results_predictions_are_its_own_model_s_computed_once_and_only_when_finished(tiny_data, tmp_path, monkeypatch):
    """Notebook 11's per-class, confusion-matrix and mistakes cells read ``result.predictions()``: the test
    set's predictions of that result's model with the run's precision setting, computed once per result (a
    re-drawn figure costs no pass), refused for a run stopped early, and another result (the training cell
    run again) never hands back the first one's."""
    from course_utils import experiment
    from course_utils.experiment import RunNotFinished
    from course_utils.training import predict

    config = small_config(epochs=1, validation=False, amp=False)
    result = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                     checkpoint_dir=tmp_path / "runs")
    calls = []
    monkeypatch.setattr(experiment, "predict", lambda *a, **k: calls.append(k) or predict(*a, **k))
    preds, labels = result.predictions()
    expected_preds, expected_labels = predict(result.model, result.test_loader, CPU)
    assert np.array_equal(preds, expected_preds) and np.array_equal(labels, expected_labels)
    assert len(labels) == len(tiny_data.test_labels) and 100 * (preds == labels).mean() == pytest.approx(
        result.history.final_test_acc, abs=1e-6)
    assert result.predictions()[0] is preds and len(calls) == 1      # kept, not computed again
    assert calls[0]["amp"] is False and calls[0]["channels_last"] == config.channels_last
    other = replace(result, model=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)))
    assert other.predictions()[0] is not preds and len(calls) == 2    # a new result computes its own
    result.history.interrupted = True
    with pytest.raises(RunNotFinished):
        result.predictions()


def test_flip_averaging_of_a_read_back_run_happens_on_the_runs_own_card(tiny_data, tmp_path, monkeypatch):
    """On ``cuda:1`` the test loader's pin-memory thread pins on the current card. ``fit`` makes ``cuda:1``
    current; a finished run read back (``resume=True``) trains no epoch, so the flip-averaged score after it
    must make it current too, or it creates a context on ``cuda:0``, the card the learner avoided. The CPU
    stands in: the context entered for the run's device is recorded."""
    from conftest import CardContext

    from course_utils import experiment

    config, runs = small_config(epochs=1, validation=False), tmp_path / "runs"
    experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                            checkpoint_dir=runs)
    card, seen = CardContext(), []
    real = experiment.evaluate

    def evaluate(*args, tta=False, **kwargs):
        if tta:
            seen.append(list(card.current))
        return real(*args, tta=tta, **kwargs)

    monkeypatch.setattr(experiment, "cuda_device_context", card)
    monkeypatch.setattr(experiment, "evaluate", evaluate)
    again = experiment.run_training("cifarnet", config, device="cpu", data=tiny_data, progress=False, log=None,
                                    checkpoint_dir=runs, resume=True)
    assert len(again.history) == 1 and seen == [[CPU]]


def test_training_with_a_scaler_shows_a_once_only_warning_once_not_every_step():
    """A warnings filter set on every step would reset Python's record of the warnings already shown, so a
    deprecated call in a learner's model would print on every batch of every fp16 run. The order warning is
    silenced on the first step only: the model's warning shows on the first step, then once more after that
    step's filter, and never again."""
    import warnings

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_model()

        def forward(self, x):
            warnings.warn("a deprecated call in the learner's model", FutureWarning)
            return self.body(x)

    x, y = tiny_batch(128)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = Noisy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=len(loader))
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")          # once per place in the code, as a notebook shows them
        train_one_epoch(model, loader, optimizer, CPU, scheduler, amp=False, scaler=scaler, progress=False)
    shown = [w for w in seen if "deprecated call" in str(w.message)]
    assert len(loader) == 8 and 1 <= len(shown) <= 2


def test_each_epochs_clock_stops_after_a_wait_for_the_device_inside_the_runs_card_context(tiny_data, monkeypatch):
    """An epoch's two times (training alone, and with evaluation) are read after waiting for the device:
    a GPU runs asynchronously, so a clock read before the wait would time how fast work was queued. And every
    epoch runs inside the run's card context (``cuda_device_context``: on cuda:N the loaders' pin-memory thread
    pins on the current card). The clock, the wait and the context are stood in for (no GPU here); the order
    of the calls is what is checked."""
    import contextlib
    from types import SimpleNamespace

    from course_utils import training

    log, now = [], [0.0]

    def clock():
        log.append("clock")
        now[0] += 1.0
        return now[0]

    @contextlib.contextmanager
    def card(device):
        log.append(("enter", torch.device(device)))
        yield
        log.append("exit")

    def recorded(name, real):
        def call(*args, **kwargs):
            log.append(name)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(training, "synchronize", lambda device: log.append("sync"))
    monkeypatch.setattr(training, "cuda_device_context", card)
    monkeypatch.setattr(training, "train_one_epoch", recorded("train", training.train_one_epoch))
    monkeypatch.setattr(training, "evaluate", recorded("evaluate", training.evaluate))
    _, history = run(tiny_data, small_config(epochs=2))
    epoch = ["clock", "train", "sync", "clock", "evaluate", "sync", "clock"]
    assert log == [("enter", CPU)] + epoch * 2 + ["exit"]
    assert history.train_seconds == [1.0, 1.0] and history.seconds == [2.0, 2.0]
