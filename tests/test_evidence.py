"""Evidence rules in code: a validation split for decisions, the test set read once (after the last
epoch), the final epoch reported, plain cross-entropy logged, and shipped weights that prove the
kit's accuracy claim on the real test set."""
import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_utils.config import TrainConfig
from course_utils.data import VAL_PER_CLASS, load_cifar10, make_loaders, val_loader
from course_utils.pretrained import PretrainedError, card, export_pretrained, load_pretrained, publish_record, sha256
from course_utils.runtime import REPO_ROOT
from course_utils.training import History, evaluate, fit, train_one_epoch

from conftest import committed_output, skip_without_real_data

CPU = torch.device("cpu")
#: The long recipe until 2026-12-04, which the long runs published before then trained with: the course
#: recipe for 60 epochs (the hole at p = 0.25). Since then it runs 100 epochs (200 from 2026-12-05) with the hole at 0.1.
LONG_UNTIL_DEC_4 = TrainConfig(epochs=60)
#: the long recipe from 2026-12-04 until 2026-12-05, when its length moved from 100 epochs to 200
LONG_AT_100 = replace(TrainConfig.recipe("long"), epochs=100)


@pytest.fixture
def data(image_folder):
    return load_cifar10(image_folder, download=False)


def test_a_runs_validation_split_is_held_out_before_its_subset_and_is_the_same_for_every_seed(data):
    """``experiment.split``: the validation images come out of the training set first, then ``--subset``
    draws from what is left, so a subset never holds a validation image and every seed decides on the
    same validation images."""
    from course_utils.experiment import split

    runs = {seed: split(data, TrainConfig(train_per_class=3, seed=seed)) for seed in (1, 2)}
    val = [img.tobytes() for img in runs[1].val_images]
    assert val == [img.tobytes() for img in runs[2].val_images]
    assert np.bincount(runs[1].val_labels).tolist() == [1] * 10          # 6 per class: a tenth, at least one
    for run in runs.values():
        assert np.bincount(run.train_labels).tolist() == [3] * 10
        assert not {img.tobytes() for img in run.train_images} & set(val)
    assert ({img.tobytes() for img in runs[1].train_images} != {img.tobytes() for img in runs[2].train_images})
    whole = split(data, TrainConfig(validation=False, train_per_class=3, seed=1))
    assert whole.val_images is None and len(whole.train_labels) == 30   # nothing held out


def test_validation_split_is_stratified_disjoint_and_fixed(data):
    split = data.with_validation(per_class=2)
    assert np.bincount(split.val_labels).tolist() == [2] * 10
    assert np.bincount(split.train_labels).tolist() == [4] * 10
    # disjoint: every original training image is in exactly one of the two
    rows = {img.tobytes() for img in data.train_images}
    train_rows = [img.tobytes() for img in split.train_images]
    val_rows = [img.tobytes() for img in split.val_images]
    assert not set(train_rows) & set(val_rows) and set(train_rows) | set(val_rows) == rows
    again = data.with_validation(per_class=2)
    assert np.array_equal(again.val_images, split.val_images)  # the same draw every time
    assert np.array_equal(split.test_images, data.test_images)  # the test set is untouched
    # normalisation statistics come from what is left for training
    assert split.mean != data.mean


def test_validation_split_rejects_impossible_sizes(data):
    with pytest.raises(ValueError, match="choose 1 to 5"):
        data.with_validation(per_class=6)
    with pytest.raises(ValueError, match="already has a validation split"):
        data.with_validation(per_class=2).with_validation(per_class=1)
    assert VAL_PER_CLASS == 500  # 5,000 of CIFAR-10's 50,000 training images


def test_train_subset_bound_is_what_a_real_split_leaves(data):
    """``train --subset N`` is refused exactly when N exceeds what the smallest class keeps after the
    validation split, counted without splitting (``__main__._check_subset``), checked against a real
    ``experiment.split`` on uneven classes: CIFAR-10's size (500 held out per class, the cap), a small
    folder (a tenth of its smallest class), no split, and data whose split is already held out."""
    from course_utils.__main__ import _check_subset
    from course_utils.data import CIFAR10Data
    from course_utils.experiment import split

    def fake(counts):
        labels = np.repeat(np.arange(10), counts)
        images = np.random.default_rng(0).integers(0, 256, (len(labels), 2, 2, 3), dtype=np.uint8)
        return CIFAR10Data(images, labels, images[:10], labels[:10], data.classes, "fake")

    cases = [(fake([5003, 5000, 5200] + [5100] * 7), TrainConfig()),          # 5000 - 500 (the cap)
             (fake([5003, 4990, 5200] + [5100] * 7), TrainConfig()),          # 4990 - 499 (a tenth)
             (fake([31, 25, 40] + [30] * 7), TrainConfig()),                   # 25 - 2 (a tenth of 25)
             (fake([31, 25, 40] + [30] * 7), TrainConfig(validation=False))]   # all 25
    for d, config in cases:
        kept = int(np.bincount(split(d, config).train_labels).min())
        _check_subset(d, replace(config, train_per_class=kept))
        with pytest.raises(ValueError, match=f"but the data has {kept:,} per class"):
            _check_subset(d, replace(config, train_per_class=kept + 1))
    assert [int(np.bincount(split(d, c).train_labels).min()) for d, c in cases] == [4500, 4491, 23, 25]
    held = fake([31, 25, 40] + [30] * 7).with_validation()                       # split already held out
    _check_subset(held, replace(TrainConfig(), train_per_class=23))
    with pytest.raises(ValueError, match=r"has 23 per class: give at most 23"):
        _check_subset(held, replace(TrainConfig(), train_per_class=24))
    # too few to hold any out: no count of -1 is given, the split's own error says what to do
    tiny = fake([1] + [3] * 9)
    _check_subset(tiny, replace(TrainConfig(), train_per_class=1))
    with pytest.raises(ValueError, match="needs at least 2 training images in every class"):
        split(tiny, TrainConfig())


def test_training_loss_is_plain_cross_entropy():
    torch.manual_seed(0)
    x, y = torch.randn(40, 8), torch.randint(0, 10, (40,))
    model = nn.Linear(8, 10)
    with torch.no_grad():
        model.weight.mul_(20)  # confident logits, where smoothing changes the loss most
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    smoothed = nn.CrossEntropyLoss(label_smoothing=0.5)
    loss, _ = train_one_epoch(model, DataLoader(TensorDataset(x, y), batch_size=16), frozen, CPU,
                              loss_fn=smoothed, progress=False)
    with torch.no_grad():
        plain, smooth = nn.functional.cross_entropy(model(x), y).item(), smoothed(model(x), y).item()
    assert loss == pytest.approx(plain, rel=1e-5)
    assert abs(plain - smooth) > 0.1  # the two differ, so the test can tell them apart


class Counting:
    """A loader that counts how often it is read."""

    def __init__(self, loader):
        self.loader, self.reads = loader, 0
        self.dataset, self.generator = loader.dataset, getattr(loader, "generator", None)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.reads += 1
        return iter(self.loader)


def test_test_set_is_read_once_after_the_last_epoch(data):
    split = data.with_validation(per_class=2)
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    train, test = make_loaders(split, config.batch_size, seed=1)
    test, val = Counting(test), Counting(val_loader(split))
    from course_utils.models import CifarNet, CifarNetConfig

    torch.manual_seed(0)
    h = fit(CifarNet(CifarNetConfig(stem=8, c1=8, c3=16, c4=16)), train, test, config, CPU, progress=False,
            log=None, val_loader=val)
    assert val.reads == 3 and test.reads == 1
    assert h.test_acc[:2] == [None, None] and h.test_acc[2] is not None and len(h.val_acc) == 3
    assert h.final_test_acc == h.test_acc[-1]


def test_final_epoch_is_reported_not_the_best():
    h = History(epoch=[1, 2], train_loss=[1, 1], train_acc=[50, 60], test_loss=[1, 1], test_acc=[86.0, 85.2],
                val_loss=[1, 1], val_acc=[80.0, 79.0], lr=[0.1, 0.1], seconds=[1, 1])
    assert h.final_test_acc == 85.2 and h.final_val_acc == 79.0
    assert "test acc 85.20%" in str(h) and "86.00" not in str(h)


def test_flip_averaging_is_the_mean_softmax_of_the_image_and_its_mirror():
    class LeftHalf(nn.Module):  # reads only the left half of the image: its mirror gives other logits
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 16, 10)

        def forward(self, x):
            return self.fc(x[..., :16].flatten(1))

    torch.manual_seed(0)
    model = LeftHalf().eval()
    x, y = torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with torch.no_grad():
        probs = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    expected_loss = nn.functional.nll_loss(probs.log(), y).item()
    expected_acc = 100 * (probs.argmax(1) == y).float().mean().item()
    loss, acc = evaluate(model, loader, CPU, tta=True)
    assert loss == pytest.approx(expected_loss, rel=1e-5) and acc == pytest.approx(expected_acc)
    assert loss != pytest.approx(evaluate(model, loader, CPU)[0], rel=1e-3)  # it is not the plain number


def test_resume_refuses_a_checkpoint_with_another_split(data, tmp_path):
    from course_utils.checkpoint import CheckpointError
    from course_utils.models import CifarNet, CifarNetConfig

    split = data.with_validation(per_class=2)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.05)
    train, test = make_loaders(split, 8)
    tiny = CifarNetConfig(stem=8, c1=8, c3=16, c4=16)
    fit(CifarNet(tiny), train, test, config, CPU, checkpoint=tmp_path / "c.pt", progress=False, log=None,
        val_loader=val_loader(split))
    with pytest.raises(CheckpointError, match="validation=True; resume with the same settings .got validation=False"):
        fit(CifarNet(tiny), train, test, TrainConfig(epochs=1, batch_size=8, lr=0.05, validation=False), CPU,
            checkpoint=tmp_path / "c.pt", resume=True, progress=False, log=None)


# --------------------------------------------------------------------------------------------
# Shipped weights
# --------------------------------------------------------------------------------------------

def test_load_pretrained_refuses_an_altered_file(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "course_utils" / "weights", folder)
    model = load_pretrained("cifarnet", folder)
    assert not model.training
    shipped = torch.load(folder / "cifarnet.pt", weights_only=True)["model"]
    assert model.state_dict().keys() == shipped.keys()
    assert all(torch.equal(value, shipped[key]) for key, value in model.state_dict().items())   # the file's weights
    raw = bytearray((folder / "cifarnet.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "cifarnet.pt").write_bytes(bytes(raw))
    with pytest.raises(PretrainedError, match=r"does not match its card: SHA-256 .*restore it \(git checkout -- "
                                              r"course_utils/weights\) or reinstall the kit"):
        load_pretrained("cifarnet", folder)


def test_load_pretrained_puts_the_network_on_the_device_asked_for(monkeypatch):
    """map_location names where the model goes, not only where the file's tensors are read to: a model
    left on the CPU would fail at its first CUDA batch. (No GPU here: the move is watched.)"""
    from course_utils import pretrained

    read_to, moved = [], []
    monkeypatch.setattr(pretrained, "load_checkpoint", lambda path, model, map_location: read_to.append(map_location))
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: moved.append((type(self).__name__, a)) or self)
    model = load_pretrained("cifarnet", map_location="cuda:1")   # not the default ("cpu"): a fixed .to would show
    assert read_to == ["cuda:1"] and moved == [("CifarNet", ("cuda:1",))] and not model.training


def test_load_pretrained_names_what_is_missing(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "course_utils" / "weights", folder)
    (folder / "cifarnet.pt").unlink()
    with pytest.raises(PretrainedError, match=r"cifarnet.pt is missing, though its card cifarnet.json is there. "
                                              r"Restore it from the repository \(git checkout -- course_utils/weights\)"):
        load_pretrained("cifarnet", folder)
    with pytest.raises(PretrainedError, match="no shipped weights named 'resnet'.*available: cifarnet. Reinstall the kit, "
                                              "or train one with python -m course_utils train and export it"):
        load_pretrained("resnet", folder)


@pytest.mark.parametrize("damage", ['{"model": "cifarnet", "sha256": "ab', '<<<<<<< HEAD\n{}', '["cifarnet"]',
                                    '{"model": "cifarnet"}'])
def test_a_damaged_card_is_named_with_the_fix(tmp_path, damage):
    folder = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "course_utils" / "weights", folder)
    (folder / "cifarnet.json").write_text(damage)
    with pytest.raises(PretrainedError, match=r"cifarnet.json is damaged: it lacks .*git checkout -- course_utils/weights"):
        load_pretrained("cifarnet", folder)


