import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils import data as D
from course_utils.data import (AugmentConfig, DataFormatError, DataNotFoundError, load_cifar10, make_loaders,
                               test_transforms, train_transforms)

from conftest import write_image_folder


def test_image_folder_is_decoded_into_memory(image_folder):
    d = load_cifar10(image_folder, download=False)
    assert d.train_images.shape == (60, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (30, 32, 32, 3)
    assert d.classes == D.CLASSES
    assert np.bincount(d.train_labels).tolist() == [6] * 10
    # the per-channel statistics are those of the train split
    x = d.train_images.reshape(-1, 3) / 255.0
    assert np.allclose(d.mean, x.mean(0)) and np.allclose(d.std, x.std(0))
    # decoded once: the second load reads the cache
    assert (image_folder / D.CACHE_NAME).is_file()
    again = load_cifar10(image_folder, download=False)
    assert "decoded cache" in again.source
    assert np.array_equal(again.train_images, d.train_images) and np.array_equal(again.test_labels, d.test_labels)


def test_jpeg_folder_and_tar_archive(tmp_path):
    src = write_image_folder(tmp_path / "src", 2, 1, ext="jpg")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
    d = load_cifar10(root, download=False)
    assert len(d.train_labels) == 20 and len(d.test_labels) == 10
    assert (root / "train" / "cat").is_dir()  # extracted once, next to the archive


def test_env_var_and_default_root(image_folder, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(image_folder))
    assert len(load_cifar10(download=False).train_labels) == 60
    monkeypatch.setenv("COURSE_DATA_DIR", str(image_folder / "nowhere"))
    with pytest.raises(DataNotFoundError, match="COURSE_DATA_DIR=.*does not exist"):
        load_cifar10(download=False)


def test_offline_without_data_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_cifar10(tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path) in msg and "train/<class>" in msg and "cifar-10-batches-py" in msg
    assert "COURSE_DATA_DIR" in msg and "cifar-10-python.tar.gz" in msg and "extracted on first use" in msg


def test_failed_download_is_reported(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(D, "_from_torchvision", offline)
    with pytest.raises(DataNotFoundError, match=r"(?s)download from .* failed.*name resolution.*To fix it.*put a copy "
                                                 r"in .*the official cifar-10-python.tar.gz \(https://www.cs.toronto.edu/~kriz/cifar-10.html, 170 MB"
                                                 r".*as it is.*"
                                                 r"extracted on first use.*COURSE_DATA_DIR.*go online once"):
        load_cifar10(tmp_path, download=True)


def test_a_certificate_failure_on_macos_names_the_certificates_fix(tmp_path, monkeypatch):
    """python.org's Python on macOS ships without certificates: the download's failure says how to install
    them, never to turn the check off; elsewhere the message stays as it was."""
    import ssl
    import urllib.error

    def unverified(*args, **kwargs):
        raise urllib.error.URLError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                                                     "verify failed: unable to get local issuer certificate"))
    monkeypatch.setattr(D, "_from_torchvision", unverified)
    monkeypatch.setattr(D.sys, "platform", "darwin")
    monkeypatch.setattr(D.sys, "base_prefix", "/Library/Frameworks/Python.framework/Versions/3.12")
    with pytest.raises(DataNotFoundError, match=r"CERTIFICATE_VERIFY_FAILED.*run 'Install Certificates.command' in "
                                                 r"/Applications/Python 3\.\d+/ \(never turn the certificate check off"):
        load_cifar10(tmp_path, download=True)
    # Homebrew's (or conda's) Python on macOS has no such script: no hint that sends its users to one
    for platform, prefix in [("darwin", "/opt/homebrew/opt/python@3.12/Frameworks/Python.framework/Versions/3.12"),
                             ("darwin", "/Users/me/miniconda3"),
                             ("linux", "/Library/Frameworks/Python.framework/Versions/3.12")]:
        monkeypatch.setattr(D.sys, "platform", platform)
        monkeypatch.setattr(D.sys, "base_prefix", prefix)
        with pytest.raises(DataNotFoundError, match="CERTIFICATE_VERIFY_FAILED") as err:
            load_cifar10(tmp_path, download=True)
        assert "Install Certificates" not in str(err.value), (platform, prefix)


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a whole archive")
    with pytest.raises(DataFormatError, match="the archive is truncated or corrupt, and nothing was kept from it. "
                                              "Download or copy it again"):
        load_cifar10(tmp_path, download=False)


