"""The clean tail (``TrainConfig.clean_fraction``): the last epochs train on whole images with flips only,
after the crops and the augmented whole images, through the kit's one training path."""
import json
import re
from pathlib import Path

import pytest
import torch

from course_utils import experiment
from course_utils.config import TrainConfig
from course_utils.checkpoint import CheckpointError, load_checkpoint
from course_utils.data import PhasedLoader, make_loaders
from course_utils.experiment import checkpoint_path
from course_utils.training import fit

from test_progressive import StopAt, tiny_data, tiny_model, tiny_model_seeded  # noqa: F401 (tiny_data: a fixture)
from test_progressive import config as progressive_config

CPU = torch.device("cpu")
RUNS = Path(__file__).resolve().parents[1] / "figures" / "runs"


def config(**kw):
    """test_progressive's tiny config (4 epochs, the first 2 on crops) with a tail of the last epoch."""
    return progressive_config(**{"clean_fraction": 0.25, **kw})


def _augmentations(loader):
    """What a loader's pipeline does: {transform name: probability}."""
    return {type(t).__name__: t.p for t in loader.dataset.transform.transforms}


def test_the_phases_are_crops_then_augmented_whole_images_then_clean_whole_images(tiny_data):
    cfg = config()
    assert (cfg.crop_epochs, cfg.clean_epochs) == (2, 1)
    _, train, _, _ = experiment.prepare(tiny_data, cfg, CPU)
    seen = []
    for epoch in range(4):
        train.set_epoch(epoch)
        seen.append(_augmentations(train))
    crops = {"HorizontalFlip": 0.5, "Affine": 0.5, "CoarseDropout": 0.25, "RandomCrop": 1.0}
    whole = {"HorizontalFlip": 0.5, "Affine": 0.5, "CoarseDropout": 0.25}
    clean = {"HorizontalFlip": 0.5, "Affine": 0.0, "CoarseDropout": 0.0}
    assert seen == [crops, crops, whole, clean]


def test_training_sees_the_clean_tail_on_whole_images(tiny_data, monkeypatch):
    served = []
    set_epoch = PhasedLoader.set_epoch

    def record(self, epoch):
        set_epoch(self, epoch)
        served.append(_augmentations(self))

    monkeypatch.setattr(PhasedLoader, "set_epoch", record)
    model = tiny_model()
    sides = []
    model.register_forward_pre_hook(lambda m, args: sides.append(args[0].shape[-1]) if m.training else None)
    history = experiment.train(model, tiny_data, config(), CPU, log=None).history
    steps = -(-len(tiny_data.train_labels) // config().batch_size)   # batches per epoch, the last one partial
    assert steps == 4 and len(tiny_data.train_labels) == 60
    assert sides == [24] * (2 * steps) + [32] * (2 * steps)
    assert [(p["Affine"], p["CoarseDropout"], "RandomCrop" in p) for p in served] == \
        [(0.5, 0.25, True), (0.5, 0.25, True), (0.5, 0.25, False), (0.0, 0.0, False)]
    assert history.epoch == [1, 2, 3, 4]


def test_a_clean_tail_of_all_the_whole_image_epochs_replaces_them(tiny_data):
    _, train, _, _ = experiment.prepare(tiny_data, config(clean_fraction=0.5), CPU)
    assert [start for start, _ in train.phases] == [0, 2]
    train.set_epoch(2)
    assert _augmentations(train)["Affine"] == 0.0
    _, train, _, _ = experiment.prepare(tiny_data, config(crop_size=None, clean_fraction=0.5), CPU)
    assert [start for start, _ in train.phases] == [0, 2]           # whole augmented images, then clean
    assert [_augmentations(loader)["CoarseDropout"] for _, loader in train.phases] == [0.25, 0.0]


def test_a_clean_tail_that_reaches_into_the_crops_shortens_them(tiny_data):
    cfg = config(crop_fraction=0.75, clean_fraction=0.5)
    assert (cfg.crop_epochs, cfg.clean_epochs) == (2, 2)
    _, train, _, _ = experiment.prepare(tiny_data, cfg, CPU)
    assert [(start, "RandomCrop" in _augmentations(loader), _augmentations(loader)["Affine"])
            for start, loader in train.phases] == [(0, True, 0.5), (2, False, 0.0)]
    assert "random 24x24 crops for epochs 1-2, whole images for the last 2 (the clean tail's 2 among them)" \
        in cfg.describe("cpu")


@pytest.mark.parametrize("settings", [dict(clean_fraction=1.0), dict(crop_size=None, clean_fraction=1.0),
                                      dict(crop_fraction=0.0, clean_fraction=1.0), dict(epochs=1, clean_fraction=1.0)])
def test_a_clean_tail_of_every_epoch_trains_only_on_clean_whole_images(tiny_data, settings):
    cfg = config(**settings)
    assert cfg.crop_epochs == 0 and cfg.clean_epochs == cfg.epochs
    _, train, _, _ = experiment.prepare(tiny_data, cfg, CPU)
    assert _augmentations(train) == {"HorizontalFlip": 0.5, "Affine": 0.0, "CoarseDropout": 0.0}


def test_a_run_interrupted_before_the_clean_tail_resumes_to_the_same_history(tiny_data, tmp_path):
    cfg = config()
    whole = experiment.train(tiny_model, tiny_data, cfg, CPU, log=None).history
    _, train, test, _ = experiment.prepare(tiny_data, cfg, CPU)
    ckpt = tmp_path / "run.pt"
    part = fit(tiny_model_seeded(cfg), StopAt(train, 4), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None)
    assert part.interrupted and part.epoch == [1, 2, 3]
    resumed = experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True, log=None).history
    assert resumed.train_loss == whole.train_loss and resumed.test_acc == whole.test_acc
    with pytest.raises(CheckpointError, match=re.escape("clean_fraction=0.25")):   # not continued under another tail
        experiment.train(tiny_model, tiny_data, config(clean_fraction=0.5), CPU, checkpoint=ckpt, resume=True, log=None)