def test_shipped_names_are_case_insensitive_as_model_names_are():
    """get_model("CifarNet") builds a CifarNet, so load_pretrained("CifarNet") loads the shipped one (it
    said "no shipped weights named 'CifarNet'" on Linux, and would have found the file on macOS)."""
    assert card("CifarNet") == card("cifarnet")
    upper, lower = load_pretrained("CIFARNET"), load_pretrained("cifarnet")
    assert all(torch.equal(a, b) for a, b in zip(upper.state_dict().values(), lower.state_dict().values(), strict=True))
    with pytest.raises(PretrainedError, match="no shipped weights named 'CifarNet10'"):
        card("CifarNet10")


def test_shipped_weights_are_small_and_their_card_is_complete():
    info = card("cifarnet")
    path = REPO_ROOT / "course_utils" / "weights" / info["file"]
    assert path.stat().st_size == info["bytes"] < 1_000_000
    assert sha256(path) == info["sha256"]
    for key in ("recipe", "config", "device", "precision", "epochs", "train_minutes", "final_val_acc",
                "final_test_acc", "torch"):
        assert info[key] is not None, key
    # the precision the run actually trained in (its config's amp switch is ignored on a CPU)
    record = json.loads((REPO_ROOT / "figures" / "runs" / info["run_record"]).read_text())
    assert info["device"] == "cpu", "a card from a GPU run: derive its precision from the card's capability here"
    assert info["precision"] == record["precision"] == "fp32"
    # every number the card (and doctor, and notebook 11) states is the record's
    for key in ("model", "parameters", "epochs", "final_val_acc", "final_test_acc", "final_test_acc_flip_tta",
                "device", "device_name", "threads", "config"):
        assert info[key] == record[key], key
    assert info["train_minutes"] == round(record["train_seconds"] / 60, 1)


class _LeavesAMark:
    """Pickled, it asks the loader to call ``Path.write_text``: what a checkpoint carrying code would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.write_text, (Path(self.path), "code ran")


def test_a_checkpoint_carrying_code_is_refused_and_its_code_never_runs(tmp_path):
    from course_utils.checkpoint import FORMAT, CheckpointError, load_checkpoint

    mark = tmp_path / "mark.txt"
    folder = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "course_utils" / "weights", folder)
    torch.save({"format": FORMAT, "model_class": "CifarNet", "model": {}, "extra": _LeavesAMark(mark)},
               folder / "cifarnet.pt")
    with pytest.raises(CheckpointError, match=r"is not a readable checkpoint \(UnpicklingError\)\. .*hold objects "
                                              r"other than tensors and plain values.*delete it to start afresh"):
        load_checkpoint(folder / "cifarnet.pt")
    info = json.loads((folder / "cifarnet.json").read_text())
    (folder / "cifarnet.json").write_text(json.dumps({**info, "sha256": sha256(folder / "cifarnet.pt")}))
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_pretrained("cifarnet", folder)            # the hash matches its card, and still nothing runs
    assert not mark.exists()


def test_export_writes_weights_and_a_card_that_load_pretrained_reads_back(data, tmp_path, monkeypatch):
    from course_utils import experiment
    from course_utils.checkpoint import atomic_save, load_checkpoint

    run = experiment.run_training("cifarnet", TrainConfig(epochs=1, batch_size=16, lr=0.05, crop_size=None,
                                                          crop_fraction=0.0),
                                  device="cpu", data=data, progress=False, log=None, recipe="auto",
                                  checkpoint_dir=tmp_path / "runs")
    with pytest.raises(ValueError, match=r"this run trained on 50 images and was tested on 30 .*not on CIFAR-10's "
                                         r"45,000 or more and 10,000; export a full CIFAR-10 run"):
        export_pretrained(run.record_path, folder=tmp_path / "weights")
    record = json.loads(run.record_path.read_text())          # the same run, as if on the whole data set
    run.record_path.write_text(json.dumps({**record, "data": {**record["data"], "train": 45_000, "test": 10_000}}))
    weights, card_path = export_pretrained(run.record_path, folder=tmp_path / "weights")
    info = json.loads(card_path.read_text())
    assert info["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert info["bytes"] == weights.stat().st_size and info["file"] == "cifarnet.pt"
    assert info["recipe"] == "course"                  # what auto chose on a CPU
    assert info["epochs"] == 1 and info["final_test_acc"] == run.history.test_acc[-1]
    assert info["run_record"] == run.record_path.name and info["precision"] == "fp32"
    assert info["layout"] == record["layout"] == "channels_last"   # the layout it trained in (contiguous on MPS)
    # where and how every epoch ran, in the run record and on the card (a resumed run may have moved)
    assert data.source in record["data"]["source"] and "/tmp/" in data.source    # read from a temporary folder,
    assert "/tmp/" not in card_path.read_text()                                   # which the card does not name
    assert record["ran_on"] == info["ran_on"] == [{"first_epoch": 1, "last_epoch": 1, "device": record["device_name"],
                                                   "precision": "fp32"}]
    loaded = load_pretrained("cifarnet", tmp_path / "weights")
    trained = run.model.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in loaded.state_dict().items())

    with pytest.raises(ValueError, match=r"weights/cifarnet.pt already holds shipped weights; pass force=True "
                                         r"\(--force\) to replace them, or --name"):
        export_pretrained(run.record_path, folder=tmp_path / "weights")
    assert export_pretrained(run.record_path, folder=tmp_path / "weights", force=True)[0] == weights
    # a forced export that fails leaves the weights it would have replaced, never new weights under the old card
    from course_utils import pretrained
    weights.write_bytes(b"the weights shipped before")
    monkeypatch.setattr(pretrained, "atomic_write_text", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_pretrained(run.record_path, folder=tmp_path / "weights", force=True)
    assert weights.read_bytes() == b"the weights shipped before"
    assert sorted(p.name for p in weights.parent.iterdir()) == ["cifarnet.json", "cifarnet.pt"]   # nothing aside left
    monkeypatch.undo()
    no_time = tmp_path / "old-record.json"          # a record of older code, without a field the card needs
    no_time.write_text(json.dumps({k: v for k, v in json.loads(run.record_path.read_text()).items() if k != "train_seconds"}))
    (tmp_path / "old-record.pt").write_bytes(run.checkpoint.read_bytes())
    with pytest.raises(KeyError, match="train_seconds"):
        export_pretrained(no_time, folder=tmp_path / "weights", force=True)
    assert weights.read_bytes() == b"the weights shipped before"   # nothing written before the card was made
    assert export_pretrained(run.record_path, folder=tmp_path / "weights", force=True)[0] == weights
    assert load_pretrained("cifarnet", tmp_path / "weights") is not None
    assert sorted(p.name for p in weights.parent.iterdir()) == ["cifarnet.json", "cifarnet.pt"]
    with pytest.raises(ValueError, match=r"must be a plain name \(letters, digits, _ and -\), got '../evil'"):
        export_pretrained(run.record_path, name="../evil", folder=tmp_path / "weights")
    assert not (tmp_path / "evil.pt").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json is not a run record \(Expecting property name.*pass the .json "
                                         r"that train printed"):
        export_pretrained(bad, folder=tmp_path / "weights")
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad.json is not a run record \(no model named in it\)"):
        export_pretrained(bad, folder=tmp_path / "weights")

    state = load_checkpoint(run.checkpoint)            # a later run of the same name overwrote the checkpoint
    atomic_save({**state, "epoch": 2}, run.checkpoint)
    with pytest.raises(ValueError, match="is not the run this record describes .epoch 2.*overwritten by a later run"):
        export_pretrained(run.record_path, folder=tmp_path / "other")
    assert not (tmp_path / "other").exists()           # nothing half-written


def test_export_refuses_unfinished_and_smoke_runs(tmp_path):
    record = {"model": "cifarnet", "epochs": 3, "epochs_planned": 5, "interrupted": True}
    with pytest.raises(ValueError, match="did not finish"):
        export_pretrained(record, folder=tmp_path)
    with pytest.raises(ValueError, match="smoke-mode"):
        export_pretrained({**record, "epochs": 5, "interrupted": False, "smoke": True}, folder=tmp_path)
    with pytest.raises(ValueError, match="subset"):
        export_pretrained({**record, "epochs": 5, "interrupted": False, "config": {"train_per_class": 50}},
                          folder=tmp_path)


def test_publish_record_copies_a_finished_run_without_this_machines_paths(tmp_path):
    record = {"model": "cifarnet", "epochs": 5, "epochs_planned": 5, "interrupted": False, "smoke": False,
              "final_val_acc": 80.5, "final_test_acc": 81.25, "config": {"train_per_class": None},
              "checkpoint": str(tmp_path / "deep" / "runs" / "cifarnet-full-e5-s1.pt"),
              "record_path": str(tmp_path / "deep" / "runs" / "cifarnet-full-e5-s1.json"),
              "data": {"source": f"image folder {tmp_path}/datasets/cifar10 (validation 5000 held out)",
                       "train": 45_000, "test": 10_000}}
    src = tmp_path / "cifarnet-full-e5-s1.json"
    src.write_text(json.dumps(record))
    out = publish_record(src, folder=tmp_path / "published")
    assert out == tmp_path / "published" / "cifarnet-full-e5-s1.json"
    text = out.read_text()
    assert str(tmp_path) not in text
    copy = json.loads(text)
    assert copy["checkpoint"] == "runs/cifarnet-full-e5-s1.pt" and copy["record_path"] == "runs/cifarnet-full-e5-s1.json"
    assert copy["data"]["source"] == "image folder …/cifar10 (validation 5000 held out)"    # the folder's name only
    assert {k: v for k, v in copy.items() if k not in ("checkpoint", "record_path", "data")} == \
        {k: v for k, v in record.items() if k not in ("checkpoint", "record_path", "data")}
    assert [p.name for p in out.parent.iterdir()] == [out.name]          # no temporary file left behind
    for bad, message in (({"interrupted": True}, "did not finish; publish"), ({"smoke": True}, "smoke-mode"),
                         ({"config": {"train_per_class": 50}}, "subset")):
        src.write_text(json.dumps({**record, **bad}))
        with pytest.raises(ValueError, match=message):
            publish_record(src, folder=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="no run record at"):
        publish_record(tmp_path / "missing.json")


@pytest.mark.parametrize("source, published", [
    ("image folder /home/Ada Lovelace/data/cifar10 (decoded cache) (validation 5000 held out)",
     "image folder …/cifar10 (decoded cache) (validation 5000 held out)"),
    ("torchvision's archive C:\\Users\\Ada Lovelace\\Documents\\cifar-10-batches-py",
     "torchvision's archive …/cifar-10-batches-py"),
    ("image folder ~/data/cifar10/ (validation 5000 held out)", "image folder …/cifar10 (validation 5000 held out)"),
    ("image folder ./data (decoded cache)", "image folder ./data (decoded cache)"),       # relative: kept
])
def test_a_published_source_keeps_only_the_folders_name_spaces_and_windows_paths_too(source, published):
    from course_utils.pretrained import _without_machine_paths

    assert _without_machine_paths({"source": source, "train": 45_000}) == {"source": published, "train": 45_000}


#: Where the kit states its evidence: the README (the headline runs) and docs/results.md (every run, the
#: screens, the ablation's numbers, the benchmark). Every check below reads both, README first.
EVIDENCE_DOCS = ("README.md", "docs/results.md")


def _docs_text() -> str:
    return "\n".join((REPO_ROOT / name).read_text() for name in EVIDENCE_DOCS)


def _sections(section: str) -> list[str]:
    """The text of every ``## section`` of the evidence documents (up to the next ``## `` heading), in order."""
    parts = [part.split("\n## ", 1)[0] for part in _docs_text().split(f"\n## {section}\n")[1:]]
    assert parts, f"no section '## {section}' in {' or '.join(EVIDENCE_DOCS)}"
    return parts