@pytest.mark.parametrize("gone", ["test", "train"])
def test_a_copy_cut_short_is_named_not_replaced_by_a_download(image_folder, monkeypatch, gone):
    """train/ without test/ (or the other way round): the error names the missing folder, before any archive
    or download would put another copy in its place."""
    import shutil
    shutil.rmtree(image_folder / gone)
    monkeypatch.setattr(D, "_from_torchvision", lambda *a, **k: pytest.fail("downloaded instead of naming the gap"))
    kept = "train" if gone == "test" else "test"
    with pytest.raises(DataFormatError, match=rf"holds {kept}/ but no {gone}/: the copy is incomplete.*Copy or extract "
                                              r"the whole copy again over it, or move .* away: then an archive in .* is "
                                              r"extracted on first use"):
        load_cifar10(image_folder, download=True, cache=False)
    nested = image_folder.parent / "nested"
    (nested / "cifar10").mkdir(parents=True)
    shutil.move(str(image_folder / kept), nested / "cifar10" / kept)   # one level down, as an archive unpacks
    with pytest.raises(DataFormatError, match=rf"cifar10 holds {kept}/ but no {gone}/"):
        load_cifar10(nested, download=False, cache=False)


def test_another_data_set_beside_the_copy_is_not_a_copy_cut_short(image_folder, tmp_path):
    """A shared datasets folder: imagenette's train/ and val/ beside CIFAR-10's folder is another data set,
    not a CIFAR-10 copy without test/."""
    shared = tmp_path / "datasets"
    (shared / "imagenette2-160" / "train" / "n01440764").mkdir(parents=True)
    (shared / "imagenette2-160" / "val").mkdir()
    with tarfile.open(shared / "cifar10-jpeg.tar.gz", "w:gz") as tar:   # the CIFAR-10 copy, still packed
        for split in ("train", "test"):
            tar.add(image_folder / split, arcname=split)
    assert len(load_cifar10(shared, download=False, cache=False).train_labels) == 60


def test_missing_and_empty_class(image_folder):
    import shutil
    shutil.rmtree(image_folder / "train" / "frog")
    with pytest.raises(DataFormatError, match=r"does not hold CIFAR-10's 10 classes: missing \['frog'\]"):
        load_cifar10(image_folder, download=False, cache=False)
    (image_folder / "train" / "frog").mkdir()
    with pytest.raises(DataFormatError, match="frog holds no images"):
        load_cifar10(image_folder, download=False, cache=False)


def test_a_misnamed_class_folder_is_an_error_naming_the_classes(image_folder):
    for split in ("train", "test"):
        (image_folder / split / "airplane").rename(image_folder / split / "plane")
    with pytest.raises(DataFormatError) as err:
        load_cifar10(image_folder, download=False)
    message = str(err.value)
    assert "missing ['airplane']; unexpected ['plane']" in message
    assert "Expected exactly: airplane, automobile, bird" in message and "classes=(...)" in message
    assert not (image_folder / D.CACHE_NAME).exists()          # nothing half-right was cached


