import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.__main__ import main
from course_utils.config import TrainConfig


def test_invalid_arguments_print_usage_and_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "zero"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--epochs: expected a whole number, got 'zero'" in err
    with pytest.raises(SystemExit):
        main(["train", "--model", "vgg"])
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "bench", "ablate", "doctor"])
def test_a_device_name_the_kit_does_not_know_is_a_usage_error_and_one_it_lacks_is_one_line(command, capsys,
                                                                                         monkeypatch):
    import torch

    for name, words in (("gpu", "unknown device 'gpu'"), ("xpu", "device 'xpu' is not one the kit trains on")):
        with pytest.raises(SystemExit) as e:
            main([command, "--device", name])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "usage:" in err
        assert f"argument --device: {words}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'" in err
    # a name it knows, on a machine without that device: the command runs and says so (exit code 1 for
    # training; the doctor reports it among its findings)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([command, "--device", "cuda:0"] + (["--data-dir", "nowhere"] if command != "doctor" else []))
    out = capsys.readouterr()
    assert code == 1 and "device 'cuda:0' asked for, but CUDA is not available here" in out.out + out.err
    assert "usage:" not in out.err
    # a card the installed PyTorch has no code for (a P100 under a CUDA 13 wheel): the same, with the fix
    from test_runtime_and_plots import NEW_WHEEL, _card

    _card(monkeypatch, (6, 0), NEW_WHEEL)
    code = main([command, "--device", "cuda:0"] + (["--data-dir", "nowhere"] if command != "doctor" else []))
    out = capsys.readouterr()
    assert code == 1 and "has no GPU code for Tesla P100-PCIE-16GB (compute capability 6.0" in out.out + out.err
    assert "install a PyTorch built for this card" in out.out + out.err and "Traceback" not in out.err
    if command != "doctor":
        assert len(out.err.strip().splitlines()) == 1


