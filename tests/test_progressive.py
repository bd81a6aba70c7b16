"""Progressive resizing (``TrainConfig.crop_size`` / ``crop_fraction``): random crops for the first epochs,
whole images for the rest, through the kit's one training path (``experiment.train`` → ``fit``)."""
import re

import numpy as np
import pytest
import torch

from course_utils import experiment
from course_utils.config import TrainConfig
from course_utils.data import (AugmentConfig, PhasedLoader, load_cifar10, make_loaders, make_train_loader,
                               train_transforms)
from course_utils.models import CifarNet, CifarNetConfig
from course_utils.training import fit

CPU = torch.device("cpu")


@pytest.fixture
def tiny_data(image_folder):
    return load_cifar10(image_folder, download=False)


def tiny_model():
    return CifarNet(CifarNetConfig(stem=8, c1=8, c3=16, c4=16))


def config(**kw):
    return TrainConfig(**{**dict(epochs=4, batch_size=16, lr=0.05, seed=3, validation=False, crop_size=24,
                                 crop_fraction=0.5), **kw})


def test_the_crop_comes_last_and_has_the_size_asked_for():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    plain = train_transforms(mean, std, AugmentConfig(), to_tensor=False, normalize=False)
    cropped = train_transforms(mean, std, AugmentConfig(crop=24), to_tensor=False, normalize=False)
    assert plain(image=image)["image"].shape == (32, 32, 3)
    assert cropped(image=image)["image"].shape == (24, 24, 3)
    assert type(cropped.transforms[-1]).__name__ == "RandomCrop"
    # with nothing else switched on, the crop is a window of the image itself
    only_crop = AugmentConfig(flip_p=0.0, affine_p=0.0, dropout_p=0.0, crop=24)
    out = train_transforms(mean, std, only_crop, to_tensor=False, normalize=False)(image=image)["image"]
    windows = [(i, j) for i in range(9) for j in range(9) if np.array_equal(image[i:i + 24, j:j + 24], out)]
    assert len(windows) == 1


def test_a_crop_larger_than_the_images_is_refused_naming_the_sizes(tiny_data):
    with pytest.raises(ValueError, match=re.escape("crop=40 does not fit these 32x32 images: choose a crop size "
                                                   "from 1 to 32, or crop=None for whole images")):
        make_train_loader(tiny_data, 16, augment_config=AugmentConfig(crop=40))
    with pytest.raises(ValueError, match=re.escape("crop=0 does not fit")):
        make_train_loader(tiny_data, 16, augment_config=AugmentConfig(crop=0))
    # unaugmented, the crop is never drawn: nothing to refuse; 32 (the whole side) fits
    make_train_loader(tiny_data, 16, augment=False, augment_config=AugmentConfig(crop=40))
    make_train_loader(tiny_data, 16, augment_config=AugmentConfig(crop=32))


def test_the_loader_switches_from_crops_to_whole_images_at_the_epoch_asked_for(tiny_data):
    crops = make_train_loader(tiny_data, 16, seed=1, augment_config=AugmentConfig(crop=20))
    full, _ = make_loaders(tiny_data, 16, seed=1)
    loader = PhasedLoader([(0, crops), (2, full)])
    sides = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        sides.append({tuple(x.shape[2:]) for x, _ in loader})
    assert sides == [{(20, 20)}, {(20, 20)}, {(32, 32)}, {(32, 32)}]
    assert len(loader) == len(full) and loader.dataset is full.dataset and loader.generator is full.generator


def test_phases_of_different_lengths_are_refused(tiny_data):
    crops = make_train_loader(tiny_data, 8, augment_config=AugmentConfig(crop=20))
    full, _ = make_loaders(tiny_data, 16)
    with pytest.raises(ValueError, match="same number of batches per epoch"):
        PhasedLoader([(0, crops), (1, full)])