def test_other_class_names_load_when_named_in_the_given_order(image_folder):
    names = ("plane",) + D.CLASSES[1:]
    for split in ("train", "test"):
        (image_folder / split / "airplane").rename(image_folder / split / "plane")
    reference = load_cifar10(image_folder, download=False, classes=names)
    assert reference.classes == names
    # labels follow the order given, not the sorted folder names ("plane" sorts after "horse")
    plane = np.asarray(Image.open(sorted((image_folder / "train" / "plane").iterdir())[0]).convert("RGB"))
    assert np.array_equal(reference.train_images[reference.train_labels == 0][0], plane)
    # the cache remembers the class names: CIFAR-10's names no longer match it, and the folders say why
    with pytest.raises(DataFormatError, match="unexpected \\['plane'\\]"):
        load_cifar10(image_folder, download=False)
    with pytest.raises(DataFormatError, match="the classes you named: missing \\['boat'\\]; unexpected \\['ship'\\]"):
        load_cifar10(image_folder, download=False, classes=names[:8] + ("boat", "truck"))


def test_odd_files_in_the_folder(image_folder):
    (image_folder / "train" / "cat" / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(image_folder / "train" / "dog" / "gray.png")
    with pytest.warns(UserWarning) as record:
        d = load_cifar10(image_folder, download=False, cache=False)
    messages = " ".join(str(w.message) for w in record)
    assert "skipped 1 non-image file" in messages and "notes.txt" in messages
    assert "converted 1 image(s) to 32x32 RGB" in messages and "gray.png (L, 48x40)" in messages
    assert d.train_images.shape == (61, 32, 32, 3)
    (image_folder / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFormatError, match="broken.png is not a readable image"):
        load_cifar10(image_folder, download=False, cache=False)


def test_stratified_subset(image_folder):
    d = load_cifar10(image_folder, download=False).subset(2, 1)
    assert np.bincount(d.train_labels).tolist() == [2] * 10 and np.bincount(d.test_labels).tolist() == [1] * 10
    with pytest.raises(ValueError, match="at least 1"):
        d.subset(0, 1)


MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def test_train_pipeline_keeps_shape_and_dtype():
    tf = train_transforms(MEAN, STD)
    out = tf(image=np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32) and out.dtype == torch.float32
    names = [type(t).__name__ for t in tf.transforms]
    assert names == ["HorizontalFlip", "Affine", "CoarseDropout", "Normalize", "ToTensorV2"]


def test_test_pipeline_is_normalize_only():
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = test_transforms(MEAN, STD)(image=img)["image"]
    expected = (img / 255.0 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_coarse_dropout_leaves_one_16x16_mean_filled_hole():
    # only the dropout fires; on a constant image the hole is where pixels became the mean,
    # which Normalize turns into exactly 0
    tf = train_transforms(MEAN, STD, AugmentConfig(flip_p=0.0, affine_p=0.0, dropout_p=1.0), to_tensor=False)
    tf.set_random_seed(3)
    img = np.full((32, 32, 3), 200, dtype=np.uint8)
    for _ in range(5):
        out = tf(image=img)["image"]
        hole = np.all(np.abs(out) < 0.02, axis=-1)
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert hole.sum() == 256 and len(rows) == 16 and len(cols) == 16
        assert rows[-1] - rows[0] == 15 and cols[-1] - cols[0] == 15


def test_the_hole_is_filled_with_the_mean_rounded_on_the_pixel_scale():
    """One rule for the hole's colour (``hole_fill``), used by the pipeline: the offline copy's mean rounds
    to (125, 123, 114), where a uint8 cast would truncate blue's 113.86 to 113; a mean on the 0-255 scale is
    refused with the fix."""
    from course_utils.data import hole_fill

    assert hole_fill((0.4913, 0.4821, 0.4465)) == (125.0, 123.0, 114.0)
    tf = train_transforms(MEAN, STD, AugmentConfig(flip_p=0.0, affine_p=0.0, dropout_p=1.0), normalize=False)
    [dropout] = [t for t in tf.transforms if type(t).__name__ == "CoarseDropout"]
    assert tuple(dropout.fill) == hole_fill(MEAN)
    with pytest.raises(ValueError, match=r"hole_fill takes the mean per RGB channel on the 0-1 scale.*got \(125"):
        hole_fill((125.0, 123.0, 114.0))


def test_fixed_seed_gives_a_fixed_output():
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = train_transforms(MEAN, STD), train_transforms(MEAN, STD)
    a.set_random_seed(7), b.set_random_seed(7)
    outs_a = [a(image=img)["image"] for _ in range(4)]
    outs_b = [b(image=img)["image"] for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b))
    assert not all(torch.equal(outs_a[0], o) for o in outs_a[1:])  # and it is random across draws


def test_stats_on_the_wrong_scale_are_rejected():
    with pytest.raises(ValueError, match="0-1 scale"):
        train_transforms((125.0, 123.0, 114.0), (63.0, 62.0, 66.0))


def test_loaders(image_folder):
    d = load_cifar10(image_folder, download=False)
    train, test = make_loaders(d, batch_size=16)
    x, y = next(iter(train))
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    assert sum(len(b[1]) for b in test) == 30


def test_torchvision_archive_layout(tmp_path, monkeypatch):
    """root/cifar-10-batches-py/ in torchvision's pickle format is read without any download."""
    import pickle

    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(D.CLASSES)}, f)
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)  # our fake files have other checksums
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    d = load_cifar10(tmp_path, download=False)
    assert d.train_images.shape == (20, 32, 32, 3) and d.test_images.shape == (4, 32, 32, 3)
    assert d.classes == D.CLASSES and "torchvision" in d.source
    assert d.train_labels.tolist()[:4] == [0, 1, 2, 3]