def _tables_in(text: str):
    tables, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            tables.append(rows[2:])
            rows = []
    return tables


def _tables(section: str):
    """Every table in the sections called ``section`` (README first, then docs/results.md), each as a list
    of rows of cells (header and rule dropped)."""
    return [table for text in _sections(section) for table in _tables_in(text)]


def _results_rows(section: str = "Results"):
    """The rows of the first table of every section called ``section`` (the README's headline table, then
    docs/results.md's whole one), as lists of cells."""
    return [row for text in _sections(section) for row in _tables_in(text)[0]]


def test_readme_results_rows_quote_their_published_records():
    """Every results row that cites a published run record (figures/runs/*.json) quotes that record's
    final validation and test accuracy, epochs and parameters; the record is a finished full-size run
    and names no absolute path."""
    rows = [(row, re.search(r"figures/runs/[\w.-]+\.json", " ".join(row))) for row in _results_rows()]
    cited = [(row, m.group(0)) for row, m in rows if m]
    assert len(cited) >= 2, "the results table cites no published records"
    from course_utils.inspection import count_macs
    from course_utils.models import MODELS, get_model

    macs_checked = 0
    for row, name in cited:
        record = json.loads((REPO_ROOT / name).read_text())
        model, params, macs, _device, recipe, minutes, ips, val, test, _source = row
        if record["model"] in MODELS:   # two tried networks were registered in their session only (the row says how)
            assert macs == f"{count_macs(get_model(record['model'])) / 1e6:.2f} M", (name, macs)
            macs_checked += 1
        assert params == f"{record['parameters']:,}", (name, params)
        assert minutes.startswith(f"{record['train_seconds'] / 60:.1f} min"), (name, minutes)
        passes = record["history"].get("train_seconds")
        if passes and ips[:1].isdigit():   # images/s (unless the row says why none is given): the training
            # passes' images over their summed time, the evaluation left out
            rate = record["data"]["train"] * record["epochs"] / sum(passes)
            assert ips.startswith(f"{int(rate + 0.5):,}"), (name, ips, rate)
        assert recipe.endswith(f", {record['epochs']}"), (name, recipe)
        if _held_out_validation(record):
            assert val.startswith(f"{record['final_val_acc']:.2f}%"), (name, val)
        else:  # a final run on all training images: nothing held out, so no validation number
            assert record["final_val_acc"] is None and val.startswith("— (none held out)"), (name, val)
        assert re.sub(r"[*]", "", test).startswith(f"{record['final_test_acc']:.2f}%"), (name, test)
        flip = re.search(r"\(([\d.]+)% with flip averaging", test)
        if flip:   # the figure beside the plain one is the record's too
            assert flip.group(1) == f"{record['final_test_acc_flip_tta']:.2f}", (name, test)
        assert not record["interrupted"] and not record["smoke"] and record["epochs"] == record["epochs_planned"]
        assert "/work/" not in json.dumps(record) and not record["checkpoint"].startswith("/")
    assert macs_checked >= 30


def _row_commands(source: str) -> list[str]:
    """The ``train`` command lines (``python -m course_utils train ...``) and ``TrainConfig.recipe(...)``
    expressions quoted in a results row's source cell."""
    spans = re.findall(r"`([^`]+)`", source)
    return ([s for s in spans if s.startswith("python -m course_utils train")]
            + [m for s in spans for m in re.findall(r"TrainConfig\.recipe\([^()]*\)", s)])


def _command_plan(command: str) -> tuple[TrainConfig, str | None]:
    """The configuration (and model, for a command line) that a quoted command builds today."""
    import shlex

    from course_utils.__main__ import build_parser, train_plan
    from course_utils.config import WHOLE_IMAGES

    if command.startswith("TrainConfig.recipe("):
        return eval(command, {"TrainConfig": TrainConfig, "WHOLE_IMAGES": WHOLE_IMAGES}), None
    argv = shlex.split(command)
    _recipe, config, model = train_plan(build_parser().parse_args(argv[argv.index("train"):]))
    return config, model


def test_docs_results_rows_commands_rebuild_their_records_configuration():
    """Every command a results row quotes for its record, read by the command line's own parser (or the
    ``TrainConfig.recipe`` call evaluated), builds that record's configuration and model with today's
    recipes: a reader who copies a row's command trains that row's run again, also after a recipe changed."""
    checked = 0
    for row in _results_rows():
        match = re.search(r"`figures/runs/([\w.-]+)\.json`", row[-1])
        if not match:
            continue
        record = _published(match.group(1))
        for command in _row_commands(row[-1]):
            config, model = _command_plan(command)
            assert config == TrainConfig.from_dict(record["config"]), (match.group(1), command)
            assert model in (None, record["model"]), (match.group(1), command, model)
            checked += 1
    assert checked >= 30


def test_the_row_command_check_sees_a_recipe_that_changed_since():
    """The check above fails on a command that no longer builds its run: the long recipe's length and hole
    changed after the 60-epoch runs, and the course recipe took up crops after the whole-image ones."""
    record = _published("cifarnet_wide-full-e60-s1")
    config, model = _command_plan("python -m course_utils train --model cifarnet_wide --recipe long --device cpu")
    assert model == "cifarnet_wide" and config != TrainConfig.from_dict(record["config"])
    assert (config.epochs, config.dropout_p) == (200, 0.1)
    whole = TrainConfig.from_dict(_published("cifarnet-full-e15-s1")["config"])
    assert _command_plan("python -m course_utils train --epochs 15 --set crop_size=none --device cpu")[0] != whole
    assert _command_plan("python -m course_utils train --epochs 15 --set crop_size=none --set crop_fraction=0 --device cpu")[0] == whole
    old_long, no_model = _command_plan("TrainConfig.recipe('long', epochs=60, dropout_p=0.25)")
    assert (old_long.epochs, old_long.dropout_p, old_long.crop_epochs, no_model) == (60, 0.25, 45, None)
    assert _row_commands("`python -m course_utils train --seed 2` under `OMP_NUM_THREADS=1`, as "
                         "`run_training(m, TrainConfig.recipe('long', epochs=60), device='cpu')`") == [
        "python -m course_utils train --seed 2", "TrainConfig.recipe('long', epochs=60)"]


def test_readme_benchmark_table_quotes_its_record():
    """The Benchmark section's table is the cited bench record, number for number (images/s rounded);
    the record is committed (figures/runs/bench/) and names no path of the machine it ran on."""
    text = _sections("Benchmark")[0]
    name = re.search(r"figures/runs/bench/[\w.-]+\.json", text).group(0)
    record = json.loads((REPO_ROOT / name).read_text())
    assert record["quick"] is False and "/work/" not in json.dumps(record)
    steps = {(r["model"], r["batch_size"], r["channels_last"]): r for r in record["train_step"] if r["amp"] == "fp32"}
    models = {"BaselineNet": "baseline", "CifarNet10 (the seed's layout)": "cifarnet10", "CifarNet v1": "cifarnet_v1",
              "**CifarNet**": "cifarnet", "CifarNet wide (the long recipe's until 2026-12-04)": "cifarnet_wide",
              "CifarNet ResNet-20-shaped (the long recipe's since 2026-12-04)": "cifarnet_res20",
              "CifarNet v1 + SE": "cifarnet_se"}
    n = lambda x: f"{int(x + 0.5):,}"  # noqa: E731  (images/s as the README rounds them: half up)
    rows = _results_rows("Benchmark")
    assert [row[0] for row in rows] == list(models)
    for label, params, macs, *cells in rows:
        for cell, (batch, cl) in zip(cells, [(128, False), (128, True), (512, False), (512, True)], strict=True):
            row = steps[(models[label], batch, cl)]
            assert cell.strip("*") == n(row["images_per_s"]), (label, batch, cl)
        assert params == f"{row['parameters']:,}" and macs == f"{row['macs'] / 1e6:.2f} M", label
    # the prose under the table: speeds, ratios and the channels_last range, from the same record
    from course_utils.benchmark import BENCH_MODELS

    assert set(models.values()) == set(BENCH_MODELS)            # every model bench times has its row
    ips = {k: r["images_per_s"] for k, r in steps.items()}
    cl = {(m, b): ips[(m, b, True)] for m in models.values() for b in (128, 512)}
    ratio = sorted(cl[("cifarnet", b)] / cl[("cifarnet_v1", b)] for b in (128, 512))
    prose = " ".join(text.split())
    assert (f"CifarNet trains {ratio[0]:.1f}–{ratio[1]:.1f} times as fast as v1 ({n(cl[('cifarnet', 128)])} against "
            f"{n(cl[('cifarnet_v1', 128)])} images/s at batch 128, {n(cl[('cifarnet', 512)])} against "
            f"{n(cl[('cifarnet_v1', 512)])} at 512, channels_last)") in prose
    share = lambda m, b: f"{100 * cl[(m, b)] / cl[('cifarnet', b)]:.0f}%"  # noqa: E731
    macs_ratio = steps[("cifarnet_res20", 128, True)]["macs"] / steps[("cifarnet", 128, True)]["macs"]
    assert (f"`cifarnet_res20`, with {macs_ratio:.1f}× "
            f"CifarNet's MACs, trains at {n(cl[('cifarnet_res20', 128)])} and {n(cl[('cifarnet_res20', 512)])} images/s, "
            f"{share('cifarnet_res20', 128)} and {share('cifarnet_res20', 512)} of CifarNet's speed") in prose
    gains = {k: ips[(*k, True)] / ips[(*k, False)] - 1 for k in cl}
    low, high = min(gains, key=gains.get), max(gains, key=gains.get)
    assert min(gains.values()) > 0                                   # "helps every row on this machine"
    label = {m: (f"`{m}`" if m.startswith("cifarnet_") else m) for m in models.values()}
    assert (f"by {100 * gains[low]:.0f}% ({label[low[0]]} at batch {low[1]}) to {100 * gains[high]:.0f}% "
            f"({label[high[0]]} at batch {high[1]})") in prose
    pipe = [p["images_per_s"] for p in record["pipeline"]][:3]
    assert (f"delivers {' / '.join(n(x) for x in pipe)} images/s with 0 / 1 / 2 loader workers" in prose
            and f"({n(cl[('cifarnet', 128)])} against {n(pipe[0])} images/s)" in prose)


H200_LOG = "figures/runs/bench/h200-20261204/bench-partial.log"


def _bench_log_rows(text: str) -> tuple[dict, list[int]]:
    """The training-step rows (``(model, batch, amp, channels_last) -> images/s``) and the pipeline's
    images/s per worker count, read from ``bench``'s printed table."""
    steps = {}
    for m in re.finditer(r"^train step +(\w+) +[\d,]+ params +[\d.]+ M MACs +batch +(\d+) +(\w+) +"
                         r"channels_last=(True|False) +([\d,]+) images/s$", text, re.M):
        steps[(m[1], int(m[2]), m[3], m[4] == "True")] = int(m[5].replace(",", ""))
    pipe = [int(m[1].replace(",", "")) for m in re.finditer(r"^data pipeline +workers=\d+ +([\d,]+) images/s$", text, re.M)]
    return steps, pipe