def test_clean_epochs_round_down_and_are_described():
    assert [TrainConfig(epochs=e, clean_fraction=0.1).clean_epochs for e in (5, 10, 40, 60)] == [0, 1, 4, 6]
    text = TrainConfig(epochs=60, clean_fraction=0.25).describe("cpu")
    assert "clean tail: the last 15 epochs on whole images with flips only" in text
    assert "clean tail: the last 50 epochs" in TrainConfig.recipe("long", clean_fraction=0.25).describe("cpu")   # of 200
    assert "clean tail: the last epoch on whole images" in TrainConfig(epochs=10, clean_fraction=0.1).describe("cpu")
    assert "clean tail" not in TrainConfig.recipe("long").describe("cpu")


@pytest.mark.parametrize("value", [-0.1, 1.5, float("inf"), float("nan")])
def test_bad_clean_settings_are_refused_naming_them(value):
    with pytest.raises(ValueError, match=re.escape("clean_fraction must be a finite number from 0 to 1, got")):
        TrainConfig(clean_fraction=value)


def test_the_cli_sets_the_clean_tail_for_any_recipe(monkeypatch):
    """What `train` hands to run_training: each recipe's own settings, with the tail on top."""
    from course_utils.__main__ import main
    from test_cli import _stop_before_training

    calls = _stop_before_training(monkeypatch)
    for recipe in ("course", "fast", "long"):
        assert main(["train", "--recipe", recipe, "--set", "clean_fraction=0.5", "--device", "cpu"]) == 1
    configs = [config for _, config in calls]
    assert [c.clean_fraction for c in configs] == [0.5, 0.5, 0.5]
    assert configs == [TrainConfig.recipe(r, clean_fraction=0.5) for r in ("course", "fast", "long")]


def test_the_phased_loader_refuses_phases_it_cannot_serve(tiny_data):
    a, _ = make_loaders(tiny_data, 16)
    b, _ = make_loaders(tiny_data, 8)
    with pytest.raises(ValueError, match=re.escape("the first phase must start at epoch 0, got phases starting at [1]")):
        PhasedLoader([(1, a)])
    with pytest.raises(ValueError, match="got phases starting at none"):
        PhasedLoader([])
    with pytest.raises(ValueError, match=re.escape("phases must start at increasing epochs, got [0, 2, 2]")):
        PhasedLoader([(0, a), (2, a), (2, a)])
    with pytest.raises(ValueError, match="the phases need the same number of batches per epoch"):
        PhasedLoader([(0, a), (1, b)])
    with pytest.raises(ValueError, match="epochs count from 0, got -1"):
        PhasedLoader([(0, a), (1, a)]).set_epoch(-1)


def test_a_clean_tail_names_its_checkpoint_and_the_published_names_still_hold():
    long = checkpoint_path("cifarnet_fullres", TrainConfig(epochs=60)).name   # the long recipe until 2026-12-04
    tail = checkpoint_path("cifarnet_fullres", TrainConfig(epochs=60, clean_fraction=0.25)).name
    assert long == "cifarnet_fullres-full-e60-s1.pt" and re.fullmatch(r"cifarnet_fullres-full-e60-s1-x[0-9a-f]{6}\.pt", tail)
    records = sorted(RUNS.glob("*-x*.json"))
    assert len(records) >= 10
    renamed = []
    for path in records:     # a setting added later leaves the names of the runs recorded before it alone
        record = json.loads(path.read_text())
        name = checkpoint_path(record["model"], TrainConfig.from_dict(record["config"])).with_suffix(".json").name
        if name != path.name:
            renamed.append((path.name, name))
    # the crops comparison's runs became the course recipe after they ran, so they now have its plain name
    assert renamed == [(f"cifarnet-full-e40-s{s}-x51c88c.json", f"cifarnet-full-e40-s{s}.json") for s in (2, 3)]