def test_corrupt_torchvision_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataFormatError, match=r"cifar-10-batches-py is incomplete or corrupt .*Delete it and extract "
                                              r"cifar-10-python.tar.gz again, or let torchvision download it"):
        load_cifar10(tmp_path, download=False)


def test_batch_normalisation_matches_the_per_image_pipeline(image_folder):
    """The loaders normalise whole batches (BatchNormalize); the numbers are those of albumentations'
    Normalize + ToTensorV2 image by image, and the batch comes out channels-last."""
    from course_utils.data import BatchNormalize

    d = load_cifar10(image_folder, download=False)
    images, labels = d.test_images[:5], d.test_labels[:5]
    x, y = BatchNormalize(d.mean, d.std)([(img, int(lab)) for img, lab in zip(images, labels)])
    per_image = torch.stack([test_transforms(d.mean, d.std)(image=img)["image"] for img in images])
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == labels.tolist()
    assert torch.allclose(x, per_image, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="0-1 scale"):
        BatchNormalize((125.0, 123.0, 114.0), (63.0, 62.0, 66.0))


def _epochs(loader, n=2):
    """``n`` epochs of ``loader``'s batches; then its persistent workers are shut down, so the next loader
    does not fork while this one's worker queues (and their feeder threads) are alive: a fork then can
    copy a held lock into the new worker, and the test hung once that way (a dry run of .ci/run,
    2026-12-03, both sides waiting on their queues)."""
    epochs = [[x.clone() for x, _ in loader] for _ in range(n)]
    if loader._iterator is not None:
        loader._iterator._shutdown_workers()
        loader._iterator = None
    return epochs


def test_loaders_with_two_workers_are_seeded_per_worker_and_repeatable(image_folder):
    """Two worker processes (on a CPU started anew each epoch, from seeds the loader's generator draws):
    each epoch's batches differ from the last, each worker draws its own augmentation, and the same seed
    gives the same two epochs again."""
    d = load_cifar10(image_folder, download=False)
    # every training image the same: whatever differs between batches is shuffling-free augmentation
    same = D.CIFAR10Data(np.repeat(d.train_images[:1], 32, 0), np.zeros(32, np.int64), d.test_images, d.test_labels)
    train, _ = make_loaders(same, 16, num_workers=2, seed=5)
    assert train.num_workers == 2 and not train.persistent_workers
    first, second = _epochs(train)
    assert not torch.equal(first[0], first[1])      # worker 0 and worker 1 augment differently
    assert not torch.equal(first[0], second[0])     # and the next epoch differs again
    again, _ = make_loaders(same, 16, num_workers=2, seed=5)
    first2, second2 = _epochs(again)
    assert all(torch.equal(a, b) for a, b in zip(first + second, first2 + second2))
    other, _ = make_loaders(same, 16, num_workers=2, seed=6)
    assert not torch.equal(_epochs(other, 1)[0][0], first[0])


