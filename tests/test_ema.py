"""The weight average (``TrainConfig.ema_decay``): an exponential moving average of the weights, updated
after every step and scored beside the trained weights, through the kit's one training path."""
import json
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

from course_utils import experiment
from course_utils.checkpoint import CheckpointError
from course_utils.config import TrainConfig, parse_setting
from course_utils.training import fit, refresh_batchnorm, train_one_epoch, weight_average

from test_progressive import StopAt, tiny_data, tiny_model, tiny_model_seeded  # noqa: F401 (tiny_data: a fixture)
from test_progressive import config as progressive_config

CPU = torch.device("cpu")


def config(**kw):
    """test_progressive's tiny config (4 epochs, the first 2 on crops) with a validation split and an average."""
    return progressive_config(**{"ema_decay": 0.9, "validation": True, **kw})


def test_the_average_follows_the_formula_step_by_step(tiny_data):
    """After the first step the average is the weights; after each later one decay·average + (1 − decay)·weights.
    BatchNorm's running statistics are not averaged (refresh_batchnorm measures them for the averaged weights)."""
    cfg = config(epochs=1, crop_size=None)
    _, train, _, _ = experiment.prepare(tiny_data, cfg, CPU)
    model = tiny_model_seeded(cfg)
    ema = weight_average(model, 0.9)
    snapshots = []

    def step():
        ema.update_parameters(model)
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_one_epoch(model, train, optimizer, CPU, progress=False, after_step=step)
    assert len(snapshots) == len(train) >= 3
    expected = snapshots[0]
    for weights in snapshots[1:]:
        expected = {k: 0.9 * expected[k] + 0.1 * weights[k] for k in expected}
    averaged = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(averaged[k], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(averaged["head.weight"], model.state_dict()["head.weight"])  # an average, not a copy
    # the statistics are not averaged: the average keeps the trained weights' (refresh_batchnorm replaces them)
    assert all(torch.equal(averaged[k], v) for k, v in model.state_dict().items() if "running" in k)


def test_refresh_batchnorm_measures_the_statistics_of_the_batches_it_is_given():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, momentum=0.1))
    batches = [(torch.randn(4, 2, 5, 5) * 3 + 1, torch.zeros(4)) for _ in range(6)]
    model[1].running_mean.fill_(7.0)
    refresh_batchnorm(model, batches, CPU, batches=5)
    with torch.no_grad():
        outs = [model[0](x) for x, _ in batches[:5]]           # the first 5 batches only
    torch.testing.assert_close(model[1].running_mean, torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0))
    n = outs[0][:, 0].numel()
    unbiased = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_var, unbiased)
    assert model[1].momentum == 0.1 and not model.training and n == 100


def test_no_average_at_decay_zero_and_out_of_range_decays_are_refused():
    assert weight_average(nn.Linear(2, 2), 0.0) is None
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"ema_decay must be a number from 0 .* up to, not including, 1"):
            TrainConfig(ema_decay=bad)
    assert parse_setting("ema_decay=0.999", ("ema_decay",)) == ("ema_decay", 0.999)


def test_a_run_scores_the_average_beside_its_weights_and_reads_the_test_set_once(tiny_data):
    cfg = config()
    lines = []
    run = experiment.train(tiny_model, tiny_data, cfg, CPU, log=lines.append)
    h = run.history
    assert len(h.ema_val_acc) == len(h.ema_val_loss) == len(h.val_acc) == 4
    assert h.ema_test_acc[:3] == [None] * 3 and h.test_acc[:3] == [None] * 3       # the test set read once
    assert h.final_ema_test_acc == h.ema_test_acc[-1] and 0 <= h.final_ema_test_acc <= 100
    assert h.final_ema_val_acc == h.ema_val_acc[-1]
    assert all("EMA val acc" in line for line in lines) and "EMA test acc" in lines[-1]
    plain = experiment.train(tiny_model, tiny_data, config(ema_decay=0.0), CPU, log=None).history
    assert plain.ema_val_acc == [] and plain.ema_test_acc == [] and str(plain.final_ema_val_acc) == "nan"
    # the average only watches: the trained weights' history is the run's without one
    assert plain.train_loss == h.train_loss and plain.val_acc == h.val_acc and plain.test_acc == h.test_acc


def test_an_interrupted_run_resumes_with_its_average_to_the_same_history(tiny_data, tmp_path):
    cfg = config()
    whole = experiment.train(tiny_model, tiny_data, cfg, CPU, log=None).history
    _, train, test, valid = experiment.prepare(tiny_data, cfg, CPU)
    ckpt = tmp_path / "run.pt"
    part = fit(tiny_model_seeded(cfg), StopAt(train, 3), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None,
               val_loader=valid)
    assert part.interrupted and part.epoch == [1, 2]
    resumed = experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True, log=None).history
    assert resumed.ema_val_acc == whole.ema_val_acc and resumed.ema_test_acc == whole.ema_test_acc
    assert resumed.val_acc == whole.val_acc
    with pytest.raises(CheckpointError, match=re.escape("trained with ema_decay=0.9;")):   # not under another average
        experiment.train(tiny_model, tiny_data, config(ema_decay=0.99), CPU, checkpoint=ckpt, resume=True, log=None)


def test_a_checkpoint_without_its_average_is_refused_with_the_fix(tiny_data, tmp_path):
    cfg = config(epochs=2)
    _, train, test, valid = experiment.prepare(tiny_data, cfg, CPU)
    ckpt = tmp_path / "run.pt"
    fit(tiny_model_seeded(cfg), StopAt(train, 2), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None,
        val_loader=valid)
    state = torch.load(ckpt, weights_only=True)
    state["ema"] = {}
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="holds no weight average.*start the run afresh"):
        experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True, log=None)


