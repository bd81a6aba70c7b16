"""`python -m course_utils doctor`: what it says on this CPU, on a simulated Colab T4 and A100 (CUDA
queries monkeypatched), and when the data is missing."""
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from course_utils import doctor, training
from course_utils.__main__ import main


def lines(capsys):
    return capsys.readouterr().out.splitlines()


def test_doctor_on_this_cpu_with_data(image_folder, capsys):
    assert main(["doctor", "--device", "cpu", "--data-dir", str(image_folder)]) == 0
    out = lines(capsys)
    topics = [line.split()[1] for line in out[:-1]]
    assert topics == ["versions", "kit", "device", "recipe", "precision", "loader", "data", "widgets", "weights"]
    text = "\n".join(out)
    assert "auto picks 'course' here" in text and "fp32" in text and "0 worker" in text
    assert f"image folder {image_folder}" in text and out[-1] == "ready: python -m course_utils train"


def test_doctor_without_data_says_what_to_do(tmp_path, capsys):
    # no copy yet is no blocker (the first run downloads it) but a note: offline, that download fails
    assert main(["doctor", "--device", "cpu", "--data-dir", str(tmp_path)]) == 0
    out = lines(capsys)
    data_line = next(line for line in out if line.split()[1] == "data")
    assert data_line.startswith("note data") and f"no CIFAR-10 copy in {tmp_path} yet" in data_line
    assert "downloads it with torchvision (170 MB, needs the internet)" in data_line
    assert "cifar-10-python.tar.gz as it is (extracted on first use)" in data_line and "an image folder" in data_line
    assert out[-1] == "ready: python -m course_utils train (read the line marked note first: data)"
    assert main(["doctor", "--device", "cpu", "--data-dir", str(tmp_path / "typo")]) == 1
    assert "does not exist" in "\n".join(lines(capsys))
    # the same words load_cifar10 would say, before any training is tried
    (tmp_path / "notes.txt").write_text("not data")
    assert main(["doctor", "--device", "cpu", "--data-dir", str(tmp_path / "notes.txt")]) == 1
    text = "\n".join(lines(capsys))
    assert "FIX  data" in text and f"{tmp_path / 'notes.txt'} is a file, not a folder. Point --data-dir" in text


@pytest.fixture
def fake_gpu(monkeypatch):
    def use(name, capability, triton=True, archs=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")):
        monkeypatch.setattr(torch.version, "cuda", "12.6")
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda mod, *a: (object() if triton else None) if mod == "triton" else real(mod, *a))
    return use


def test_doctor_on_a_simulated_colab_t4(fake_gpu, image_folder):
    fake_gpu("Tesla T4", (7, 5), triton=False)
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert "Tesla T4, compute capability 7.5" in found["device"].text
    assert "auto picks 'fast'" in found["recipe"].text
    assert found["precision"].text.startswith("fp16 + GradScaler") and "no native bf16" in found["precision"].text
    assert "Triton is not installed" in found["precision"].text
    assert all(f.ok for f in found.values())