# --- the decoded cache knows what it was built from --------------------------------------------------

def _first_image(folder, split="train", cls="cat"):
    return sorted((folder / split / cls).iterdir())[0]


@pytest.mark.filterwarnings("ignore:.*A copy cut short")   # adding and removing images unbalances classes
def test_cache_is_rebuilt_when_an_image_changes_is_added_or_removed(image_folder):
    first = load_cifar10(image_folder, download=False)
    assert "decoded cache" in load_cifar10(image_folder, download=False).source   # unchanged: the cache is used
    cat = D.CLASSES.index("cat")
    # change one image
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(_first_image(image_folder))
    with pytest.warns(UserWarning, match="no longer the same.*decoding again"):
        changed = load_cifar10(image_folder, download=False)
    assert "decoded cache" not in changed.source
    assert any((img == 7).all() for img in changed.train_images[changed.train_labels == cat])
    assert not any((img == 7).all() for img in first.train_images[first.train_labels == cat])
    # add one, then remove two
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image_folder / "train" / "cat" / "extra.png")
    with pytest.warns(UserWarning, match="no longer the same"):
        assert len(load_cifar10(image_folder, download=False).train_labels) == 61
    for f in sorted((image_folder / "test" / "dog").iterdir())[:2]:
        f.unlink()
    with pytest.warns(UserWarning, match="no longer the same"):
        assert len(load_cifar10(image_folder, download=False).test_labels) == 28


def test_a_cache_whose_images_are_gone_is_not_used(image_folder):
    import shutil

    load_cifar10(image_folder, download=False)
    shutil.rmtree(image_folder / "train")
    shutil.rmtree(image_folder / "test")
    with pytest.warns(UserWarning, match="images that are gone"), pytest.raises(DataNotFoundError):
        load_cifar10(image_folder, download=False)


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped"])
def test_a_damaged_cache_warns_once_and_is_decoded_again(image_folder, damage):
    import warnings

    good = load_cifar10(image_folder, download=False)
    cache = image_folder / D.CACHE_NAME
    raw = bytearray(cache.read_bytes())
    if damage == "empty":
        raw = bytearray()
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # flip bytes in the middle of the stored images
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0xFF
    cache.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_cifar10(image_folder, download=False)
    messages = [str(w.message) for w in caught if "images per class" not in str(w.message)]
    assert len(messages) == 1 and "ignoring unreadable cache" in messages[0], messages
    assert np.array_equal(again.train_images, good.train_images) and "decoded cache" not in again.source
    assert "decoded cache" in load_cifar10(image_folder, download=False).source   # and it was rewritten


def test_the_cache_is_written_through_a_temporary_file_of_its_own(image_folder, monkeypatch):
    import os

    names = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (names.append(str(src)), real(src, dst))[1])
    load_cifar10(image_folder, download=False)
    assert len(names) == 1 and f".{os.getpid()}-" in names[0]
    assert sorted(p.name for p in image_folder.iterdir()) == sorted(["train", "test", D.CACHE_NAME])


def test_a_data_folder_that_does_not_exist_is_refused_not_created(tmp_path):
    missing = tmp_path / "dta"
    with pytest.raises(DataNotFoundError, match="does not exist \\(a typo\\?\\)"):
        load_cifar10(missing)
    assert not missing.exists()


# --- extraction is all or nothing ------------------------------------------------------------------