def test_the_average_names_its_runs_and_leaves_earlier_names_alone():
    course = TrainConfig()
    assert experiment.checkpoint_path("cifarnet", course).name == "cifarnet-full-e40-s1.pt"
    averaged = experiment.checkpoint_path("cifarnet", TrainConfig(ema_decay=0.999)).name
    assert re.fullmatch(r"cifarnet-full-e40-s1-x[0-9a-f]{6}\.pt", averaged)
    # a record saved before the setting existed reads as a run without an average
    assert TrainConfig.from_dict({k: v for k, v in course.to_dict().items() if k != "ema_decay"}).ema_decay == 0.0
    text = TrainConfig(ema_decay=0.999).describe("cpu")
    assert "an EMA of the weights (decay 0.999, about the last 1,000 steps)" in text
    assert "EMA" not in course.describe("cpu")


def test_run_training_records_the_averages_final_accuracies(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "load_cifar10", lambda *a, **k: tiny_data)
    run = experiment.run_training("cifarnet", config(epochs=2, crop_size=None), device="cpu", progress=False,
                                  log=None, checkpoint_dir=tmp_path)
    record = json.loads(run.record_path.read_text())
    assert record["final_ema_val_acc"] == run.history.ema_val_acc[-1]
    assert record["final_ema_test_acc"] == run.history.ema_test_acc[-1]
    assert record["config"]["ema_decay"] == 0.9


def test_the_cli_refuses_a_decay_of_one_before_training(image_folder, tmp_path):
    out = subprocess.run([sys.executable, "-m", "course_utils", "train", "--set", "ema_decay=1", "--epochs", "1",
                          "--data-dir", str(image_folder), "--device", "cpu", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "argument --set: ema_decay must be a number from 0" in out.stderr  # argparse
    assert "epoch" not in out.stdout


def test_the_cli_reports_the_average_beside_the_trained_weights(image_folder, tmp_path):
    out = subprocess.run([sys.executable, "-m", "course_utils", "train", "--data-dir", str(image_folder), "--epochs", "2",
                          "--batch-size", "16", "--device", "cpu", "--no-progress", "--set", "ema_decay=0.9"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "; a weight average (EMA 0.9) scored beside" in out.stdout
    report = re.search(r"the weight average \(EMA\), beside: validation (\d+\.\d\d)%, test (\d+\.\d\d)%", out.stdout)
    record = json.loads(open(re.search(r"run record: (\S+)", out.stdout)[1]).read())
    assert report and float(report[2]) == pytest.approx(record["final_ema_test_acc"], abs=0.005)
    assert float(report[1]) == pytest.approx(record["final_ema_val_acc"], abs=0.005)


def test_an_update_moves_nothing_between_devices_and_reads_nothing_back():
    """AveragedModel copied its CPU step counter to the GPU at every step, and such a copy waits for the
    GPU's queued work. Here, on a model on the 'meta' device (a stand-in for a GPU: no data), every op of
    an update is logged: none copies between devices, none reads a value off the model's device. (Only
    ops on single tensors are inspected, not the fused _foreach_ ops, whose tensors all sit on one device
    here; AveragedModel's counter copy, `n_averaged.to(device)`, is such a single-tensor op, and fails it.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.crossings, self.reads = [], []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            name = func.overloadpacket.__name__
            if name == "_local_scalar_dense" and tensors[0].device.type != "cpu":
                self.reads.append(name)
            if name in ("_to_copy", "copy_", "_copy_from") and len({t.device.type for t in tensors}
                                                                | ({torch.device(kwargs["device"]).type}
                                                                   if kwargs.get("device") else set())) > 1:
                self.crossings.append(name)
            return func(*args, **(kwargs or {}))

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).to("meta")
    ema = weight_average(model, 0.9)
    with Log() as log:
        for _ in range(3):
            ema.update_parameters(model)
    assert log.crossings == [] and log.reads == []
    assert int(ema.n_averaged) == 3 and ema.n_averaged.device.type == "cpu"
    assert all(p.device.type == "meta" for p in ema.module.parameters())


def test_the_average_keeps_averaged_models_state_dict_layout():
    """Checkpoints written when the kit used torch.optim.swa_utils.AveragedModel load into the average,
    and the other way round; moving the average moves its weights, not its CPU step counter."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    ours = weight_average(model, 0.9)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        theirs.update_parameters(model)
        ours.update_parameters(model)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)
    fresh = weight_average(model, 0.9)
    fresh.load_state_dict(theirs.state_dict())
    assert int(fresh.n_averaged) == 3
    fresh.to(torch.float64)
    assert fresh.n_averaged.dtype == torch.long and fresh.module[0].weight.dtype == torch.float64
    fresh.to("meta")                               # moving it (to a GPU, say) leaves the counter on the CPU
    assert fresh.n_averaged.device.type == "cpu" and int(fresh.n_averaged) == 3
    assert fresh.module[0].weight.device.type == "meta"
    x = torch.randn(5, 3)
    ours.eval()
    torch.testing.assert_close(ours(x), ours.module(x))                 # called, it is the averaged network
    with pytest.raises(ValueError, match="average the network it was built from"):
        ours.update_parameters(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="0 and 0: average the network it was built from"):
        ours.update_parameters(nn.ReLU())
    empty = weight_average(nn.ReLU(), 0.9)          # nothing to average: a step only counts
    empty.update_parameters(nn.ReLU())
    assert int(empty.n_averaged) == 1