def test_doctor_says_when_the_installed_pytorch_has_no_code_for_the_card(fake_gpu, monkeypatch, image_folder):
    """A Kaggle P100 (6.0): with a PyTorch built for it, a GPU like any other; with one built without Pascal
    (CUDA 13 wheels) torch still says CUDA is available, and the doctor names the fix instead of a crash at
    the first kernel."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    fake_gpu("Tesla P100-PCIE-16GB", (6, 0))
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert "Tesla P100-PCIE-16GB, compute capability 6.0" in found["device"].text and "gpu" not in found
    fake_gpu("Tesla P100-PCIE-16GB", (6, 0), archs=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"))
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert found["gpu"].tag == "FIX" and "has no GPU code for Tesla P100-PCIE-16GB (compute capability 6.0" in \
        found["gpu"].text and "until then auto trains on the CPU" in found["gpu"].text
    assert found["device"].text.startswith("cpu (")
    found = {f.topic: f for f in doctor.diagnose("cuda", str(image_folder))}
    assert found["device"].tag == "FIX" and "install a PyTorch built for this card" in found["device"].text


def test_doctor_on_a_simulated_a100(fake_gpu, image_folder):
    fake_gpu("NVIDIA A100", (8, 0))
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert found["precision"].text.startswith("bf16") and "falls back to eager" in found["precision"].text


def test_doctor_on_a_simulated_machine_with_two_cards_reports_the_one_asked_for(fake_gpu, monkeypatch, image_folder):
    fake_gpu("Tesla T4", (7, 5))
    names, capabilities = {0: "Tesla T4", 1: "NVIDIA A100"}, {0: (7, 5), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capabilities[index])
    second = {f.topic: f for f in doctor.diagnose("cuda:1", str(image_folder))}
    assert "cuda:1 (NVIDIA A100, compute capability 8.0)" in second["device"].text
    assert second["precision"].text.startswith("bf16")
    first = {f.topic: f for f in doctor.diagnose("cuda", str(image_folder))}   # the current card, cuda:0
    assert "(Tesla T4, compute capability 7.5)" in first["device"].text
    assert first["precision"].text.startswith("fp16 + GradScaler")


def test_doctor_reports_the_shipped_weights_and_names_an_altered_or_missing_file(monkeypatch, tmp_path):
    """The weights line: the card's accuracy when the file matches it; the fix when it was changed or
    removed; the card's own message when there is no card. Training needs none of it, so none stops the
    doctor, but the notebooks' pictures of a trained net do: a missing or altered file is a note."""
    import json
    import shutil

    from course_utils import pretrained
    from course_utils.runtime import REPO_ROOT

    folder = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "course_utils" / "weights", folder)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    info = json.loads((folder / "cifarnet.json").read_text())
    found = doctor._weights_finding()
    assert found.ok and not found.note and found.text.startswith(f"cifarnet: {info['final_test_acc']:.2f}% test accuracy, trained in "
                                              f"{info['train_minutes']} min on cpu")
    raw = bytearray((folder / "cifarnet.pt").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "cifarnet.pt").write_bytes(bytes(raw))
    altered = doctor._weights_finding()
    assert altered.tag == "note" and altered.text == ("cifarnet.pt is missing or altered: load_pretrained will refuse "
                                                      "it; git checkout -- course_utils/weights")
    (folder / "cifarnet.pt").unlink()
    assert doctor._weights_finding().text == altered.text
    (folder / "cifarnet.json").unlink()
    assert "no shipped weights named 'cifarnet'" in doctor._weights_finding().text and doctor._weights_finding().note


def test_doctor_stops_at_a_missing_library_training_needs(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name))
                        if name == "albumentations" else real(name))
    found = doctor._versions()
    assert found.tag == "FIX" and "albumentations MISSING (pip install -r requirements.txt)" in found.text


def test_doctor_refuses_what_the_loader_refuses_several_archives_and_a_folder_beside_the_classes(tmp_path):
    from conftest import write_image_folder

    two = tmp_path / "two"
    two.mkdir()
    for name in ("cifar-10-python.tar.gz", "cifar10-jpeg.tar.gz", "._cifar10-jpeg.tar.gz"):   # the last: macOS's
        (two / name).write_bytes(b"")
    found = doctor._data_finding(str(two))
    assert found.tag == "FIX" and "holds 2 archives (cifar-10-python.tar.gz, cifar10-jpeg.tar.gz)" in found.text
    (two / "cifar-10-python.tar.gz").unlink()
    assert doctor._data_finding(str(two)).ok        # one archive (its macOS metadata file beside it is not one)
    root = write_image_folder(tmp_path / "extra", 1, 1)
    (root / "train" / "other").mkdir()
    (root / "train" / ".ipynb_checkpoints").mkdir()   # hidden: not a class folder, for doctor or loader
    found = doctor._data_finding(str(root))
    assert found.tag == "FIX" and "has other beside CIFAR-10's ten class folders" in found.text
    half = write_image_folder(tmp_path / "half", 1, 1)
    shutil.rmtree(half / "test")                      # a copy cut short: the loader refuses it, so doctor does
    found = doctor._data_finding(str(half))
    assert found.tag == "FIX" and "holds train/ but no test/: the copy is incomplete" in found.text