def _archive(src, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
    return path


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_a_truncated_archive_leaves_nothing_behind(tmp_path, keep):
    src = write_image_folder(tmp_path / "src", 4, 2)
    root = tmp_path / "root"
    root.mkdir()
    whole = _archive(src, tmp_path / "whole.tar.gz").read_bytes()
    (root / "cifar.tar.gz").write_bytes(whole[: int(len(whole) * keep)])
    for _ in range(2):  # and the second try says the same, instead of loading a half-extracted copy
        with pytest.raises(DataFormatError, match="truncated or corrupt, and nothing was kept"):
            load_cifar10(root, download=False)
        assert sorted(p.name for p in root.iterdir()) == ["cifar.tar.gz"]


def test_a_good_archive_is_moved_into_place_without_leftovers(tmp_path):
    src = write_image_folder(tmp_path / "src", 2, 1)
    root = tmp_path / "root"
    root.mkdir()
    _archive(src, root / "cifar.tar.gz")
    assert len(load_cifar10(root, download=False).train_labels) == 20
    assert sorted(p.name for p in root.iterdir()) == sorted(["cifar.tar.gz", "train", "test", D.CACHE_NAME])


@pytest.mark.parametrize("has_filter", [True, False])
def test_an_archive_reaching_outside_its_folder_is_refused_with_or_without_tarfiles_filter(tmp_path, monkeypatch,
                                                                                         has_filter):
    """A member named ../x (or a link) is never written: by tarfile's "data" filter where Python has it
    (3.10.12, 3.11.4 and later), by the kit's own check where it does not; either way a DataFormatError,
    nothing outside the data folder, and a good archive still extracts through the kit's check."""
    import io

    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    src = write_image_folder(tmp_path / "src", 2, 1)
    root = tmp_path / "data" / "root"
    root.mkdir(parents=True)
    with tarfile.open(root / "cifar.tar.gz", "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"bad"))
    with pytest.raises(DataFormatError, match=r"holds '../escaped.txt', which is not a plain file or folder inside "
                                              r"the archive's own folder; nothing was extracted"):
        load_cifar10(root, download=False)
    assert not (tmp_path / "data" / "escaped.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar.tar.gz"]
    (root / "cifar.tar.gz").unlink()
    _archive(src, root / "cifar.tar.gz")
    assert len(load_cifar10(root, download=False).train_labels) == 20


def test_several_archives_are_refused_by_name(tmp_path):
    src = write_image_folder(tmp_path / "src", 2, 1)
    root = tmp_path / "root"
    root.mkdir()
    _archive(src, root / "a.tar.gz")
    _archive(src, root / "b.tar.gz")
    with pytest.raises(DataFormatError, match=r"holds 2 archives \(a.tar.gz, b.tar.gz\)"):
        load_cifar10(root, download=False)
    assert sorted(p.name for p in root.iterdir()) == ["a.tar.gz", "b.tar.gz"]


def test_classes_cut_short_are_named_in_a_warning(image_folder):
    for f in sorted((image_folder / "train" / "cat").iterdir())[:2]:
        f.unlink()
    with pytest.warns(UserWarning, match=r"train: cat has 4 images, the other classes 6 \(CIFAR-10: 5,000 per class\)"):
        d = load_cifar10(image_folder, download=False)
    assert len(d.train_labels) == 58


# --- a download that never answers gives up ---------------------------------------------------------

def test_a_stalled_download_gives_up_with_a_message(tmp_path, monkeypatch):
    """A server on 127.0.0.1 accepts the connection and never answers (as some proxies and captive
    portals do): the download gives up after the timeout, says so, names the URL, and leaves no partial
    archive behind."""
    import socket

    from torchvision.datasets import CIFAR10

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)          # connections complete in the backlog; nothing is ever sent back
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/cifar-10-python.tar.gz"
        monkeypatch.setattr(CIFAR10, "url", url)
        monkeypatch.setattr(D, "DOWNLOAD_TIMEOUT", 1.0)
        root = tmp_path / "data"
        root.mkdir()
        timeouts, set_timeout = [], socket.setdefaulttimeout
        monkeypatch.setattr(socket, "setdefaulttimeout", lambda t: timeouts.append(t) or set_timeout(t))
        with pytest.raises(DataNotFoundError) as err:
            load_cifar10(root, download=True)
    finally:
        server.close()
    message = str(err.value)
    assert f"the download from {url} got no answer for 1 s" in message
    assert "put a copy in" in message and "COURSE_DATA_DIR" in message      # the offline ways out
    assert list(root.iterdir()) == []                                         # no partial archive
    assert timeouts == [1.0, None] and socket.getdefaulttimeout() is None     # the limit was set, then restored


def test_a_refused_download_names_the_url_and_the_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataNotFoundError, match=r"the download from http://127.0.0.1:9/.* failed \(URLError"):
        load_cifar10(root, download=True)