def test_missing_data_is_one_clear_line(tmp_path, capsys):
    code = main(["train", "--data-dir", str(tmp_path / "empty"), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: CIFAR-10 not found") and "Traceback" not in err
    assert f"the data folder {tmp_path / 'empty'} does not exist (a typo?). Point it at the folder that holds your copy" in err


def test_train_end_to_end(image_folder, tmp_path):
    env = {**os.environ, "COURSE_SMOKE": "1"}
    proc = subprocess.run([sys.executable, "-m", "course_utils", "train", "--data-dir", str(image_folder),
                           "--subset", "5", "--epochs", "1", "--device", "cpu", "--no-progress", "--seed", "11"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1/1" in proc.stdout and "final test accuracy" in proc.stdout
    course = TrainConfig()
    assert f"recipe course (auto): batch {course.batch_size}, peak lr {course.lr:g}, 1 epochs" in proc.stdout  # CPU: course
    assert "final validation accuracy" in proc.stdout and "test-time flip averaging" in proc.stdout
    path = proc.stdout.strip().splitlines()[-1].split("run record: ")[1]
    record = json.loads(open(path).read())
    assert record["model"] == "cifarnet" and record["parameters"] < 200_000 and record["epochs"] == 1
    assert record["data"]["train"] == 50 and record["device"] == "cpu"
    assert record["data"]["test"] == 30                # --subset leaves the test set whole (3 images per class)
    assert Path(path).parent == tmp_path / "runs"       # conftest points COURSE_RUNS_DIR away from the repository
    # the small folder's warning, as a command line prints one: a line of its own, no Python source line
    assert "warning: " in proc.stderr and "6 images per class, not CIFAR-10's 5,000" in proc.stderr
    assert "UserWarning" not in proc.stderr and "load_cifar10(" not in proc.stderr


def test_main_gives_back_the_callers_warning_display():
    import warnings

    before = warnings.showwarning
    assert main(["doctor", "--device", "cpu", "--data-dir", "/nonexistent"]) == 1
    assert warnings.showwarning is before


def test_a_subset_larger_than_the_data_is_refused_before_training(image_folder, tmp_path, capsys):
    """--subset 6 of a folder with 6 training images per class trained on 5 (one is held out for
    validation) under a name and record saying 6: now refused, with the largest that fits."""
    for command in (["train"], ["ablate", "--seeds", "1", "--variants", "reference"]):
        code = main([*command, "--data-dir", str(image_folder), "--subset", "6", "--epochs", "1", "--device", "cpu",
                     *(["--no-progress"] if command == ["train"] else [])])
        err = capsys.readouterr().err
        assert code == 1, command
        assert ("error: --subset 6 asks for 6 training images per class, but the data has 5 per class once the "
                "validation split is held out: give at most 5, or leave --subset out") in err, command
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
    # without a validation split all 6 are there to train on: 7 is refused, 6 trains
    code = main(["train", "--data-dir", str(image_folder), "--subset", "7", "--epochs", "1", "--device", "cpu",
                 "--no-progress", "--set", "validation=false"])
    assert code == 1 and ("--subset 7 asks for 7 training images per class, but the data has 6 per class: give at "
                          "most 6") in capsys.readouterr().err
    assert main(["train", "--data-dir", str(image_folder), "--subset", "6", "--epochs", "1", "--device", "cpu",
                 "--no-progress", "--set", "validation=false"]) == 0


def test_smoke_mode_ablate_without_subset_takes_what_a_small_folder_has(image_folder, monkeypatch, capsys):
    """Smoke mode's own subset (100 per class) is not the learner's --subset: on a small folder it takes
    what is there, as before, instead of an error about a flag nobody gave."""
    monkeypatch.setenv("COURSE_SMOKE", "1")
    code = main(["ablate", "--data-dir", str(image_folder), "--seeds", "1", "--variants", "reference", "--epochs", "1",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0 and "--subset" not in err, err


def test_a_crop_size_that_does_not_fit_is_refused_even_when_no_epoch_uses_it(image_folder, tmp_path, capsys):
    code = main(["train", "--data-dir", str(image_folder), "--epochs", "1", "--device", "cpu", "--no-progress",
                 "--set", "crop_size=40", "--set", "crop_fraction=0"])
    err = capsys.readouterr().err
    assert code == 1
    assert ("error: crop_size=40 does not fit these 32x32 images (and no epoch would use it: crop_fraction is 0): "
            "choose a crop size from 1 to 32, or crop_size=none for whole images") in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))


def test_train_with_the_fast_recipe(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    code = main(["train", "--recipe", "fast", "--data-dir", str(image_folder), "--subset", "5", "--epochs", "1",
                 "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    fast = TrainConfig.fast()
    assert f"recipe fast: batch {fast.batch_size}, peak lr {fast.lr:g}, 1 epochs" in out
    record = json.loads((tmp_path / "runs" / f"cifarnet-sub5-e1-b{fast.batch_size}-s1.json").read_text())
    assert record["config"]["batch_size"] == fast.batch_size and record["config"]["lr"] == fast.lr
    assert record["config"]["compile"] is True and record["device"] == "cpu" and record["epochs"] == 1
    assert main(["train", "--recipe", "fast", "--no-compile", "--batch-size", "64", "--data-dir", str(image_folder),
                 "--subset", "5", "--epochs", "1", "--device", "cpu", "--no-progress"]) == 0
    # a batch size of neither recipe: the name carries the fingerprint of the fast recipe's other settings, so a
    # course run at batch 64 (another peak lr, crops) does not share its file
    [named] = (tmp_path / "runs").glob("cifarnet-sub5-e1-b64-s1-x*.json")
    record = json.loads(named.read_text())
    assert record["config"]["batch_size"] == 64 and record["config"]["compile"] is False


def test_the_long_recipe_trains_its_network_unless_told_otherwise(monkeypatch, capsys):
    from course_utils import experiment

    calls = []

    def stop_before_training(model, config, **kwargs):
        calls.append((model, config))
        raise ValueError("stopped before training")

    monkeypatch.setattr(experiment, "run_training", stop_before_training)
    for args in (["--recipe", "long"], ["--recipe", "long", "--model", "cifarnet"], ["--recipe", "course"]):
        assert main(["train", *args, "--device", "cpu"]) == 1
    out = capsys.readouterr()
    from course_utils.config import LONG_RECIPE_MODEL

    assert LONG_RECIPE_MODEL == "cifarnet_res20"
    long, course = TrainConfig.for_environment("long"), TrainConfig.for_environment("course")
    assert calls == [(LONG_RECIPE_MODEL, long), ("cifarnet", long), ("cifarnet", course)]
    assert out.out.count(f"model {LONG_RECIPE_MODEL}: the long recipe's network (--model picks another)") == 1
    assert out.err.count("error: stopped before training") == 3


def test_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--recipe", "turbo"])
    assert e.value.code == 2 and "invalid choice: 'turbo'" in capsys.readouterr().err


def test_bench_quick_measures_and_writes_a_record(image_folder, capsys, tmp_path, monkeypatch):
    import json as _json
    from pathlib import Path

    from course_utils.config import TrainConfig
    from course_utils.experiment import checkpoint_path

    runs = tmp_path / "runs"
    monkeypatch.setenv("COURSE_RUNS_DIR", str(runs))
    # a learner's run, with the names the course and fast recipes give them: the benchmark must not touch them
    mine = [checkpoint_path("cifarnet", TrainConfig()), checkpoint_path("cifarnet", TrainConfig.recipe("fast"))]
    for i, p in enumerate(mine):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"a learner's checkpoint %d" % i)

    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.rglob("*") if p.is_file()
                and runs / "bench" not in p.parents}

    before = snapshot()
    code = main(["bench", "--quick", "--device", "cpu", "--data-dir", str(image_folder)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert snapshot() == before                           # nothing outside runs/bench/ was written
    path = Path(out.strip().splitlines()[-1].split("benchmark record: ")[1])
    assert path.parent == runs / "bench"
    record = _json.loads(path.read_text())
    assert record["device"] == "cpu" and record["quick"] is True
    assert record["cudnn_benchmark"] is False and record["cudnn_allow_tf32"] is None   # CUDA-only settings
    assert record["time_to_accuracy"] is None and record["time_to_accuracy_skipped"] == "--quick"
    assert [p["workers"] for p in record["pipeline"]][:2] == [0, 1]
    assert all(p["images_per_s"] > 0 for p in record["pipeline"])
    from course_utils.benchmark import BENCH_MODELS
    from course_utils.inspection import count_macs
    from course_utils.models import count_parameters, get_model

    from course_utils.config import LONG_RECIPE_MODEL

    # the seed's layout, v1, today's CifarNet and the long recipe's network, side by side
    assert {r["model"] for r in record["train_step"]} == set(BENCH_MODELS) >= {"cifarnet10", "cifarnet_v1", "cifarnet",
                                                                               LONG_RECIPE_MODEL}
    assert all(r["images_per_s"] > 0 for r in record["train_step"])
    for r in record["train_step"]:  # parameters and MACs side by side with the speed
        assert (r["parameters"], r["macs"]) == (count_parameters(get_model(r["model"])), count_macs(get_model(r["model"])))
    # on a CPU: fp32 with and without channels_last, for each model (autocast rows are CUDA-only)
    assert sorted((r["model"], r["channels_last"]) for r in record["train_step"] if r["amp"] == "fp32") == sorted(
        (m, cl) for m in BENCH_MODELS for cl in (False, True))
    assert {r["amp"] for r in record["train_step"]} == {"fp32"}
    assert record["time_to_accuracy"] is None and "time to accuracy: skipped" in out
    assert record["complete"] is True


def test_a_stopped_bench_keeps_the_rows_it_measured(image_folder, capsys, tmp_path, monkeypatch):
    """Stopped part-way (a time limit, Ctrl-C), the benchmark leaves its record with every row measured
    so far, marked incomplete, and says where it is (a GPU run that hit its limit once lost them all)."""
    import json as _json

    from course_utils import benchmark

    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    calls = []

    def three_rows_then_stop(*args, **kwargs):
        calls.append(args)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return 1000.0 + len(calls)

    monkeypatch.setattr(benchmark, "train_step_throughput", three_rows_then_stop)
    monkeypatch.setattr("course_utils.runtime.usable_cores", lambda: 16)   # a big machine: --quick still times 0 to 2 workers only
    code = main(["bench", "--quick", "--device", "cpu", "--data-dir", str(image_folder)])
    err = capsys.readouterr().err
    assert code == 130
    (path,) = (tmp_path / "runs" / "bench").glob("bench-cpu-*.json")
    assert f"the rows measured so far are in {path}" in err
    record = _json.loads(path.read_text())
    assert record["complete"] is False
    assert [r["images_per_s"] for r in record["train_step"]] == [1001.0, 1002.0, 1003.0]
    assert [p["workers"] for p in record["pipeline"]] == [0, 1, 2]  # --quick caps the loader workers at 2
    assert not list((tmp_path / "runs" / "bench").glob(".*.tmp"))    # no half-written file left beside it


#: Run the CLI in a process that kills itself (SIGKILL: no clean-up, as an out-of-memory kill or a closed
#: laptop) right after the checkpoint of epoch KILL_AFTER is on disk: a known point, not a race.
_KILLED_AFTER = """
import os, signal, sys
from course_utils import training
real, kill_after = training.save_checkpoint, int(sys.argv[1])
def save_then_die(path, *args, epoch=None, **kwargs):
    real(path, *args, epoch=epoch, **kwargs)
    if epoch == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
training.save_checkpoint = save_then_die
from course_utils.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def test_killed_run_resumes_from_its_last_checkpoint(image_folder, tmp_path):
    """A process killed mid-run (SIGKILL, not a clean Ctrl-C) leaves the checkpoint of its last complete
    epoch; ``--resume`` continues from there and the run record holds the whole history."""
    import signal

    import torch

    from course_utils.config import TrainConfig
    from course_utils.experiment import checkpoint_path

    epochs, kill_after = 4, 2
    args = ["--data-dir", str(image_folder), "--subset", "5", "--epochs", str(epochs), "--device", "cpu",
            "--no-progress", "--seed", "12", "--batch-size", "8"]
    ckpt = checkpoint_path("cifarnet", TrainConfig(epochs=epochs, train_per_class=5, seed=12, batch_size=8))
    assert ckpt.parent == tmp_path / "runs"      # conftest's COURSE_RUNS_DIR, inherited by the subprocesses
    killed = subprocess.run([sys.executable, "-c", _KILLED_AFTER, str(kill_after), "train", *args],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(ckpt, weights_only=True)["epoch"] == kill_after
    assert not ckpt.with_suffix(".json").exists()          # no run record: the run never finished
    resumed = subprocess.run([sys.executable, "-m", "course_utils", "train", *args, "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt} after epoch {kill_after}:" in resumed.stdout
    # the saved epochs are listed again, the rest trained: each epoch line appears exactly once
    assert all(resumed.stdout.count(f"epoch {k:3d}/{epochs} ") == 1 for k in range(1, epochs + 1))
    record = json.loads(ckpt.with_suffix(".json").read_text())
    assert record["epochs"] == epochs and record["history"]["epoch"] == list(range(1, epochs + 1))


def test_ablate_trains_the_chosen_variants_and_seeds_and_writes_csvs_and_figure(image_folder, tmp_path, capsys):
    import csv

    args = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
            "--variants", "reference", "no-augmentation", "--seeds", "3", "4"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 variants x 2 seeds, 1 epochs each, 4 per class (validation split held out), on cpu" in out
    figs = tmp_path / "figures"   # conftest's COURSE_FIGURES_DIR
    rows = list(csv.DictReader(open(figs / "09_ablation_runs.csv")))
    assert [(r["variant"], r["seed"]) for r in rows] == [("reference", "3"), ("reference", "4"),
                                                         ("no-augmentation", "3"), ("no-augmentation", "4")]
    assert rows[0]["parameters"] == rows[2]["parameters"] and int(rows[0]["parameters"]) < 200_000
    assert all(0 <= float(r["final_test_acc"]) <= 100 and r["epochs"] == "1" and r["train_images"] == "40"
               for r in rows)
    summary = list(csv.DictReader(open(figs / "09_ablation_summary.csv")))
    assert [(r["variant"], r["seeds"]) for r in summary] == [("reference", "2"), ("no-augmentation", "2")]
    assert "total training time of the 4 runs" in out
    assert (figs / "09_ablation.png").stat().st_size > 10_000
    # the same command again reads every run back instead of training it
    assert main(args) == 0
    assert capsys.readouterr().out.count("(done before") == 4


def test_ablate_jobs_trains_runs_side_by_side_and_records_them_in_order(image_folder, tmp_path, capsys, monkeypatch):
    import csv

    from course_utils import ablation

    walls, record_time = [], ablation.record_time   # the clock the call measured, whatever this machine's speed
    monkeypatch.setattr(ablation, "record_time", lambda rows, wall, *a, **k: walls.append(wall) or record_time(rows, wall, *a, **k))

    args = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "2", "--device", "cpu",
            "--variants", "reference", "reference", "--seeds", "2", "1", "2", "--jobs", "2"]   # repeats run once
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 variants x 2 seeds, 2 epochs each (1 of them on 24x24 crops), 4 per class (validation split held out), " \
           "on cpu, 2 runs at a time" in out
    assert re.search(r"2 runs to train, 2 at a time, \d+ thread\(s\) each", out)
    rows = list(csv.DictReader(open(tmp_path / "figures" / "09_ablation_runs.csv")))
    assert [(r["variant"], r["seed"], r["crop_size"], r["crop_epochs"]) for r in rows] == [
        ("reference", "1", "24", "1"), ("reference", "2", "24", "1")]
    timing = json.loads((tmp_path / "figures" / "09_ablation_time.json").read_text())
    assert (timing["runs"], timing["runs_trained_in_this_call"], timing["jobs"]) == (2, 2, 2)
    assert timing["summed_run_minutes"] == round(sum(float(r["train_seconds"]) for r in rows) / 60, 1)
    assert len(walls) == 1 and walls[0] > 0 and timing["wall_minutes"] == round(walls[0] / 60, 1)
    assert timing["device"] == "cpu"
    before = (tmp_path / "figures" / "09_ablation_time.json").read_text()
    assert main(args) == 0 and "0 runs trained in it" in capsys.readouterr().out   # all read back
    assert (tmp_path / "figures" / "09_ablation_time.json").read_text() == before   # the study's record is kept
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", "--jobs", "0"])
    assert exit_.value.code == 2 and "--jobs: must be at least 1, got 0" in capsys.readouterr().err


def _kill_the_ablation_on_its_second_run(monkeypatch) -> list[str]:
    """Make the ablation's second training call die like a killed process (not a Ctrl-C); returns the
    list the names of the variants it starts training are appended to."""
    from course_utils import ablation

    real_train, trained = ablation.train, []

    def killed_on_the_second_run(build, *a, **k):
        trained.append(build.__self__.name)
        if len(trained) == 2:
            raise SystemExit("killed")
        return real_train(build, *a, **k)

    monkeypatch.setattr(ablation, "train", killed_on_the_second_run)
    return trained


def test_ablate_carries_finished_runs_to_another_machine_in_the_partial_csv(image_folder, tmp_path, monkeypatch, capsys):
    """A study killed outright (not Ctrl-C) after its first run leaves that run's row in
    figures/09_ablation_runs.partial.csv; on a machine without runs/ (a fresh clone with the CSV
    committed) the same command trains only the rest, then writes the full CSV and drops the partial one."""
    import csv
    import shutil

    from course_utils import ablation

    args = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
            "--variants", "reference", "flip-only", "--seeds", "1"]
    real_train = ablation.train
    trained = _kill_the_ablation_on_its_second_run(monkeypatch)
    with pytest.raises(SystemExit):
        main(args)
    figs = tmp_path / "figures"
    partial = figs / "09_ablation_runs.partial.csv"
    first = list(csv.DictReader(open(partial)))
    assert [(r["variant"], r["seed"]) for r in first] == [("reference", "1")]
    assert not (figs / "09_ablation_runs.csv").exists()

    shutil.rmtree(tmp_path / "runs")                   # another machine: only the committed CSV is there
    trained.clear()
    capsys.readouterr()
    monkeypatch.setattr(ablation, "train", lambda build, *a, **k: trained.append(build.__self__.name) or real_train(build, *a, **k))
    assert main(args) == 0
    assert trained == ["flip-only"]                    # the reference was not trained again
    assert "(done before, from the CSV)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(figs / "09_ablation_runs.csv")))
    assert [(r["variant"], r["seed"]) for r in rows] == [("reference", "1"), ("flip-only", "1")]
    assert rows[0] == first[0] and not partial.exists()

    # a row of another network (other parameters) or another length is trained again, not reused
    rows[1]["parameters"] = str(int(rows[1]["parameters"]) + 1)
    with open(figs / "09_ablation_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(tmp_path / "runs")
    trained.clear()
    assert main(args) == 0 and trained == ["flip-only"]


def test_ablate_adds_to_the_recorded_study_and_never_shrinks_or_mixes_it(image_folder, tmp_path, monkeypatch, capsys):
    """A call with a few variants adds its rows to figures/09_ablation_runs.csv instead of replacing the
    study recorded there; a call of another length is refused before it trains, and the recorded study
    stays as it was."""
    import csv

    figs = tmp_path / "figures"
    base = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--device", "cpu", "--seeds", "1"]
    assert main(base + ["--epochs", "1", "--variants", "reference", "flip-only"]) == 0
    assert main(base + ["--epochs", "1", "--variants", "se"]) == 0
    out = capsys.readouterr().out
    assert "(3 runs, 2 of them recorded earlier and not in this call)" in out
    rows = list(csv.DictReader(open(figs / "09_ablation_runs.csv")))
    assert [r["variant"] for r in rows] == ["reference", "se", "flip-only"]   # in the study's order
    assert [r["variant"] for r in csv.DictReader(open(figs / "09_ablation_summary.csv"))] == ["reference", "se", "flip-only"]

    before = (figs / "09_ablation_runs.csv").read_text()
    assert main(base + ["--epochs", "2", "--variants", "se"]) == 1
    err = capsys.readouterr().err
    assert "is an ablation of 1 epochs (whole images) on 40 training images; this one would run 2 epochs (1 of them on 24x24 crops) on 40" in err
    assert "COURSE_FIGURES_DIR" in err
    assert (figs / "09_ablation_runs.csv").read_text() == before
    assert not list((tmp_path / "runs" / "ablation").glob("sub4-e2*"))   # refused before training anything

    # in another figures folder, as the message says, the longer study runs and leaves the first alone
    monkeypatch.setenv("COURSE_FIGURES_DIR", str(tmp_path / "figures-e2"))
    assert main(base + ["--epochs", "2", "--variants", "se"]) == 0
    assert [r["epochs"] for r in csv.DictReader(open(tmp_path / "figures-e2" / "09_ablation_runs.csv"))] == ["2"]
    assert (figs / "09_ablation_runs.csv").read_text() == before


def test_a_running_ablation_keeps_the_earlier_runs_in_its_partial_csv(image_folder, tmp_path, monkeypatch, capsys):
    """While a study runs, the partial CSV holds every run recorded so far, the earlier ones of variants
    the loop has not reached yet included: a call killed then (or a commit made then) loses none."""
    import csv

    base = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
            "--seeds", "1"]
    assert main(base + ["--variants", "flip-only"]) == 0          # recorded earlier, last in the study's order
    trained = _kill_the_ablation_on_its_second_run(monkeypatch)
    with pytest.raises(SystemExit):
        main(base + ["--variants", "reference", "se", "flip-only"])
    partial = list(csv.DictReader(open(tmp_path / "figures" / "09_ablation_runs.partial.csv")))
    assert [r["variant"] for r in partial] == ["reference", "flip-only"]
    assert trained == ["reference", "se"]


def test_ablate_refuses_a_partial_csv_left_conflicted_by_git_in_one_line_and_trains_nothing(image_folder, tmp_path,
                                                                                          monkeypatch, capsys):
    """Two machines each committed a finished run to the partial CSV and `git merge` left both versions
    in it: the call says which file and line, and how to mend it, instead of a traceback."""
    from course_utils import ablation

    args = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
            "--variants", "reference", "--seeds", "1"]
    assert main(args) == 0
    figs = tmp_path / "figures"
    text = (figs / "09_ablation_runs.csv").read_text()
    header, row = text.splitlines()
    (figs / "09_ablation_runs.csv").unlink()
    (figs / "09_ablation_runs.partial.csv").write_text(
        "\n".join([header, "<<<<<<< HEAD", row, "=======", row, ">>>>>>> other"]) + "\n")
    trained = []
    monkeypatch.setattr(ablation, "train", lambda *a, **k: trained.append(a))
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "09_ablation_runs.partial.csv line 2 is a merge-conflict marker" in err and "Keep the runs of both" in err
    assert trained == []


def test_ablate_that_cannot_write_the_finished_study_says_where_the_runs_are_and_how_to_go_on(image_folder, tmp_path,
                                                                                               monkeypatch, capsys):
    from course_utils import ablation

    args = ["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
            "--variants", "reference", "--seeds", "1"]
    real = ablation.record_study

    def full_disk(rows, complete, folder=None):
        if complete:
            raise OSError(28, "No space left on device")
        return real(rows, complete, folder)
    monkeypatch.setattr(ablation, "record_study", full_disk)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert "The 1 runs are kept under" in err and "run the same command again to write the study" in err
    monkeypatch.setattr(ablation, "record_study", real)
    assert main(args) == 0 and "(done before" in capsys.readouterr().out   # read back, not trained again


def test_ablate_that_cannot_write_its_partial_study_names_the_figures_folder_and_no_resume_flag(image_folder,
                                                                                              monkeypatch, capsys):
    """A figures folder that cannot be written after a run (read-only, full): the fix names it, and says to run
    the same command again (ablate has no --resume)."""
    from course_utils import ablation

    def read_only(rows, complete, folder=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ablation, "record_study", read_only)
    assert main(["ablate", "--data-dir", str(image_folder), "--subset", "4", "--epochs", "1", "--device", "cpu",
                 "--variants", "reference", "--seeds", "1"]) == 1
    err = capsys.readouterr().err
    assert "Permission denied. Make the runs folder (runs/, or COURSE_RUNS_DIR) and the figures folder (figures/, " \
           "or COURSE_FIGURES_DIR) writable" in err
    assert "run the same command again: finished runs are read back" in err and "--resume" not in err


def test_ablate_rejects_an_unknown_variant(capsys):
    assert main(["ablate", "--variants", "reference", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant(s) resnet50" in err and "choose from reference, maxpool" in err


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "inf"], "argument --lr: must be a positive, finite number, got 'inf'"),
    (["train", "--lr", "nan"], "argument --lr: must be a positive, finite number, got 'nan'"),
    (["train", "--seed", "-5"], "argument --seed: must be 0 or more, got -5"),
    (["train", "--workers", "-1"], "argument --workers: must be 0 or more, got -1"),
    (["ablate", "--seeds", "1", "-2"], "argument --seeds: must be 0 or more, got -2"),
])
def test_impossible_numbers_are_usage_errors_naming_the_option(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_help_texts_list_what_they_accept_and_print_percent_signs(capsys):
    from course_utils.ablation import VARIANTS

    for command in ("bench", "ablate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "%%" not in out
        if command == "bench":
            assert "85% test accuracy" in " ".join(out.split())
        else:
            assert all(v.name in out for v in VARIANTS)


def test_time_to_accuracy_reports_the_compile_time_apart():
    from course_utils.benchmark import time_to_accuracy
    from course_utils.training import History

    h = History(epoch=[1, 2, 3], test_acc=[70.0, 85.3, 86.0], seconds=[40.0, 10.0, 10.0], compile_seconds=28.5)
    r = time_to_accuracy(h, 85.0)
    assert (r["reached_at_epoch"], r["seconds_to_target"], r["compile_seconds"]) == (2, 50.0, 28.5)
    assert r["training_seconds_to_target"] == 21.5 and r["final_test_acc"] == 86.0
    never = time_to_accuracy(History(epoch=[1], test_acc=[60.0], seconds=[5.0]), 85.0)
    assert never["reached_at_epoch"] is None and never["training_seconds_to_target"] is None
    assert never["compile_seconds"] is None     # an uncompiled run has no compile time


def test_train_help_gives_the_workers_loader_workers_picks(capsys, monkeypatch):
    import torch

    from course_utils.runtime import loader_workers

    monkeypatch.setattr("course_utils.runtime.usable_cores", lambda: 16)
    cpu, mps, cuda = (loader_workers(torch.device(kind)) for kind in ("cpu", "mps", "cuda"))
    assert (cpu, mps, cuda) == (0, 2, 8)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: {cpu} on a CPU, {mps} on MPS, up to {cuda} on CUDA" in help_text


def test_ablate_help_gives_the_ablation_recipes_epochs(capsys, monkeypatch):
    from course_utils.ablation import ABLATION_EPOCHS, ablation_config
    from course_utils.config import SMOKE_EPOCHS

    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: the ablation recipe's, {ABLATION_EPOCHS}; {SMOKE_EPOCHS} in smoke mode" in help_text
    # the numbers the help names are the recipe's, at each size
    assert ablation_config().epochs == ABLATION_EPOCHS == 4
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert ablation_config().epochs == SMOKE_EPOCHS == 2


def _stop_before_training(monkeypatch):
    """Replace run_training by a recorder that stops the command before any data is read."""
    from course_utils import experiment

    calls = []

    def stop(model, config, **kwargs):
        calls.append((model, config))
        raise ValueError("stopped before training")

    monkeypatch.setattr(experiment, "run_training", stop)
    return calls


def test_set_changes_one_learning_setting_of_the_recipe(monkeypatch, capsys):
    calls = _stop_before_training(monkeypatch)
    assert main(["train", "--recipe", "long", "--model", "cifarnet_fullres", "--set", "weight_decay=1e-3",
                 "--set", "affine-p=0.25", "--device", "cpu"]) == 1
    assert main(["train", "--recipe", "course", "--set", "crop_size=none", "--set", "validation=false",
                 "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    (model, long), (_, course) = calls
    assert model == "cifarnet_fullres"
    assert long == TrainConfig.for_environment("long", weight_decay=1e-3, affine_p=0.25)
    assert long.weight_decay == 0.001 and long.affine_p == 0.25 and long.epochs == TrainConfig.recipe("long").epochs
    assert course.crop_size is None and course.crop_epochs == 0 and course.validation is False
    assert "changed: weight_decay=0.001, affine_p=0.25" in out and "changed: crop_size=None, validation=False" in out


def test_a_recipe_without_set_is_unchanged(monkeypatch, capsys):
    calls = _stop_before_training(monkeypatch)
    assert main(["train", "--recipe", "course", "--device", "cpu"]) == 1
    assert calls[0][1] == TrainConfig.for_environment("course") and "changed:" not in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [
    ("lr=0.1", "lr has its own option: use --lr"),
    ("epochs=3", "epochs has its own option: use --epochs"),
    ("amp=false", "amp has its own option: use --amp/--no-amp"),
    ("wd=1e-3", "unknown setting 'wd'; choose one of momentum, weight_decay,"),
    ("weight_decay=much", "weight_decay expects a number, got 'much'"),
    ("weight_decay", "expected NAME=VALUE, e.g. weight_decay=1e-3, got 'weight_decay'"),
    ("crop_size=2.5", "crop_size expects a whole number of pixels or none, got '2.5'"),
    ("validation=maybe", "validation expects true or false, got 'maybe'"),
    ("dropout_p=2", "dropout_p must be a finite number from 0 to 1, got 2.0"),
    ("weight_decay=inf", "weight_decay must be a finite number from 0 to inf, got inf"),
    ("crop_size=0", "crop_size must be a whole number of pixels (1 or more) or None, got 0"),
    ("pct_start=0.8", "pct_start must be a finite number from 0 to 0.5, got 0.8"),
])
def test_a_bad_set_is_a_usage_error_naming_the_fix(setting, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--set", setting])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_no_amp_is_the_fix_the_fp16_overflow_error_names(monkeypatch):
    """The overflow error says "train --no-amp": the flag exists and trains without mixed precision (a
    changed setting, so another run name than the mixed-precision run's)."""
    from course_utils.experiment import checkpoint_path

    calls = _stop_before_training(monkeypatch)
    assert main(["train", "--no-amp", "--device", "cpu"]) == 1
    assert main(["train", "--device", "cpu"]) == 1
    (_, off), (_, on) = calls
    assert off.amp is False and on.amp is True and off.to_dict() == {**on.to_dict(), "amp": False}
    assert checkpoint_path("cifarnet", off) != checkpoint_path("cifarnet", on)


def test_a_setting_given_twice_is_a_clear_error(monkeypatch, capsys):
    calls = _stop_before_training(monkeypatch)
    assert main(["train", "--set", "flip_p=0", "--set", "flip_p=1", "--device", "cpu"]) == 2
    assert "error: --set gives flip_p more than once; give each setting once" in capsys.readouterr().err
    assert calls == []   # it did not reach training


def test_parse_setting_converts_to_each_settings_type():
    from course_utils.__main__ import settable
    from course_utils.config import LEARNING_SETTINGS, parse_setting

    names = settable()
    assert {"weight_decay", "label_smoothing", "affine_p", "dropout_p", "crop_size"} <= set(names)
    assert "lr" not in names and "optimizer" not in names and "epochs" not in names   # own flags
    assert set(names) <= set(LEARNING_SETTINGS)
    assert parse_setting(" label_smoothing = 0 ", names) == ("label_smoothing", 0.0)
    assert parse_setting("crop_size=28", names) == ("crop_size", 28)
    assert parse_setting("crop_size=None", names) == ("crop_size", None)
    assert parse_setting("validation=1", names) == ("validation", True)
    with pytest.raises(ValueError, match="unknown setting 'dropout_p'; choose one of weight_decay"):
        parse_setting("dropout_p=0.1", ("weight_decay",))
    for name in names:   # every settable name parses its default's text back to the default
        default = getattr(TrainConfig(), name)
        assert parse_setting(f"{name}={default}", names) == (name, default)


def test_adam_without_its_own_learning_rate_gets_a_note(monkeypatch, capsys):
    calls = _stop_before_training(monkeypatch)
    assert main(["train", "--optimizer", "adam", "--device", "cpu"]) == 1          # stopped before training
    out = capsys.readouterr().out
    assert calls[0][1].optimizer == "adam" and calls[0][1].lr == 0.2
    assert "note: the peak lr 0.2 is the recipe's, tuned for SGD; Adam usually wants far less (about 1e-3: pass --lr)" in out
    main(["train", "--optimizer", "adam", "--lr", "0.001", "--device", "cpu"])
    assert "note:" not in capsys.readouterr().out


def test_a_full_disk_and_ctrl_c_outside_the_epochs_end_with_a_message_not_a_traceback(image_folder, tmp_path,
                                                                                        monkeypatch, capsys):
    """A disk that fills while a checkpoint is written (OSError from the save) and Ctrl-C while the data
    loads: each ends with one line naming what to do (exit codes 1 and 130), not a traceback."""
    import errno

    from course_utils import checkpoint, data

    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    args = ["train", "--epochs", "1", "--batch-size", "16", "--subset", "5", "--device", "cpu", "--no-progress",
            "--data-dir", str(image_folder)]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert ("error: [Errno 28] No space left on device. Make the runs folder (runs/, or COURSE_RUNS_DIR) writable and "
            "free some space") in err
    assert "--resume continues from it" in err and "Traceback" not in err
    monkeypatch.undo()
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_cifar10", stopped)
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == ("interrupted (Ctrl-C); a training run continues from its last "
                                               "complete epoch with --resume")


@pytest.mark.parametrize("setting, then", [
    ("crop_size=24", "crop_size 24, crop_fraction 0.0 of 40 epochs"),       # the fast recipe crops nothing
    ("crop_fraction=0.75", "crop_size None, crop_fraction 0.75 of 40 epochs"),
])
def test_a_crop_setting_that_would_change_nothing_is_refused(tmp_path, monkeypatch, capsys, setting, then):
    """On the fast recipe (no crop size, no crop fraction) one of the two alone trains exactly the fast
    recipe, under another run's name: refused (exit code 2), naming both settings; nothing is written."""
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    assert main(["train", "--recipe", "fast", "--device", "cpu", "--set", setting, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {setting} would change nothing: no epoch of this run trains on crops ({then})" in err
    assert "--set crop_size=24 --set crop_fraction=0.75" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("raised, says", [
    ("checkpoint", "ablate continues every run from its checkpoint under "),
    ("value", "jobs=2 runs side by side share one cuda device"),
    ("disk", "Make the runs folder (runs/, or COURSE_RUNS_DIR) and the figures folder (figures/, or COURSE_FIGURES_DIR) "
             "writable and free some space"),
])
def test_ablate_ends_a_failed_run_with_a_message_not_a_traceback(image_folder, tmp_path, monkeypatch, capsys,
                                                                   raised, says):
    """A run's checkpoint that no longer loads (older code, a damaged file), --jobs on a GPU, a full disk:
    each ends the study with one line naming the fix, exit code 1 (the finished runs stay recorded)."""
    import errno

    from course_utils import ablation
    from course_utils.checkpoint import CheckpointError

    errors = {"checkpoint": CheckpointError("runs/ablation/x/reference-s1.pt holds another model's weights"),
              "value": ValueError("jobs=2 runs side by side share one cuda device and slow each other down"),
              "disk": OSError(errno.ENOSPC, "No space left on device")}

    def fails(*a, **k):
        raise errors[raised]

    monkeypatch.setenv("COURSE_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.setattr(ablation, "run_ablation", fails)
    code = main(["ablate", "--variants", "reference", "--seeds", "1", "--epochs", "2", "--device", "cpu",
                 "--data-dir", str(image_folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and says in err and "Traceback" not in err