def test_doctor_reports_a_damaged_weights_card_as_a_note(tmp_path, monkeypatch):
    """A card without a field doctor reads is the loader's clear error, as a note, not a KeyError."""
    import json

    from course_utils import pretrained

    folder = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS_DIR, folder)
    info = json.loads((folder / "cifarnet.json").read_text())
    del info["file"]
    (folder / "cifarnet.json").write_text(json.dumps(info))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", folder)
    found = doctor._weights_finding()
    assert found.tag == "note" and "cifarnet.json is damaged: it lacks file." in found.text


def test_doctor_on_a_simulated_gpu_in_a_container_with_little_shared_memory(fake_gpu, monkeypatch, image_folder):
    """Loader workers pass batches through /dev/shm: 8 workers x 2 prefetched x a 12 MB evaluation batch is
    about 188 MB, and Docker's default /dev/shm is 64 MB (workers then die with a bus error)."""
    import os

    fake_gpu("Tesla T4", (7, 5))
    monkeypatch.setattr("course_utils.runtime.usable_cores", lambda: 16)
    size = {"bytes": 64 * 2**20}
    monkeypatch.setattr(os, "statvfs", lambda path: type("S", (), {"f_blocks": size["bytes"] // 4096, "f_frsize": 4096})())
    loader = {f.topic: f for f in doctor.diagnose("cuda", str(image_folder))}["loader"]
    assert not loader.ok and loader.text == ("8 worker process(es); /dev/shm holds 64 MB, less than the 188 MB their "
                                             "batches can need at once: start the container with --shm-size=1g, "
                                             "or train with --workers 0")
    size["bytes"] = 2**30                                          # --shm-size=1g
    loader = {f.topic: f for f in doctor.diagnose("cuda", str(image_folder))}["loader"]
    assert loader.ok and loader.text == "8 worker process(es)"


def test_doctor_names_missing_class_folders_without_reading_an_image(tmp_path, capsys, monkeypatch):
    import shutil

    from PIL import Image
    from conftest import write_image_folder

    from course_utils import data

    root = write_image_folder(tmp_path / "nine")
    shutil.rmtree(root / "test" / "truck")
    (root / "test" / "lorry").mkdir()
    reads = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: reads.append(a))
    monkeypatch.setattr(data, "load_cifar10", lambda *a, **k: reads.append(a))
    assert main(["doctor", "--device", "cpu", "--data-dir", str(root)]) == 1
    assert reads == []                       # the folders' names say it: not one image decoded
    text = "\n".join(lines(capsys))
    assert "FIX  data" in text and "test lacks the class folder(s) truck (and has lorry, not a CIFAR-10 class)" in text


def test_doctor_on_a_simulated_p100_says_compiling_is_off_and_why(fake_gpu, image_folder):
    """A Kaggle P100 (capability 6.0) with Triton installed: Triton cannot build kernels for it, so the kit
    does not compile there, and the doctor says why instead of "torch.compile on"."""
    fake_gpu("Tesla P100-PCIE-16GB", (6, 0))
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert found["precision"].text.startswith("fp16 + GradScaler")
    assert "torch.compile off: Triton needs compute capability 7.0 or newer, this GPU is 6.0" in found["precision"].text
    notes = []                                   # a run on this card says the same, in the same words
    training.compiled(torch.nn.Linear(2, 2), torch.device("cuda"), notes.append)
    assert len(notes) == 1 and notes[0].startswith(found["precision"].text.split("; ")[-1] + "; training uncompiled")
    fake_gpu("Tesla V100", (7, 0))
    found = {f.topic: f for f in doctor.diagnose("auto", str(image_folder))}
    assert "torch.compile on" in found["precision"].text


def test_the_kit_here_is_this_repository_installed_editable():
    """requirements.txt installs the repository with -e: pip's record names this checkout, and doctor says ok.
    (A checkout run without its own editable install, a second worktree or PYTHONPATH, is skipped outside CI,
    where .ci/run installs it.)"""
    from conftest import in_ci
    from course_utils.runtime import REPO_ROOT

    editable = {folder for folder, is_editable in doctor._installs() if is_editable}
    if REPO_ROOT.resolve() not in editable and not in_ci():
        pytest.skip(f"this checkout is not the editable install here ({sorted(map(str, editable))})")
    assert REPO_ROOT.resolve() in editable
    kit = doctor._kit_finding()
    assert kit.tag == "ok" and kit.text.startswith("course_utils from this repository, installed editable")


def test_the_kit_from_a_copy_another_clone_or_no_install_is_a_note_naming_the_fix(monkeypatch, tmp_path):
    """The ways the notebooks stop running this repository's files: a copy from pip install . imported
    (old code after a git pull), the same copy while doctor runs in the repository's root (python -m imports
    the root's files, the notebooks the copy), another clone installed editable (the notebooks import that
    one), and no install (only the repository's root can import it). Each is a note that says what to run;
    training is not stopped."""
    import course_utils
    from course_utils.runtime import REPO_ROOT

    monkeypatch.setattr(course_utils, "__file__", str(tmp_path / "lib/python3.12/site-packages/course_utils/__init__.py"))
    kit = doctor._kit_finding()
    assert kit.tag == "note" and "runs from a copy installed in" in kit.text and "site-packages" in kit.text
    assert kit.text.endswith("pip install -e . (the notebooks then run its own files)")
    monkeypatch.undo()

    copy = tmp_path / "lib/python3.12/site-packages/course_utils"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    here = REPO_ROOT.resolve() / "course_utils"      # the root's egg-info, as python -m in the root sees it
    monkeypatch.setattr(doctor, "_installs", lambda: [(here, False), (copy, False)])
    kit = doctor._kit_finding()
    assert kit.tag == "note" and f"the notebooks import a copy installed in {copy.parent} (by pip install ." in kit.text
    assert kit.text.endswith("pip install -e . (the notebooks then run its own files)")

    other = tmp_path / "an-older-clone"
    monkeypatch.setattr(doctor, "_installs", lambda: [(other, True)])
    kit = doctor._kit_finding()
    assert kit.tag == "note" and f"the one installed (editable) is in {other}: the notebooks import that one" in kit.text
    assert str(REPO_ROOT.resolve()) in kit.text and kit.text.endswith("pip install -e . from its root")

    monkeypatch.setattr(doctor, "_installs", lambda: [(here, False)])   # the egg-info alone: not installed
    kit = doctor._kit_finding()
    assert kit.tag == "note" and "which is not installed: notebooks opened in notebooks/ will not find it" in kit.text
    assert kit.ok   # a note: doctor still says the kit can train here
    assert [f.topic for f in doctor.diagnose("cpu") if f.note].count("kit") == 1


def test_installs_reads_pips_records_and_skips_other_packages_and_damaged_records(monkeypatch, tmp_path):
    """Only course_utils's records count; an editable one names its repository (the URL decoded once: a
    folder named with %20 keeps it), any other its package folder, and a damaged direct_url.json reads as
    no record (an install all the same)."""
    from importlib import metadata

    class Dist:
        def __init__(self, name, direct_url, site=tmp_path / "site-packages"):
            self.metadata, self._text, self._site = {"Name": name}, direct_url, site

        def read_text(self, name):
            return self._text if name == "direct_url.json" else None

        def locate_file(self, path):
            return self._site / path

    clone, odd = tmp_path / "my clone", tmp_path / "a%20b"   # a space (the URL quotes it), and a literal %20
    dists = [Dist("course-utils", '{"dir_info": {"editable": true}, "url": "%s"}' % clone.as_uri()),
             Dist("course_utils", '{"dir_info": {"editable": true}, "url": "%s"}' % odd.as_uri()),
             Dist("course_utils", '{"dir_info": {}, "url": "file:///somewhere/else"}'),          # pip install .
             Dist("course_utils", "{not json", site=tmp_path / "other-site"),
             Dist("torch", '{"dir_info": {"editable": true}, "url": "file:///src/pytorch"}')]
    monkeypatch.setattr(metadata, "distributions", lambda: dists)
    assert doctor._installs() == [(clone.resolve(), True), (odd.resolve(), True),
                                  ((tmp_path / "site-packages/course_utils").resolve(), False),
                                  ((tmp_path / "other-site/course_utils").resolve(), False)]
    assert doctor._path_of_file_url("file://localhost/srv/kit") == Path("/srv/kit").resolve()