def test_readme_h200_rows_quote_the_gpu_bench_log():
    """The GPU table and its prose are the H200 bench's printed rows, number for number; the log is
    committed and says the run was cut short (no summary line, no time to accuracy)."""
    log = (REPO_ROOT / H200_LOG).read_text()
    steps, pipe = _bench_log_rows(log)
    assert len(pipe) == 9 and len(steps) == 41 and "time to 85%" not in log and log.rstrip().endswith("rc=124")
    models = {"BaselineNet": "baseline", "CifarNet10 (the seed's layout)": "cifarnet10", "CifarNet v1": "cifarnet_v1",
              "**CifarNet**": "cifarnet", "CifarNet wide": "cifarnet_wide"}
    table = _tables("Benchmark")[1]
    assert [row[0] for row in table] == list(models)
    for label, *cells in table:
        for cell, (amp, cl) in zip(cells, [("fp32", False), ("fp32", True), ("bf16", True), ("fp16", True)], strict=True):
            assert cell == f"{steps[(models[label], 512, amp, cl)]:,}", (label, amp, cl)
    prose = " ".join(_docs_text().split("### On a GPU", 1)[1].split("\n## ", 1)[0].split())
    c = {k[1:]: v for k, v in steps.items() if k[0] == "cifarnet"}
    ms = lambda batch: 1000 * batch / c[(batch, "fp32", False)]  # noqa: E731  (milliseconds per step)
    assert (f"({ms(512):.1f} and {ms(128):.1f} ms: {c[(512, 'fp32', False)]:,} and {c[(128, 'fp32', False)]:,} "
            "images/s, NCHW)") in prose
    bf16 = c[(512, "bf16", True)] / c[(512, "fp32", True)]
    assert (f"bf16 runs CifarNet at {100 * bf16:.0f}% of fp32's speed ({c[(512, 'bf16', True)]:,} against "
            f"{c[(512, 'fp32', True)]:,}, channels_last)") in prose
    assert (f"delivers {pipe[0]:,} images/s in the main process and {pipe[8]:,} with 8 workers (the CUDA default), "
            f"{100 * pipe[8] / c[(512, 'fp32', True)]:.0f}% of CifarNet's fp32 training step") in prose
    assert (f"45,000 images take {45_000 / pipe[8]:.1f} s to augment per epoch with 8 workers, against "
            f"{45_000 / c[(512, 'fp32', True)]:.1f} s to train on") in prose
    # the counts the prose gives: the limit (the bench step's start and end in steps.log), the models
    # reached, notebook 11's time, the unit tests' outcome
    steps_log = (REPO_ROOT / "figures/runs/bench/h200-20261204/steps.log").read_text()
    at = {m[2]: int(m[1]) for m in re.finditer(r"^\[(\d+) s\] (unit tests done|bench done|notebook 11 at full size)", steps_log, re.M)}
    assert f"under a {at['bench done'] - at['unit tests done']}-second limit" in prose
    assert "notebook 11 at full size, 136 s left" in steps_log
    assert "stopped by the same call's limit after 136 seconds" in _readme_prose()
    full = sorted({k[0] for k in steps if sum(1 for j in steps if j[0] == k[0]) == 8})
    assert len(full) == 5 and {k[0] for k in steps} - set(full) == {"cifarnet_res20"}
    assert "after five of the seven models (`cifarnet_res20` had one row, v1 + SE none)" in prose
    unit = (REPO_ROOT / "figures/runs/bench/h200-20261204/unit-tests.txt").read_text()
    assert re.search(r"=+ 63 failed, 777 passed", unit) and unit.count("\nFAILED ") == 63
    assert "777 passed and 63 failed" in _readme_prose()
    doctor = (REPO_ROOT / "figures/runs/bench/h200-20261204/doctor.txt").read_text()
    assert "cuda (NVIDIA H200, compute capability 9.0)" in doctor and "doctor rc=0" in doctor
    assert "/work/" not in log + doctor


def _real_test_set():
    """The real CIFAR-10 in data/, whole: a test needing it skips without it (fails in CI)."""
    try:
        data = load_cifar10(download=False)
    except FileNotFoundError:
        skip_without_real_data("the CIFAR-10 test set is not in data/ (CI extracts it; see README, Data)")
    if len(data.test_labels) != 10_000:
        skip_without_real_data(f"data/ holds {len(data.test_labels):,} test images, not CIFAR-10's 10,000 "
                               f"({data.source}); extract the whole copy (see README, Data)")
    return data


def test_shipped_weights_reach_their_recorded_accuracy_on_the_full_test_set():
    """The kit's accuracy claim as a regression test: evaluate the committed weights on all 10,000
    test images on the CPU and compare with the card (to 0.1 points)."""
    data = _real_test_set()
    info = card("cifarnet")
    kind = info["data"]["source"].split(" ")[0]
    if not data.source.startswith(kind):  # the card's accuracy holds for the same copy of the data
        skip_without_real_data(f"the weights were scored on a {kind!r} copy (the offline JPEG images); this one is "
                               f"{data.source!r}")
    model = load_pretrained("cifarnet")
    # normalised with the statistics of the training split the network was trained on
    train_split = data.with_validation() if info["config"].get("validation", True) else data
    _, test = make_loaders(train_split, 256)
    _, acc = evaluate(model, test, CPU, channels_last=True)
    assert acc == pytest.approx(info["final_test_acc"], abs=0.1)


def _check_seed_comparison(runs, summary, label, variants=2):
    """A README comparison of ``variants`` variants, 3 seeds or more each: every row of ``runs`` (variant,
    seed, validation, test, minutes, record) quotes its published record, the variant's name is
    ``label(config)`` of the record's config, and each row of ``summary`` (variant, seeds, validation,
    test, and optionally the final training accuracy's mean) is the mean and standard deviation of that
    variant's rows."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for variant, seed, val, test, minutes, source in runs:
        name = re.search(r"figures/runs/[\w.-]+\.json", source).group(0)
        record = json.loads((REPO_ROOT / name).read_text())
        config = TrainConfig.from_dict(record["config"])
        assert int(seed) == config.seed, name
        assert val == f"{record['final_val_acc']:.2f}%" and test == f"{record['final_test_acc']:.2f}%", name
        assert minutes.startswith(f"{record['train_seconds'] / 60:.1f}"), name
        assert variant == label(config), (name, variant)
        assert not record["interrupted"] and not record["smoke"] and record["data"]["train"] == 45_000
        groups.setdefault(variant, []).append(record)
    assert len(groups) == variants and all(len(g) >= 3 for g in groups.values())   # 3 seeds or more each
    assert [row[0] for row in summary] == list(groups)
    for variant, seeds, val, test, *train in summary:
        records = groups[variant]
        assert seeds == str(len(records))
        if train:   # the training accuracy on augmented images, mean of the final epochs
            mean = statistics.mean(r["history"]["train_acc"][-1] for r in records)
            assert train == [f"{mean:.2f}%"], variant
        for cell, key in ((val, "final_val_acc"), (test, "final_test_acc")):
            values = [r[key] for r in records]
            assert cell == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}%", (variant, key)


def test_readme_recipe_choice_quotes_its_records_and_their_mean_and_spread():
    """The Recipes section's comparison (how to spend the same minutes: crops or fewer epochs) quotes each
    seed's published record, and its summary is the mean and standard deviation of those rows."""
    def schedule(config):
        crops = f"the first {config.crop_epochs} on {config.crop_size}×{config.crop_size} crops"
        return f"{config.epochs} epochs, " + (crops if config.crop_epochs else "whole images")

    runs, summary = [t for t in _tables("Recipes, screened") if t][:2]
    _check_seed_comparison(runs, summary, schedule)


def test_readme_regularisation_screen_changes_one_setting_per_variant():
    """The Recipes section's screen of regularisation strengths: each variant is the course recipe with
    at most one learning setting changed (named as the --set that makes it), 3 seeds or more each,
    every row quoting its published record and the summary their mean and spread."""
    runs, summary = [t for t in _tables("Recipes, screened") if t][2:4]
    _check_seed_comparison(runs, summary, _one_change, variants=4)


def _one_change(config):
    """A course-length variant's name: "the course recipe", or the one ``--set`` that makes it from it."""
    from course_utils.config import LEARNING_SETTINGS

    course = TrainConfig()
    assert (config.epochs, config.batch_size) == (course.epochs, course.batch_size)
    differ = [k for k in LEARNING_SETTINGS if getattr(config, k) != getattr(course, k)]
    assert len(differ) <= 1, differ                                   # one factor per variant
    if not differ:
        return "the course recipe"
    value = getattr(config, differ[0])
    return f"`--set {differ[0]}={value:g}`" if isinstance(value, float) else f"`--set {differ[0]}={value}`"


def _assert_paired(tail_record: dict, pair_record: dict) -> None:
    """A clean-tail run and its pair: the same settings but the tail, and the same history (the same
    computation) for every epoch before the tail began."""
    tail, pair = (TrainConfig.from_dict(r["config"]) for r in (tail_record, pair_record))
    assert tail.clean_epochs > 0 and pair.clean_epochs == 0
    assert replace(tail, clean_fraction=0.0) == pair
    shared = tail.epochs - tail.clean_epochs
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert tail_record["history"][key][:shared] == pair_record["history"][key][:shared], key
        assert tail_record["history"][key][shared] != pair_record["history"][key][shared], key   # then they part


def _published(name: str) -> dict:
    """The published run record ``figures/runs/<name>.json``."""
    return json.loads((REPO_ROOT / f"figures/runs/{name}.json").read_text())


def _all_published() -> dict[str, dict]:
    """Every published run record (``figures/runs/*.json``), by name."""
    return {p.stem: _published(p.stem) for p in sorted((REPO_ROOT / "figures/runs").glob("*.json"))}


def _held_out_validation(record: dict) -> bool:
    """Whether a run held the validation split out (records older than the config field did)."""
    return record.get("config", {}).get("validation", True)


def _readme_prose() -> str:
    """The evidence documents (README, docs/results.md) with every run of whitespace made one space, so a
    quoted phrase matches across line breaks."""
    return " ".join(_docs_text().split())