def test_a_folder_of_another_size_is_allowed_with_a_warning_stating_it(image_folder):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = load_cifar10(image_folder, download=False)
    messages = [str(w.message) for w in caught]
    assert any("train: 6 images per class, not CIFAR-10's 5,000" in m for m in messages), messages
    assert any("test: 3 images per class, not CIFAR-10's 1,000" in m for m in messages), messages
    assert len(d.train_labels) == 60


def test_the_augmentation_defaults_are_the_course_recipes():
    """Hyperparameters in one place: a pipeline built with AugmentConfig() is the one the course recipe trains with."""
    from course_utils.config import TrainConfig

    a, t = AugmentConfig(), TrainConfig()
    assert (a.flip_p, a.affine_p, a.dropout_p) == (t.flip_p, t.affine_p, t.dropout_p)


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path):
    from course_utils.__main__ import main

    note = tmp_path / "notes.txt"
    note.write_text("not CIFAR-10")
    with pytest.raises(DataNotFoundError, match=r"notes.txt is a file, not a folder. Point --data-dir .* at the folder "
                                                r"that holds train/ and test/"):
        load_cifar10(note)
    assert main(["train", "--data-dir", str(note), "--epochs", "1", "--device", "cpu", "--no-progress"]) == 1
    assert main(["doctor", "--device", "cpu", "--data-dir", str(note)]) == 1


def test_too_few_images_for_a_validation_split_says_how_to_train_anyway(tmp_path):
    data = load_cifar10(write_image_folder(tmp_path / "one", train_per_class=1), download=False)
    with pytest.raises(ValueError, match=r"needs at least 2 training images in every class .* the smallest class here "
                                         r"has 1\. Add images, or train without a validation split "
                                         r"\(--set validation=false"):
        data.with_validation()


#: A fresh interpreter with no network (every URL opener refuses, as on a machine without internet) and
#: albumentations' warnings as errors, as pytest's settings here make them. Without course_utils imported
#: first, importing albumentations then fails: its update check cannot reach PyPI and warns.
OFFLINE_IMPORT = """
import urllib.error, urllib.request, warnings
def no_network(*args, **kwargs):
    raise urllib.error.URLError("no network (simulated)")
urllib.request.OpenerDirector.open = no_network
urllib.request.urlopen = no_network
warnings.filterwarnings("error", category=UserWarning, module="albumentations")
{first}
import albumentations
print("imported offline without a warning")
"""