def _sides_seen(model):
    """Record the input side of every training forward pass, per call."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-1]) if module.training else None)
    return seen


def test_training_sees_crops_for_the_first_epochs_and_is_evaluated_on_whole_images(tiny_data):
    cfg = config()
    assert cfg.crop_epochs == 2
    model = tiny_model()
    seen = _sides_seen(model)
    evals = []
    model.register_forward_pre_hook(lambda module, args: evals.append(args[0].shape[-1]) if not module.training else None)
    result = experiment.train(model, tiny_data, cfg, CPU, log=None)
    steps = -(-len(tiny_data.train_labels) // cfg.batch_size)   # batches per epoch, the last one partial
    assert steps == 4 and len(tiny_data.train_labels) == 60      # the tiny folder: 6 images of each class
    assert seen == [24] * (2 * steps) + [32] * (2 * steps)
    assert set(evals) == {32}
    assert result.history.epoch == [1, 2, 3, 4]


def test_without_a_crop_size_nothing_changes(tiny_data):
    a = experiment.train(tiny_model, tiny_data, config(crop_size=None), CPU, log=None).history
    b = experiment.train(tiny_model, tiny_data, config(crop_size=None, crop_fraction=0.0), CPU, log=None).history
    c = experiment.train(tiny_model, tiny_data, config(crop_size=24, crop_fraction=0.0), CPU, log=None).history
    assert a.train_loss == b.train_loss == c.train_loss
    assert config(crop_size=None).crop_epochs == 0 == config(crop_fraction=0.0).crop_epochs


class StopAt:
    """Raise KeyboardInterrupt (the stop button) when epoch ``n`` (1-based) starts."""

    def __init__(self, loader, n):
        self.loader, self.n, self.epoch = loader, n, 0

    def set_epoch(self, epoch):
        self.epoch = epoch + 1
        self.loader.set_epoch(epoch)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        if self.epoch == self.n:
            raise KeyboardInterrupt
        return iter(self.loader)


def test_a_run_interrupted_in_the_crop_phase_resumes_to_the_same_history(tiny_data, tmp_path):
    cfg = config(crop_fraction=0.75)                       # 3 epochs of crops, then 1 of whole images
    whole = experiment.train(tiny_model, tiny_data, cfg, CPU, log=None).history

    data, train, test, _ = experiment.prepare(tiny_data, cfg, CPU)
    torch.manual_seed(cfg.seed)
    ckpt = tmp_path / "run.pt"
    part = fit(tiny_model_seeded(cfg), StopAt(train, 3), test, cfg, CPU, checkpoint=ckpt, progress=False, log=None)
    assert part.interrupted and part.epoch == [1, 2]
    resumed = experiment.train(tiny_model, tiny_data, cfg, CPU, checkpoint=ckpt, resume=True, log=None).history
    assert resumed.epoch == [1, 2, 3, 4]
    assert resumed.train_loss == whole.train_loss and resumed.test_acc == whole.test_acc


def tiny_model_seeded(cfg):
    from course_utils.runtime import seed_everything

    seed_everything(cfg.seed)
    return tiny_model()


@pytest.mark.parametrize("settings, message", [
    (dict(crop_fraction=1.5), "crop_fraction must be a finite number from 0 to 1, got 1.5"),
    (dict(crop_fraction=float("nan")), "crop_fraction must be a finite number from 0 to 1"),
    (dict(crop_size=0), "crop_size must be a whole number of pixels (1 or more) or None, got 0"),
    (dict(crop_size=24.5), "crop_size must be a whole number or None, got 24.5 (float)"),
])
def test_bad_crop_settings_are_refused_naming_them(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**settings)


def test_crop_settings_tell_checkpoints_apart_and_are_described():
    from course_utils.experiment import checkpoint_path

    names = {checkpoint_path("cifarnet", TrainConfig(**s)).name
             for s in (dict(crop_size=None), dict(crop_size=24, crop_fraction=0.75), dict(crop_size=20, crop_fraction=0.75),
                       dict(crop_size=24, crop_fraction=0.5))}
    assert len(names) == 4
    text = TrainConfig(epochs=40, crop_size=24, crop_fraction=0.75).describe("cpu")
    assert "random 24x24 crops for epochs 1-30, whole images for the last 10" in text
    assert "random 24x24 crops for epochs 1-150, whole images for the last 50" in TrainConfig.recipe("long").describe("cpu")
    assert "progressive" not in TrainConfig(crop_size=None).describe("cpu")


def test_the_course_recipe_crops_three_quarters_and_always_ends_on_whole_images(monkeypatch):
    course = TrainConfig()
    assert (course.crop_size, course.crop_epochs, course.epochs) == (24, 30, 40)
    assert [TrainConfig(epochs=e).crop_epochs for e in (1, 2, 5, 15)] == [0, 1, 3, 11]
    monkeypatch.setenv("COURSE_SMOKE", "1")
    smoke = TrainConfig.for_environment()
    assert smoke.epochs == 2 and smoke.crop_epochs == 1     # smoke mode runs both phases


def test_a_saved_config_from_before_progressive_resizing_reads_as_whole_images():
    saved = {k: v for k, v in TrainConfig().to_dict().items() if not k.startswith("crop_")}
    old = TrainConfig.from_dict(saved)
    assert old.crop_size is None and old.crop_epochs == 0
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