def _notebook_prose(notebook: str) -> str:
    """The markdown cells of ``notebooks/<notebook>.ipynb`` as committed, whitespace made one space as in
    ``_readme_prose``: what a notebook's reading of its outputs says."""
    cells = json.loads((REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())


def test_readme_clean_tail_at_the_long_length_compares_runs_that_differ_only_in_the_tail():
    """The long-length clean-tail runs and the run without a tail share every epoch before their tails, so
    each pair differs in the tail alone, as the README's Results say."""
    pair = _published("cifarnet_fullres-full-e60-s1-notail")
    for suffix, clean in (("xee08b8", 6), ("x5a6f4b", 15)):
        tail = _published(f"cifarnet_fullres-full-e60-s1-{suffix}")
        assert TrainConfig.from_dict(tail["config"]).clean_epochs == clean
        _assert_paired(tail, pair)
    text = _docs_text()
    for name in ("notail", "xee08b8", "x5a6f4b"):
        assert f"figures/runs/cifarnet_fullres-full-e60-s1-{name}.json" in text


def test_readme_hole_and_batch_at_the_long_length_each_change_one_setting_of_the_one_thread_run():
    """The long-length runs with the smaller hole and with batch 128 each differ from the one-thread long
    run without a tail (same model, seed, threads and epochs) in what their README bullet names, and the
    bullet's differences and training accuracies are computed from the records."""
    reference = _published("cifarnet_fullres-full-e60-s1-notail")
    hole = _published("cifarnet_fullres-full-e60-s1-x6d2118")
    batch = _published("cifarnet_fullres-full-e60-b128-s1-x39d7f3")
    base = TrainConfig.from_dict(reference["config"])
    assert base == LONG_UNTIL_DEC_4
    for run, changed in ((hole, {"dropout_p": 0.1}), (batch, {"batch_size": 128, "lr": 0.1})):
        config = TrainConfig.from_dict(run["config"])
        assert config == replace(base, **changed), changed                  # that setting and nothing else
        assert (run["model"], run["threads"], run["epochs"]) == (reference["model"], 1, 60)
    prose = _readme_prose()

    def points(a, b, key):
        return f"{a[key] - b[key]:.2f}"

    assert (f"{points(hole, reference, 'final_val_acc')} points above on validation and "
            f"{points(hole, reference, 'final_test_acc')} on test") in prose
    assert (f"augmented images at {hole['history']['train_acc'][-1]:.2f}% against "
            f"{reference['history']['train_acc'][-1]:.2f}%") in prose
    assert f"level on validation (+{points(batch, reference, 'final_val_acc')})" in prose


def test_readme_res20_long_run_is_the_long_recipe_on_another_shape_and_its_bullet_is_computed():
    """``cifarnet_res20``'s long run differs from ``cifarnet_fullres``'s two-thread long run in the network
    alone (recipe, seed, threads, epochs), the network is the registered one, and the README bullet's
    differences, training accuracies, minutes and the spread of the shapes' best validation numbers come
    from the records."""
    from course_utils.inspection import count_macs
    from course_utils.models import count_parameters, get_model

    run, ref = _published("cifarnet_res20-full-e60-s1"), _published("cifarnet_fullres-full-e60-s1")
    assert TrainConfig.from_dict(run["config"]) == TrainConfig.from_dict(ref["config"]) == LONG_UNTIL_DEC_4
    assert (run["threads"], run["epochs"]) == (ref["threads"], ref["epochs"]) == (2, 60)
    model, prose = get_model("cifarnet_res20"), _readme_prose()
    assert run["parameters"] == count_parameters(model) and f"{count_macs(model) / 1e6:.2f} M MACs" in prose
    assert f"{ref['final_test_acc'] - run['final_test_acc']:.2f} points below it on test" in prose
    assert (f"training accuracy on augmented images at {run['history']['train_acc'][-1]:.2f}% "
            f"({ref['history']['train_acc'][-1]:.2f}%), in {run['train_seconds'] / 60:.1f} minutes against "
            f"{ref['train_seconds'] / 60:.1f}") in prose
    shapes = ["cifarnet_wide-full-e60-s1", "cifarnet_deep-full-e60-s1", "cifarnet_wider-full-e60-s1",
              "cifarnet_fullres-full-e60-s1", "cifarnet_res20-full-e60-s1"]
    vals = sorted((_published(n)["final_val_acc"] for n in shapes), reverse=True)
    assert (f"At the 60-epoch recipe, five shapes near 195,000 parameters end between {vals[-1]:.2f}% and {vals[0]:.2f}% on validation, "
            f"and the three best within {vals[0] - vals[2]:.2f} points of each other") in prose


def test_readme_c3_at_16x16_long_run_has_fullres_weights_and_its_bullet_is_computed():
    """The long run with C3 at 16×16 is ``cifarnet_fullres`` with ``c3_stride=1`` (the same parameter count,
    the README's MACs), the long recipe, seed 1, and the README's differences from ``cifarnet_fullres``'s
    two-thread run come from the records."""
    from course_utils.inspection import count_macs
    from course_utils.models import count_parameters, get_model

    run, ref = _published("cifarnet_fullres_c3s1-full-e60-s1"), _published("cifarnet_fullres-full-e60-s1")
    assert TrainConfig.from_dict(run["config"]) == TrainConfig.from_dict(ref["config"]) == LONG_UNTIL_DEC_4
    model, prose = get_model("cifarnet_fullres", c3_stride=1), _readme_prose()
    assert run["parameters"] == count_parameters(model) == ref["parameters"]
    assert f"{count_macs(model) / 1e6:.2f} M MACs instead of {count_macs(get_model('cifarnet_fullres')) / 1e6:.2f} M" in prose
    assert (f"{ref['final_val_acc'] - run['final_val_acc']:.2f} points below `cifarnet_fullres` on validation "
            f"({ref['final_val_acc']:.2f}%) and {run['final_test_acc'] - ref['final_test_acc']:.2f} above it on test") in prose
    at_60 = [r for r in _all_published().values() if r.get("epochs") == 60]
    assert run["final_test_acc"] == max(r.get("final_test_acc") or 0.0 for r in at_60)   # (a record may hold none)
    assert f"{run['final_test_acc'] - ref['final_test_acc']:.2f} above it on test, the best plain test accuracy at 60 epochs" in prose


def test_readme_long_recipe_run_is_todays_long_recipe_and_its_bullet_is_computed():
    """The run behind the long recipe at 100 epochs trained exactly ``LONG_AT_100`` on its network, it
    differs from the same network's 60-epoch run in the two settings the README names (epochs and the hole),
    and the bullet's differences, its standing among the published runs, training accuracies and minutes
    come from the records."""
    from course_utils.config import LONG_RECIPE_MODEL

    name = "cifarnet_res20-full-e100-s1-x6d2118"
    run, before = _published(name), _published("cifarnet_res20-full-e60-s1")
    long = LONG_AT_100
    assert TrainConfig.from_dict(run["config"]) == long and run["model"] == before["model"] == LONG_RECIPE_MODEL
    assert replace(long, epochs=60, dropout_p=0.25) == TrainConfig.from_dict(before["config"]) == LONG_UNTIL_DEC_4
    assert (run["threads"], run["epochs"], run["parameters"]) == (2, 100, before["parameters"])
    # the other runs: other networks and recipes (its own seeds 2 and 3, the same recipe, are its spread)
    # (and the runs published after it was adopted: the one-factor split of its pair, and its length alone)
    later = ("cifarnet_res20-full-e100-s1", "cifarnet_res20-full-e200-s1-x6d2118", "cifarnet_res20-full-e200-s2-x6d2118",
             "cifarnet_res20-full-e200-s3-x6d2118")
    others = [r for n, r in _all_published().items() if n not in (name, *later)
              and not re.fullmatch(r"cifarnet_res20-full-e100-s[23]-x6d2118", n)]
    best_other_val = max(r.get("final_val_acc") or 0.0 for r in others)
    assert run["final_val_acc"] > best_other_val                        # validation chooses it
    # on test it led the runs held out before it; the two that came after end higher
    held_out = [r for r in others if _held_out_validation(r)]
    assert run["final_test_acc"] > max(r.get("final_test_acc") or 0.0 for r in held_out)
    split_test, long_test, long_test_2, long_test_3 = (_published(n)["final_test_acc"] for n in later)
    assert min(split_test, long_test, long_test_2, long_test_3) > run["final_test_acc"]
    v, t, prose = run["final_val_acc"], run["final_test_acc"], _readme_prose()
    assert (f"It ends at {v:.2f}% on validation, {v - before['final_val_acc']:.2f} points above the same network at "
            f"the 60-epoch recipe ({before['final_val_acc']:.2f}%) and {v - best_other_val:.2f} above the best of the "
            f"other long runs (SE, {best_other_val:.2f}%), and at {t:.2f}% on test "
            f"({run['final_test_acc_flip_tta']:.2f}% with flip averaging, beside), then the best plain test accuracy of the "
            f"runs that held a validation split out (four runs below end higher: the one-factor split, {split_test:.2f}%, "
            f"and the three seeds at 200 epochs, {long_test:.2f}%, {long_test_2:.2f}% and {long_test_3:.2f}%), "
            f"{89 - t:.2f} points short of the 89% aimed at, in "
            f"{run['train_seconds'] / 60:.1f} minutes") in prose
    assert (f"training accuracy on augmented images ends at {run['history']['train_acc'][-1]:.2f}% "
            f"({before['history']['train_acc'][-1]:.2f}% at 60 epochs)") in prose
    assert (f"Recorded at 100 epochs: {v:.2f}% on validation and {t:.2f}% on test after {run['train_seconds'] / 60:.1f} "
            f"minutes") in prose


def test_readme_final_long_run_trains_the_long_recipe_on_all_training_images_and_its_bullet_is_computed():
    """The 100-epoch long recipe's final run is ``LONG_AT_100`` with nothing held out (the
    recipe was chosen on validation before), on the long recipe's network; the README quotes its final
    epoch's test accuracy (not the best of the epochs it logged), its difference from the run that held
    validation out, and the course-length seed spread it compares with, all from the records."""
    import statistics

    from course_utils.config import LONG_RECIPE_MODEL

    run, held = _published("cifarnet_res20-full-e100-s1-xe560c7"), _published("cifarnet_res20-full-e100-s1-x6d2118")
    assert TrainConfig.from_dict(run["config"]) == replace(LONG_AT_100, validation=False)
    assert run["model"] == LONG_RECIPE_MODEL and (run["threads"], run["epochs"], run["parameters"]) == (2, 100, held["parameters"])
    assert run["data"]["train"] == 50_000 and held["data"]["train"] == 45_000
    h = run["history"]
    assert run["final_val_acc"] is None and run["final_test_acc"] == h["test_acc"][-1]      # the final epoch
    t, f, prose = run["final_test_acc"], run["final_test_acc_flip_tta"], _readme_prose()
    course = [_published(n) for n in ("cifarnet-full-e40-s1", "cifarnet-full-e40-s2-x51c88c", "cifarnet-full-e40-s3-x51c88c")]
    assert {TrainConfig.from_dict(r["config"]) for r in course} == {replace(TrainConfig(), seed=s) for s in (1, 2, 3)}
    spread = statistics.stdev(r["final_test_acc"] for r in course)
    assert (f"ends at {t:.2f}% on test ({f:.2f}% with flip averaging, beside), {t - held['final_test_acc']:.2f} points "
            f"above the run that held 5,000 images out ({held['final_test_acc']:.2f}%), and {89 - t:.2f} points short "
            f"of the 89% aimed at") in prose
    assert abs(t - held["final_test_acc"]) < spread                                    # "less than a seed's spread"
    # its row's time: epoch 5 held the pause, and the run's minutes with that epoch at the crop epochs' median
    crop = h["seconds"][:TrainConfig.from_dict(run["config"]).crop_epochs]
    median = statistics.median(crop)
    at_median = (sum(h["seconds"]) - h["seconds"][4] + median) / 60
    assert (f"including epoch 5, {h['seconds'][4]:.0f} s against a median crop epoch of {median:.0f} s" in _docs_text()
            and f"{at_median:.1f} min with that epoch at the median" in _docs_text())
    assert f"{run['train_seconds'] / 60:.1f} min as recorded (epoch 5's {(h['seconds'][4] - median) / 60:.0f} minutes" in prose
    assert f"test standard deviation of CifarNet's three crop runs: {spread:.2f} points" in prose
    assert (f"ends at {h['train_acc'][-1]:.2f}% ({held['history']['train_acc'][-1]:.2f}% with 45,000 images)") in prose
    assert f"it ends at {t:.2f}% on test, {89 - t:.2f} points short." in prose
    assert f"{run['train_seconds'] / 60:.1f} min with the test set read every epoch" in prose


def test_readme_ablation_table_quotes_the_committed_study():
    """The README's ablation table has one row per variant of the committed study, each quoting its
    summary's validation and test mean ± std and the seed-range verdict of ``compare_to_reference``
    (validation), so the table cannot drift from the CSVs notebook 09 reads."""
    from course_utils import ablation

    figures = REPO_ROOT / "figures"
    summary = {r["variant"]: r for r in ablation.read_csv(figures / ablation.SUMMARY_CSV)}
    verdicts = {c["variant"]: c["verdict"] for c in ablation.compare_to_reference(ablation.read_csv(figures / ablation.RUNS_CSV))}
    words = {"above": "every seed above", "below": "every seed below", "overlap": "ranges overlap: no finding"}
    [table] = [t for t in _tables("Results") if t and t[0][0].startswith("`reference`")]
    quoted = []
    for row in table:
        name = re.match(r"`([\w-]+)`", row[0]).group(1)
        s = summary[name]
        val, test, seeds = (cell.replace("*", "") for cell in row[2:5])
        assert val == f"{float(s['val_mean']):.2f} ± {float(s['val_std']):.2f}", name
        assert test == f"{float(s['test_mean']):.2f} ± {float(s['test_std']):.2f}", name
        assert seeds == ("—" if name == "reference" else words[verdicts[name]]), name
        quoted.append(name)
    assert quoted == [v.name for v in ablation.VARIANTS]
    # notebook 09's reading of the figure: the reference's bar (mean +- one std) is not its seeds' range
    ref = summary["reference"]
    low, high = float(ref["val_mean"]) - float(ref["val_std"]), float(ref["val_mean"]) + float(ref["val_std"])
    ref_seeds = [float(r["final_val_acc"]) for r in ablation.read_csv(figures / ablation.RUNS_CSV) if r["variant"] == "reference"]
    assert low < min(ref_seeds) and high < max(ref_seeds)
    nb09 = _notebook_prose("09_ablation")
    assert (f"the reference's bar, {low:.2f}–{high:.2f}%, reaches below its lowest seed and stops short of its "
            "highest") in nb09
    # the reference's seed 1 trained alone on both threads: outside the study's seed range, as docs say
    alone = _published("ablation-e4-reference-s1-alone")["row"]
    seeds = [float(r["final_val_acc"]) for r in ablation.read_csv(figures / ablation.RUNS_CSV) if r["variant"] == "reference"]
    assert alone["final_val_acc"] < min(seeds)
    assert (f"That lone run ended at {alone['final_val_acc']:.2f}% on validation") in _readme_prose()
    assert (f"run ends elsewhere: {min(seeds) - alone['final_val_acc']:.2f} points below the lowest of the study's three "
            f"reference seeds, {min(seeds):.2f}–{max(seeds):.2f}%.") in _readme_prose()


def _records_by_seed(runs) -> dict[int, dict[str, dict]]:
    """A seed comparison's rows (variant, seed, ..., record) as each seed's published record per variant."""
    by_seed: dict[int, dict[str, dict]] = {}
    for variant, seed, *_, source in runs:
        name = re.search(r"figures/runs/[\w.-]+\.json", source).group(0)
        by_seed.setdefault(int(seed), {})[variant] = json.loads((REPO_ROOT / name).read_text())
    return by_seed


def test_readme_clean_tail_screen_pairs_each_seed_with_its_run_without_the_tail():
    """The Recipes section's screen of the clean tail at the course length: 3 seeds or more of the course
    recipe with ``--set clean_fraction=0.1`` and of their pairs (the course recipe), each row quoting its
    record and the summary their mean and spread; each seed's two runs share every epoch before the tail,
    and the table of differences is tail minus pair, seed by seed, from the records."""
    tables = [t for t in _tables("Recipes, screened") if t]
    runs, summary, differences = tables[4:7]
    _check_seed_comparison(runs, summary, _one_change)
    by_seed = _records_by_seed(runs)
    assert [int(row[0]) for row in differences] == sorted(by_seed)
    for seed, val, test in differences:
        pair = by_seed[int(seed)]
        tail, plain = pair["`--set clean_fraction=0.1`"], pair["the course recipe"]
        _assert_paired(tail, plain)
        assert val == f"{tail['final_val_acc'] - plain['final_val_acc']:+.2f}", seed
        assert test == f"{tail['final_test_acc'] - plain['final_test_acc']:+.2f}", seed


def test_readme_label_smoothing_and_hole_screen_changes_one_setting_per_variant():
    """The Recipes section's screen of label smoothing and of the coarse-dropout hole's probability at the
    course length: each variant is the course recipe with one setting changed (named as the --set that makes
    it), 3 seeds or more each, every row quoting its published record and the summary their mean and spread;
    the reference is the course recipe's one-thread runs on the same machine (the clean-tail screen's pairs)."""
    tables = [t for t in _tables("Recipes, screened") if t]
    runs, summary = tables[9:11]
    _check_seed_comparison(runs, summary, _one_change, variants=4)
    variants = {row[0] for row in summary}
    assert variants == {"the course recipe", "`--set label_smoothing=0`", "`--set dropout_p=0.1`", "`--set dropout_p=0.5`"}
    references = [row[-1] for row in runs if row[0] == "the course recipe"]
    assert all("-notail.json" in source for source in references) and len(references) >= 3
    # the lighter hole's per-seed differences, as the prose quotes them
    by_seed = _records_by_seed(runs)
    lighter = [f"{r['`--set dropout_p=0.1`']['final_val_acc'] - r['the course recipe']['final_val_acc']:.2f}"
               for _, r in sorted(by_seed.items())]
    prose = _readme_prose()
    assert f"by {lighter[0]}, {lighter[1]} and {lighter[2]} points" in prose
    # the heavier hole: below on validation seed for seed of the range, but on test the ranges overlap (said)
    import statistics

    def accs(variant, key):
        return [r[variant][key] for r in by_seed.values()]
    hv, rv = accs("`--set dropout_p=0.5`", "final_val_acc"), accs("the course recipe", "final_val_acc")
    ht, rt = accs("`--set dropout_p=0.5`", "final_test_acc"), accs("the course recipe", "final_test_acc")
    assert max(hv) < min(rv) and max(ht) >= min(rt)
    assert (f"the test set leans the same way ({statistics.mean(ht):.2f}% against {statistics.mean(rt):.2f}% on the "
            f"means), though its ranges overlap ({min(ht):.2f}–{max(ht):.2f}% against {min(rt):.2f}–{max(rt):.2f}%)") in prose


def test_readme_weight_average_screen_scores_each_seeds_average_beside_its_own_weights():
    """The Recipes section's screen of the weight average at the course length: per seed, one run of the course
    recipe with ``--set ema_decay=0.999``, its trained weights and their average scored on the same images
    after the same last epoch; every cell from the record, the differences average minus weights, the summary
    the mean and spread of the rows. The average only watches: each run's trained weights have the history of
    the course recipe's own run of that seed (the clean-tail screen's pair), epoch for epoch."""
    import statistics

    tables = [t for t in _tables("Recipes, screened") if t]
    runs, summary = tables[7:9]
    assert len(runs) >= 3
    cells = {"weights": ([], []), "average": ([], [])}
    same_threads = 0
    for seed, val, ema_val, val_diff, test, ema_test, test_diff, minutes, source in runs:
        name = re.search(r"figures/runs/[\w.-]+\.json", source).group(0)
        record = json.loads((REPO_ROOT / name).read_text())
        assert TrainConfig.from_dict(record["config"]) == TrainConfig(seed=int(seed), ema_decay=0.999), name
        assert not record["interrupted"] and not record["smoke"] and record["data"]["train"] == 45_000
        assert (val, ema_val) == (f"{record['final_val_acc']:.2f}%", f"{record['final_ema_val_acc']:.2f}%")
        assert (test, ema_test) == (f"{record['final_test_acc']:.2f}%", f"{record['final_ema_test_acc']:.2f}%")
        assert val_diff == f"{record['final_ema_val_acc'] - record['final_val_acc']:+.2f}", seed
        assert test_diff == f"{record['final_ema_test_acc'] - record['final_test_acc']:+.2f}", seed
        assert minutes.startswith(f"{record['train_seconds'] / 60:.1f}"), name
        plain = _published(f"cifarnet-full-e40-s{seed}-notail")
        # the pair ran its last epochs (after the clean tail's start) on another thread count for some seed:
        # the sums' order changes, so the histories agree up to there
        tail = TrainConfig(clean_fraction=0.1)
        shared = 40 if plain["threads"] == record["threads"] else tail.epochs - tail.clean_epochs
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc"):
            assert record["history"][key][:shared] == plain["history"][key][:shared], (seed, key)
        same_threads += plain["threads"] == record["threads"]
        for kind, v, t in (("weights", "final_val_acc", "final_test_acc"),
                           ("average", "final_ema_val_acc", "final_ema_test_acc")):
            cells[kind][0].append(record[v])
            cells[kind][1].append(record[t])
    assert same_threads >= 2       # two seeds' histories agree over all 40 epochs with a run without the average
    history = _published("cifarnet-full-e40-s1-x494dbc")["history"]
    text = _docs_text()
    assert (f"seed 1 after epoch 26, at half the peak:\n  {history['ema_val_acc'][25]:.2f}% on validation against {history['val_acc'][25]:.2f}%"
            in text)
    assert [row[0] for row in summary] == ["the trained weights", "their average (`--set ema_decay=0.999`)"]
    for (_, seeds, val, test), kind in zip(summary, ("weights", "average")):
        assert seeds == str(len(runs))
        for cell, values in zip((val, test), cells[kind]):
            assert cell == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}%", (kind, cell)