@pytest.mark.parametrize("first, ok", [("import course_utils", True), ("", False)])
def test_albumentations_imports_offline_without_a_warning_after_course_utils(first, ok):
    """An H200 machine without internet failed 63 tests on this warning (2026-12-04): course_utils turns
    albumentations' update check off; the second case shows the check is real, so this test can fail."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    proc = subprocess.run([sys.executable, "-c", OFFLINE_IMPORT.format(first=first)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) is ok, proc.stderr[-2000:]
    if ok:
        assert "imported offline without a warning" in proc.stdout
    else:
        assert "version info" in proc.stderr            # albumentations' own warning, made an error


def test_course_utils_keeps_your_own_albumentations_update_setting(monkeypatch):
    import importlib

    import course_utils

    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "0")     # you asked for the check: it stays asked for
    importlib.reload(course_utils)
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "0"
    monkeypatch.delenv("NO_ALBUMENTATIONS_UPDATE")
    importlib.reload(course_utils)
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"


@pytest.mark.parametrize("workers", [0, 1])
def test_an_epoch_after_a_resume_augments_as_the_uninterrupted_run_did_with_loader_workers_too(workers):
    """A resumed run's loader is new: its epoch must see the same images, augmented the same way, as the epoch
    of a loader that served the epochs before it (kept workers would carry their streams over)."""
    from course_utils.data import CIFAR10Data, make_train_loader
    from course_utils.training import _reseed_epoch

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10
    data = CIFAR10Data(x, y, x[:10], y[:10])

    def epoch(loader, e):
        _reseed_epoch(loader, 1000 + e)   # what fit does before each epoch
        return [images.clone() for images, _ in loader]

    straight = make_train_loader(data, 10, workers, seed=1)
    first, second = epoch(straight, 0), epoch(straight, 1)
    resumed = epoch(make_train_loader(data, 10, workers, seed=1), 1)
    assert len(resumed) == 2 and all(torch.equal(a, b) for a, b in zip(second, resumed, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))   # the epochs themselves differ


def test_a_partial_copy_left_by_a_killed_extraction_is_not_taken_for_the_data(tmp_path):
    """An extraction killed outright (kernel restart, out of memory) leaves its hidden staging folder: the
    archive beside it is extracted and loaded, not the partial copy."""
    src = write_image_folder(tmp_path / "src", 2, 1)
    root = tmp_path / "root"
    root.mkdir()
    _archive(src, root / "cifar.tar.gz")
    write_image_folder(root / ".extracting-abc123", 1, 1)   # what the killed extraction had written so far
    d = load_cifar10(root, download=False)
    assert len(d.train_labels) == 20 and ".extracting" not in d.source
    assert (root / "train" / "cat").is_dir()


def test_macos_metadata_files_beside_the_images_are_skipped_with_a_hint(image_folder):
    """A copy made on a Mac carries ``._name.png`` (AppleDouble) beside each image and ``.DS_Store`` files:
    they are not images, and not a reason to stop."""
    for cls in ("cat", "dog"):
        (image_folder / "train" / cls / "._0000.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (image_folder / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (image_folder / "test" / ".Spotlight-V100").mkdir()
    with pytest.warns(UserWarning, match=r"skipped 2 non-image file\(s\), e\.g\. \['._0000.png', '._0000.png'\] "
                                         r"\(._ files are macOS metadata: COPYFILE_DISABLE=1"):
        d = load_cifar10(image_folder, download=False, cache=False)
    assert len(d.train_labels) == 60 and len(d.test_labels) == 30


def test_a_16_bit_grayscale_image_is_scaled_to_8_bits_not_clipped_to_white(image_folder):
    path = image_folder / "train" / "cat" / "0000.png"
    Image.fromarray(np.full((32, 32), 30000, dtype=np.uint16)).save(path)   # about 46% grey, 16 bits
    assert Image.open(path).mode.startswith("I")
    with pytest.warns(UserWarning, match="converted 1 image"):
        d = load_cifar10(image_folder, download=False, cache=False)
    cat = D.CLASSES.index("cat")
    first_cat = d.train_images[np.flatnonzero(d.train_labels == cat)[0]]
    assert (first_cat == 117).all()   # 30000 / 257, in all three channels
    # a 32-bit integer image (mode I, as some Pillows open 16-bit PNGs): scaled when its values need 16 bits,
    # kept when they fit in 8
    wide, narrow = (Image.fromarray(np.full((2, 2), v, dtype=np.int32), "I") for v in (30000, 200))
    assert (np.asarray(D._eight_bit(wide)) == 117).all() and (np.asarray(D._eight_bit(narrow)) == 200).all()


@pytest.mark.parametrize("ci, outcome", [("true", "fail"), ("1", "fail"), ("false", "skip"), ("0", "skip"), ("", "skip")])
def test_a_test_without_the_real_data_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    from conftest import skip_without_real_data

    monkeypatch.setenv("CI", ci)
    raised = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(raised, match="no data here"):
        skip_without_real_data("no data here")