def test_a_run_begun_with_the_last_batch_dropped_resumes_elsewhere_with_it_dropped(tiny_data, tmp_path, capsys):
    """A fast-recipe run begun on CUDA with torch.compile drops each epoch's last, smaller batch; carried
    to a CPU (no compile there), ``train`` builds its loaders as the checkpoint's run did, says so, and
    ends with the history of the run uninterrupted."""
    cfg = config()
    _, train, test, _ = experiment.prepare(tiny_data, cfg, CPU, drop_last=True)
    assert len(train) != len(experiment.prepare(tiny_data, cfg, CPU)[1])   # the tiny set does not divide
    whole = fit(tiny_model_seeded(cfg), train, test, cfg, CPU, progress=False, log=None)
    ckpt = tmp_path / "run.pt"
    _, train, test, _ = experiment.prepare(tiny_data, cfg, CPU, drop_last=True)
    part = fit(tiny_model_seeded(cfg), StopAt(train, 3), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None)
    assert part.interrupted and part.epoch == [1, 2]
    assert experiment.prepare(tiny_data, cfg, CPU)[1].drop_last is False   # the CPU's own default keeps it
    capsys.readouterr()
    resumed = experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True).history
    out = capsys.readouterr().out
    assert resumed.train_loss == whole.train_loss and resumed.test_acc == whole.test_acc
    assert f"was trained with each epoch's last, smaller batch left out ({len(train)} steps per epoch)" in out


def test_a_run_begun_with_the_last_batch_kept_keeps_it_where_compile_would_drop_it(tiny_data, tmp_path):
    """The other way round: a run begun on a CPU, continued on a CUDA card with torch.compile (whose
    loaders drop the last batch, simulated here), gets loaders that keep it; an unchanged one is
    passed through as it is."""
    cfg = config()
    ckpt = tmp_path / "run.pt"
    _, train, test, _ = experiment.prepare(tiny_data, cfg, CPU)
    fit(tiny_model_seeded(cfg), StopAt(train, 3), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None)
    as_compiled = experiment.prepare(tiny_data, cfg, CPU, drop_last=True)
    notes = []
    saved = load_checkpoint(ckpt)
    kept = experiment._as_the_saved_run_batched(as_compiled, tiny_data, cfg, CPU, saved, ckpt, notes.append)
    assert kept[1].drop_last is False and len(kept[1]) == len(train)
    assert len(notes) == 1 and f"smaller batch kept ({len(train)} steps per epoch)" in notes[0]
    same = experiment.prepare(tiny_data, cfg, CPU)
    assert experiment._as_the_saved_run_batched(same, tiny_data, cfg, CPU, saved, ckpt, notes.append) is same
    assert len(notes) == 1


def test_a_checkpoint_of_other_training_images_is_still_refused_by_its_steps(tiny_data, tmp_path):
    """Only the last batch is matched to the checkpoint: a run of another number of images (neither
    setting gives its steps per epoch) is left to fit's refusal."""
    cfg = config()
    ckpt = tmp_path / "run.pt"
    small = tiny_data.subset(2, None, seed=0)
    _, train, test, _ = experiment.prepare(small, cfg, CPU)
    fit(tiny_model_seeded(cfg), StopAt(train, 3), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None)
    with pytest.raises(CheckpointError, match=rf"ran {len(train)} steps per epoch and this loader gives"):
        experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True, log=None)


def test_a_phase_that_has_ended_stops_its_kept_workers():
    """On CUDA and MPS the training loaders keep their workers between epochs (persistent_workers): once the
    crops' phase has ended, its workers are stopped, not held to the end of the run beside the next phase's."""
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.arange(32.0).view(32, 1))
    crops, whole, tail = (DataLoader(data, batch_size=8, num_workers=1, persistent_workers=True) for _ in range(3))
    phased = PhasedLoader([(0, crops), (2, whole), (3, tail)])
    for epoch in range(4):
        phased.set_epoch(epoch)
        assert torch.cat([x for (x,) in phased]).flatten().tolist() == list(range(32))
        if epoch == 1:
            kept = crops._iterator._workers
            assert kept and all(w.is_alive() for w in kept)            # kept between the crop epochs
        if epoch == 2:
            assert crops._iterator is None and not any(w.is_alive() for w in kept)   # stopped at the switch
            assert whole._iterator is not None
    assert whole._iterator is None and tail._iterator is not None
    phased.set_epoch(0)                                                 # going back starts new workers
    assert len([x for x in phased]) == 4 and crops._iterator is not None and tail._iterator is not None