def test_readme_long_recipe_spread_over_three_seeds_is_computed_from_the_records():
    """Seeds 1, 2 and 3 of today's long recipe (validation held out): each README row quotes its record
    (the results-table test checks that), and the bullet's mean ± standard deviation and range are
    computed from the three records' final epochs."""
    import statistics

    from course_utils.config import LONG_RECIPE_MODEL

    runs = [_published(f"cifarnet_res20-full-e100-s{s}-x6d2118") for s in (1, 2, 3)]
    for seed, run in enumerate(runs, start=1):
        assert TrainConfig.from_dict(run["config"]) == replace(LONG_AT_100, seed=seed)
        assert run["model"] == LONG_RECIPE_MODEL and run["data"]["train"] == 45_000 and not run["interrupted"]
        assert run["final_val_acc"] == run["history"]["val_acc"][-1]          # the final epoch, not the best
    v, t = [r["final_val_acc"] for r in runs], [r["final_test_acc"] for r in runs]
    prose = _readme_prose()
    assert (f"the long recipe ends at {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}% on validation and "
            f"{statistics.mean(t):.2f} ± {statistics.stdev(t):.2f}% on test (mean ± standard deviation over 3 seeds; "
            f"test from {min(t):.2f}% to {max(t):.2f}%)") in prose
    assert (f"Seeds 2 and 3 end at {v[1]:.2f}% and {v[2]:.2f}% on validation, {t[1]:.2f}% and {t[2]:.2f}% on test") in prose
    sixty = _published("cifarnet_res20-full-e60-s1")
    assert min(v) > sixty["final_val_acc"] and max(t) < 89
    assert (f"On validation every seed ends above the same network at the 60-epoch recipe with the hole at 0.25 "
            f"({sixty['final_val_acc']:.2f}%, one seed)") in prose and "No seed reaches the 89% aimed at on test." in prose
    rows = [row for row in _results_rows() if "long recipe, seed" in row[0]]
    assert [row[0].split("seed ")[1][0] for row in rows] == ["2", "3"]


def test_readme_ten_minute_stretch_arithmetic_is_computed_from_the_records():
    """Why the course recipe cannot simply be cut to 10 minutes: the README's numbers (training seconds,
    the share to cut, with and without the evaluation, the margin over 85% over 3 seeds) come from the course
    run's record and the recipe's seeds 2 and 3, on the same processor."""
    import statistics

    run = _published("cifarnet-full-e40-s1")
    assert TrainConfig.from_dict(run["config"]) == TrainConfig.recipe("course")
    steps = sum(run["history"]["train_seconds"])
    seeds = [run, _published("cifarnet-full-e40-s2-x51c88c"), _published("cifarnet-full-e40-s3-x51c88c")]
    for s, r in enumerate(seeds, start=1):
        assert TrainConfig.from_dict(r["config"]) == replace(TrainConfig.recipe("course"), seed=s)
        assert r["device_name"] == "AMD EPYC (AVX512)"
    v = [r["final_val_acc"] for r in seeds]
    prose = _readme_prose()
    assert (f"the training steps alone took {steps:.1f} s of the run's {run['train_seconds']:.1f} s") in prose
    evaluation = run["train_seconds"] - steps
    assert (f"so 10 minutes would need {round(100 * (1 - (600 - evaluation) / steps))}% fewer or cheaper steps with "
            f"the evaluation as it is ({round(100 * (1 - 600 / steps))}% fewer would bring the steps alone to 600 s)") in prose
    # the augmentation's share, from the benchmark of the same processor: even free, the steps exceed 600 s
    bench = json.loads((REPO_ROOT / "figures/runs/bench/bench-cpu-20261204-134440.json").read_text())
    assert bench["device_name"] == run["device_name"] == "AMD EPYC (AVX512)"
    pipeline = bench["pipeline"][0]
    assert pipeline["workers"] == 0 and run["config"]["num_workers"] in (None, 0)   # the CPU default: no worker
    augmenting = run["epochs"] * run["data"]["train"] / pipeline["images_per_s"]
    assert (f"the pipeline delivers {pipeline['images_per_s']:,.0f} images/s with no loader worker on the same "
            f"processor") in prose
    assert (f"its 40 passes over {run['data']['train']:,} images take about {augmenting:.1f} s of those steps, and "
            f"with the augmentation free the steps would still take {steps - augmenting:.1f} s, over 600") in prose
    assert steps - augmenting > 600 and run["epochs"] == 40
    assert (f"the recipe ends {statistics.mean(v) - 85:.2f} points above 85% on validation "
            f"({statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}% over 3 seeds") in prose


def test_docs_compiling_on_the_cpu_makes_no_room_for_ten_minutes_computed_from_the_records():
    """The compile probe's medians and first-pass compile times, applied to the course run's own training
    steps per phase (24x24 crops, then whole images)."""
    import statistics

    probe = json.loads((REPO_ROOT / "figures/runs/bench/compile-cpu-20261205.json").read_text())
    assert probe["threads"] == 2 and "Xeon" in probe["device_name"] and len(probe["rows"]) == 6
    ratios = {size: [r["compiled_images_per_s"] / r["eager_images_per_s"] for r in probe["rows"] if r["size"] == size]
              for size in (24, 32)}
    median = {size: statistics.median(v) for size, v in ratios.items()}
    cold = {r["size"]: r["compile_seconds"] for r in probe["rows"] if r["pass"] == 1}
    run = _published("cifarnet-full-e40-s1")
    config = TrainConfig.from_dict(run["config"])
    assert config.crop_size == 24 and config.crop_epochs == 30
    passes = run["history"]["train_seconds"]
    crops, whole = sum(passes[:config.crop_epochs]), sum(passes[config.crop_epochs:])
    compiled = crops / median[24] + whole / median[32]
    saved = crops + whole - compiled
    prose = _readme_prose()
    assert (f"ran {median[24]:.2f}× as fast compiled on 24×24 crops and {median[32]:.2f}× on whole images (medians; "
            f"the passes ranged {min(ratios[24]):.2f}–{max(ratios[24]):.2f} and {min(ratios[32]):.2f}–"
            f"{max(ratios[32]):.2f}), after {cold[24]:.1f} s and {cold[32]:.1f} s of compiling") in prose
    assert (f"the course run's {crops + whole:.1f} s of training passes all sped up by those ratios (an upper "
            f"bound: they include loading and augmenting the images, which compiling does not touch), they would "
            f"take {compiled:.1f} s, {saved:.1f} s less, of which the compiling takes {sum(cold.values()):.1f} s: "
            f"{(run['train_seconds'] - saved + sum(cold.values())) / 60:.1f} minutes instead of "
            f"{run['train_seconds'] / 60:.1f}") in prose


def test_readme_one_factor_split_of_the_long_recipe_is_computed_from_the_records():
    """The long recipe changed two settings at once (100 epochs, the hole at 0.1); the split run (100
    epochs, the hole at 0.25, seed 1) differs from the 60-epoch run in length only and from seed 1 of the
    long recipe in the hole only. The README's differences come from the three records."""
    split = _published("cifarnet_res20-full-e100-s1")
    sixty = _published("cifarnet_res20-full-e60-s1")
    long1 = _published("cifarnet_res20-full-e100-s1-x6d2118")
    assert TrainConfig.from_dict(split["config"]) == replace(LONG_AT_100, dropout_p=0.25)
    assert replace(TrainConfig.from_dict(sixty["config"]), epochs=100) == TrainConfig.from_dict(split["config"])
    assert split["final_val_acc"] == split["history"]["val_acc"][-1] and split["data"]["train"] == 45_000
    prose = _readme_prose()
    assert (f"Length alone (60 to 100 epochs, the hole at 0.25 in both, seed 1): "
            f"{split['final_val_acc'] - sixty['final_val_acc']:+.2f} points on validation") in prose
    assert (f"The hole alone (0.25 to 0.1 at 100 epochs, seed 1 against seed 1): "
            f"{long1['final_val_acc'] - split['final_val_acc']:+.2f} points on validation") in prose


def test_readme_headline_three_seed_summaries_are_computed_from_the_records():
    """The README's short Results quote each recipe's mean ± standard deviation over its three seeds; the
    seeds differ from seed 1 in the seed alone, and "on every seed" holds for each recipe's claim."""
    import statistics

    course = [_published(n) for n in ("cifarnet-full-e40-s1", "cifarnet-full-e40-s2-x51c88c",
                                      "cifarnet-full-e40-s3-x51c88c")]
    long = [_published(f"cifarnet_res20-full-e100-s{s}-x6d2118") for s in (1, 2, 3)]
    for runs in (course, long):
        first = TrainConfig.from_dict(runs[0]["config"])
        assert [r["config"]["seed"] for r in runs] == [1, 2, 3]
        assert all(replace(TrainConfig.from_dict(r["config"]), seed=1) == first for r in runs)
        assert len({r["model"] for r in runs}) == 1 and all(_held_out_validation(r) for r in runs)

    def spread(runs, key):
        values = [r[key] for r in runs]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}%"

    headline = " ".join(_sections("Results")[0].split())    # the README's, not docs/results.md's
    rows = _tables_in(_sections("Results")[0])[0]
    records = [_published(re.search(r"figures/runs/([\w.-]+)\.json", row[-1]).group(1)) for row in rows]
    assert len(records) == 6 and {(r["device_name"], r["threads"]) for r in records} == {("AMD EPYC (AVX512)", 2)}
    assert "on 2 threads of an AMD EPYC with AVX-512, the processor every headline run's record names" in headline
    assert (f"the course recipe ends at {spread(course, 'final_val_acc')} on validation and "
            f"{spread(course, 'final_test_acc')} on test") in headline
    assert (f"and the long recipe (100 epochs) at {spread(long, 'final_val_acc')} and {spread(long, 'final_test_acc')}"
            in headline)
    assert "ends at 85% or more on test on every seed" in headline and all(r["final_test_acc"] >= 85.0 for r in course)
    low = min(course, key=lambda r: r["final_val_acc"])
    assert f"(seed {low['config']['seed']} at {low['final_val_acc']:.2f}% on validation)" in headline
    assert f"seed 1, alone on the cores, took {course[0]['train_seconds'] / 60:.1f} minutes" in headline
    assert course[0]["threads"] == 2 and course[1]["threads"] == course[2]["threads"] == 1
    assert "at 100 epochs the long recipe falls short of the 89% on test it aims at, on every seed" in headline
    assert all(r["final_test_acc"] < 89.0 for r in long)


def _notebook_09_speeds() -> dict[str, tuple[str, str, str, bool]]:
    """Notebook 09's committed speed table (section 4): variant -> (ratio, low, high, is a reading)."""
    text = committed_output("09_ablation", "speed vs the reference")
    rows = re.findall(r"^([\w-]+)\s+[\d.]+M\s+[\d.]+x\s+\d+\s+([\d.]+)x\s+([\d.]+)-([\d.]+)x\s+(.+)$", text, flags=re.M)
    assert len(rows) == 7, text
    return {name: (ratio, low, high, reading.strip() == "yes") for name, ratio, low, high, reading in rows}


def test_ablation_speeds_in_docs_and_notebook_prose_are_notebook_09s_committed_run():
    """The ablation table's speed column and notebook 09's reading of it quote the speed cell's output."""
    speeds = _notebook_09_speeds()
    [table] = [t for t in _tables("Results") if t and t[0][0].startswith("`reference`")]
    column = {re.match(r"`([\w-]+)`", row[0]).group(1): row[5] for row in table}
    for name, (ratio, low, high, reading) in speeds.items():
        if name == "reference":
            continue
        assert column[name] == f"{ratio}× ({low}–{high}{'' if reading else ': no reading'})", name
    prose = _notebook_prose("09_ablation")
    r = {name: speeds[name] for name in speeds}
    # max-pool's MACs against the reference's, from the study's own rows
    from course_utils import ablation

    macs = {row["variant"]: int(row["macs"]) for row in ablation.read_csv(REPO_ROOT / "figures" / ablation.RUNS_CSV)}
    macs_ratio = f"{macs['maxpool'] / macs['reference']:.2f}×"
    assert (f"measured the max-pool variant at {r['maxpool'][0]}× the reference's training images per second "
            f"(range {r['maxpool'][1]}–{r['maxpool'][2]})") in prose
    assert f"It also trains at {r['dilated-stride'][0]}× the reference's speed ({r['dilated-stride'][1]}–" in prose
    assert f"{r['standard-conv'][0]}× the reference's speed (range {r['standard-conv'][1]}–{r['standard-conv'][2]})" in prose
    assert f"measured it at {r['cbam'][0]}× the reference's speed ({r['cbam'][1]}–{r['cbam'][2]})" in prose
    assert (f"and ECA at {r['eca'][0]}× ({r['eca'][1]}–{r['eca'][2]}); SE measured {r['se'][0]}× "
            f"({r['se'][1]}–{r['se'][2]}), a range that includes 1: on this run its cost is no reading") in prose
    for other in ("11_full_training", "12_assignment"):   # the lessons that cite the max-pool finding
        assert f"{macs_ratio} the MACs and {r['maxpool'][0]}× the speed" in (REPO_ROOT / f"notebooks/{other}.ipynb").read_text()
    assert f"so it does {macs_ratio} the MACs" in prose and f"max-pool ({macs_ratio} the MACs)" in prose
    assert f"max-pool (by spending {macs_ratio} the MACs" in _readme_prose()
    sc = r["standard-conv"]   # the network-design screen cites the same row
    assert f"standard convs in C4 as well, trains {sc[0]}× as fast as CifarNet (range {sc[1]}–{sc[2]})" in _readme_prose()
    # what the prose reads as findings are readings (ranges clear of 1), and SE's is not
    assert all(r[v][3] for v in ("maxpool", "dilated-stride", "standard-conv", "cbam", "eca"))
    assert not r["se"][3]
    assert float(r["standard-conv"][1]) > 1 and max(float(r[v][2]) for v in ("maxpool", "dilated-stride", "cbam")) < 1


def test_notebook_08s_throughput_reading_quotes_the_committed_outputs():
    """Notebook 08's reading of its throughput cell quotes that cell, its per-epoch cost follows from it, and
    the loader pass it sets beside them is notebook 01's committed one (a re-run of 01 left a stale copy here
    once: the number was thought cited nowhere)."""
    cell = committed_output("08_augmentation", "torchvision v2:")
    alb, tv = (re.search(rf"{name}:\s+([\d,]+) images/s", cell).group(1) for name in ("albumentations", "torchvision v2"))
    [loader] = re.findall(r"([\d,]+) images/s in this process", committed_output("01_data_analysis", "images/s in this process"))
    prose = _notebook_prose("08_augmentation")
    per_epoch = 45_000 / int(alb.replace(",", ""))
    assert f"({alb} against {tv}, printed above;" in prose
    assert f"at {alb} images/s the 45,000 training images take 45,000 / {alb} ≈ {per_epoch:.1f} s of one core" in prose
    assert f"Notebook 01's pass over the training loader ({loader} images/s in its saved run" in prose
    assert 1.5 < int(alb.replace(",", "")) / int(tv.replace(",", "")) < 2.5   # "about twice as many images a second"


def test_ablation_speeds_name_the_processor_the_cell_printed():
    """The docs and notebook 09's prose name the machine of the speed table: the cell's own header line."""
    header = committed_output("09_ablation", "speed vs the reference").splitlines()[0]
    m = re.fullmatch(r"training step, batch 128, channels_last, on cpu: (.+) \((AVX512|AVX2)\), (\d+) threads", header)
    assert m, header
    processor = " ".join(m.group(1).replace("(R)", "").replace(" Processor", "").split())
    vector = {"AVX512": "AVX-512", "AVX2": "AVX2"}[m.group(2)]
    assert f"on an {processor} with {vector}, {m.group(3)} threads, nothing else running" in " ".join(
        (REPO_ROOT / "docs/results.md").read_text().split())
    words = {"1": "one core", "2": "two cores"}[m.group(3)]
    assert f"{words} of an {processor} with {vector}, nothing else running" in _notebook_prose("09_ablation")


def test_docs_length_as_the_one_factor_is_computed_from_the_records():
    """The 200-epoch run differs from seed 1 of the long recipe (100 epochs) in the length alone; the
    differences docs/results.md quotes come from the two records."""
    long200 = _published("cifarnet_res20-full-e200-s1-x6d2118")
    long100 = _published("cifarnet_res20-full-e100-s1-x6d2118")
    assert TrainConfig.from_dict(long200["config"]) == replace(LONG_AT_100, epochs=200) == TrainConfig.recipe("long")
    assert long200["final_val_acc"] == long200["history"]["val_acc"][-1] and long200["data"]["train"] == 45_000
    prose = _readme_prose()
    assert (f"Against the same recipe at 100 epochs, seed 1: "
            f"{long200['final_val_acc'] - long100['final_val_acc']:+.2f} points on validation, "
            f"{long200['final_test_acc'] - long100['final_test_acc']:+.2f} on test") in prose


def test_docs_length_as_the_one_factor_ranks_against_the_three_100_epoch_seeds():
    """The 200-epoch run's standing as the docs and README state it: above every 100-epoch seed on
    validation (and by how much), and the first long run whose plain test accuracy reaches 89%."""
    long200 = _published("cifarnet_res20-full-e200-s1-x6d2118")
    v100 = [_published(f"cifarnet_res20-full-e100-s{s}-x6d2118")["final_val_acc"] for s in (1, 2, 3)]
    prose = _readme_prose()
    assert long200["final_val_acc"] > max(v100)
    assert (f"above every seed of the 100-epoch recipe on validation ({min(v100):.2f}–{max(v100):.2f}%): by "
            f"{long200['final_val_acc'] - max(v100):.2f} points over the best of them") in prose
    seed2 = _published("cifarnet_res20-full-e200-s2-x6d2118")
    others = [r.get("final_test_acc") or 0.0 for n, r in _all_published().items()
              if not re.fullmatch(r"cifarnet_res20-full-e200-s[123]-x6d2118", n)]
    assert max(others) < 89.0 <= min(long200["final_test_acc"], seed2["final_test_acc"])
    assert (f"it ends at {long200['final_val_acc']:.2f}% on validation, above all three seeds at 100 epochs, and at "
            f"{long200['final_test_acc']:.2f}% on test") in prose
    assert f"{long200['train_seconds'] / 60:.1f} minutes as recorded across sessions" in prose
    seed3 = _published("cifarnet_res20-full-e200-s3-x6d2118")
    assert (f"At 200 epochs (three seeds) it ends at {long200['final_test_acc']:.2f}%, {seed2['final_test_acc']:.2f}% and "
            f"{seed3['final_test_acc']:.2f}% on test") in prose
    # seeds 2 and 3 at 200 epochs ran on another processor and thread count than their 100-epoch pairs: said
    assert all(r["device_name"].startswith("Intel(R) Xeon(R)") and r["threads"] == 2 for r in (seed2, seed3))
    assert all(_published(f"cifarnet_res20-full-e100-s{s}-x6d2118")["device_name"] == "AMD EPYC (AVX512)" and
               _published(f"cifarnet_res20-full-e100-s{s}-x6d2118")["threads"] == 1 for s in (2, 3))
    assert ("each seed higher than itself at 100 (seeds 2 and 3 on another processor and thread count than at 100, "
            "which alone moves a run about as far as another seed") in prose
    assert ("seeds 2 and 3 ran on one thread each of the AMD EPYC at 100 epochs and on two threads of an Intel Xeon "
            "at 200, a change that alone moves a run about as far as another seed") in prose
    assert (f"seed 2 at 200 epochs (on two threads of an Intel Xeon with AVX-512, as seed 3) ends at "
            f"{seed2['final_val_acc']:.2f}% on validation and "
            f"{seed2['final_test_acc']:.2f}% on test (`figures/runs/cifarnet_res20-full-e200-s2-x6d2118.json`), and seed 3 "
            f"at {seed3['final_val_acc']:.2f}% and {seed3['final_test_acc']:.2f}% "
            "(`figures/runs/cifarnet_res20-full-e200-s3-x6d2118.json`)") in prose


def test_docs_length_seed_2_is_the_same_run_but_for_its_seed_and_is_computed_from_the_records():
    """Seed 2 at 200 epochs differs from seed 1's run in the seed alone; its differences from seed 2 at
    100 epochs, its margin over the 100-epoch seeds on validation and the two-against-three summary the
    docs quote come from the records."""
    import statistics

    s1, s2 = _published("cifarnet_res20-full-e200-s1-x6d2118"), _published("cifarnet_res20-full-e200-s2-x6d2118")
    assert TrainConfig.from_dict(s2["config"]) == replace(TrainConfig.from_dict(s1["config"]), seed=2)
    assert s2["final_val_acc"] == s2["history"]["val_acc"][-1] and s2["data"]["train"] == 45_000
    assert s2["threads"] == 2 and s2["epochs"] == 200 and not s2["interrupted"]
    h100 = {s: _published(f"cifarnet_res20-full-e100-s{s}-x6d2118") for s in (1, 2, 3)}
    v100 = [h100[s]["final_val_acc"] for s in (1, 2, 3)]
    t100 = [h100[s]["final_test_acc"] for s in (1, 2, 3)]
    prose = _readme_prose()
    assert (f"ends at {s2['final_val_acc']:.2f}% on validation and {s2['final_test_acc']:.2f}% on test "
            f"({s2['final_test_acc_flip_tta']:.2f}% with flip averaging, beside): against seed 2 at 100 epochs, "
            f"{s2['final_val_acc'] - h100[2]['final_val_acc']:+.2f} points on validation, "
            f"{s2['final_test_acc'] - h100[2]['final_test_acc']:+.2f} on test") in prose
    assert s2["final_val_acc"] > max(v100)
    assert f"by {s2['final_val_acc'] - max(v100):.2f} points over the best of them" in prose
    assert (f"Two seeds at 200 epochs, {s1['final_val_acc']:.2f}% and {s2['final_val_acc']:.2f}% on validation "
            f"({s1['final_test_acc']:.2f}% and {s2['final_test_acc']:.2f}% on test), against three at 100, "
            f"{statistics.mean(v100):.2f} ± {statistics.stdev(v100):.2f}% ({statistics.mean(t100):.2f} ± "
            f"{statistics.stdev(t100):.2f}% on test)") in prose


def test_docs_length_three_seeds_a_side_and_the_decision_are_computed_from_the_records():
    """Seed 3 at 200 epochs differs from seed 1's run in the seed alone. The three-against-three comparison
    the docs and README quote (means, spreads, each seed against itself at 100 epochs, the overlap), the
    verdict it gets under the kit's rule (ranges overlap: no finding), and the time the decision costs come
    from the records; the decision is taken on validation's mean."""
    import statistics

    run = {(e, s): _published(f"cifarnet_res20-full-e{e}-s{s}-x6d2118") for e in (100, 200) for s in (1, 2, 3)}
    s1, s3 = run[200, 1], run[200, 3]
    assert TrainConfig.from_dict(s3["config"]) == replace(TrainConfig.from_dict(s1["config"]), seed=3)
    assert s3["final_val_acc"] == s3["history"]["val_acc"][-1] and s3["data"]["train"] == 45_000
    assert s3["threads"] == 2 and s3["epochs"] == 200 and not s3["interrupted"]
    val = {e: [run[e, s]["final_val_acc"] for s in (1, 2, 3)] for e in (100, 200)}
    test = {e: [run[e, s]["final_test_acc"] for s in (1, 2, 3)] for e in (100, 200)}
    paired = [run[200, s]["final_val_acc"] - run[100, s]["final_val_acc"] for s in (1, 2, 3)]
    assert all(d > 0 for d in paired) and statistics.mean(val[200]) > statistics.mean(val[100])
    assert min(val[200]) < max(val[100])                 # the ranges overlap: by the kit's rule, no finding
    prose = _readme_prose()

    def spread(values):
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}%"
    assert (f"ends at {s3['final_val_acc']:.2f}% on validation and {s3['final_test_acc']:.2f}% on test "
            f"({s3['final_test_acc_flip_tta']:.2f}% with flip averaging, beside): against seed 3 at 100 epochs, "
            f"{paired[2]:+.2f} points on validation, {s3['final_test_acc'] - run[100, 3]['final_test_acc']:+.2f} on test, "
            f"but {max(val[100]) - s3['final_val_acc']:.2f} points below the best 100-epoch seed on validation") in prose
    assert (f"200 epochs end at {spread(val[200])} on validation against {spread(val[100])} at 100 "
            f"({statistics.mean(val[200]) - statistics.mean(val[100]):+.2f} points), and each seed ends higher at 200 than "
            f"the same seed at 100 ({paired[0]:+.2f}, {paired[1]:+.2f} and {paired[2]:+.2f} points; seeds 2 and 3 ran on one "
            f"thread each of the AMD EPYC at 100 epochs and on two threads of an Intel Xeon at 200, a change that alone "
            f"moves a run about as far as another seed: README, Determinism); but the ranges overlap "
            f"({min(val[200]):.2f}–{max(val[200]):.2f}% against {min(val[100]):.2f}–{max(val[100]):.2f}%)") in prose
    assert f"On test, read once per run, {spread(test[200])} against {spread(test[100])}" in prose
    assert sum(t < 89 for t in test[200]) == 1 and "one seed at 200 epochs under 89%" in prose
    assert f"Three seeds a side: {spread(val[200])} on validation at 200 epochs against {spread(val[100])} at 100" in prose
    seconds = s1["history"]["seconds"]
    crops = TrainConfig.from_dict(s1["config"]).crop_epochs
    minutes = (statistics.median(seconds[:crops]) * crops + statistics.median(seconds[crops:]) * (200 - crops)) / 60
    assert f"about {round(minutes, -1):.0f} minutes at seed 1's median epochs on the AMD EPYC" in prose
    # the command table's cost of the long recipe, then and now
    at_100 = run[100, 1]["train_seconds"] / 60
    assert TrainConfig.recipe("long") == TrainConfig.from_dict(s1["config"]) and abs(at_100 - 90) < 5
    assert (f"`cifarnet_res20` for 200 epochs (about {round(minutes, -1):.0f} minutes on 2 CPU cores at seed 1's median "
            f"epochs on the AMD EPYC, an estimate: its run took {s1['train_seconds'] / 60:.1f} as recorded, with pauses; "
            f"100 epochs, about {round(at_100, -1):.0f} minutes, until 2026-12-05)") in prose


def test_docs_hybrid_stretch_bullet_is_computed_from_the_records():
    """``cifarnet_hybrid`` (standard convs in C3) at 30 epochs: the course recipe but for its length, its
    epoch costs set beside CifarNet's course run, and why it does not make the ten-minute stretch."""
    import statistics

    hybrid, course = _published("cifarnet_hybrid-full-e30-s1"), _published("cifarnet-full-e40-s1")
    assert hybrid["model"] == "cifarnet_hybrid" and hybrid["threads"] == course["threads"] == 2
    config = TrainConfig.from_dict(hybrid["config"])
    assert config == replace(TrainConfig.recipe("course"), epochs=30)

    def medians(record):
        ce, s = TrainConfig.from_dict(record["config"]).crop_epochs, record["history"]["seconds"]
        return statistics.median(s[:ce]), statistics.median(s[ce:])
    (hc, hw), (cc, cw) = medians(hybrid), medians(course)
    prose = _readme_prose()
    assert (f"Its epochs cost what CifarNet's do (median {hc:.1f} s on crops and {hw:.1f} s on whole images, "
            f"against {cc:.1f} s and {cw:.1f} s), so 30 epochs took {hybrid['train_seconds'] / 60:.1f} minutes, still "
            f"over 10") in prose
    assert hybrid["train_seconds"] > 600 and hybrid["final_val_acc"] < 85
    assert f"and they ended at {hybrid['final_val_acc']:.2f}% on validation, below 85%" in prose
