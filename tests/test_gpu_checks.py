"""``.ci/gpu-checks``: a short loan's share of the README's GPU acceptance steps, in order of value under
one time limit. Its logic (order, budget, skips, exit codes, what is kept) is tested here with a
stand-in interpreter that records each call; the steps themselves are tested where they live (doctor,
train, bench, notebooks)."""
import os
import re
import shutil
import subprocess
import time

import pytest

from course_utils.runtime import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "gpu-checks"

# records each call; "train" and the notebook both write the same record name, as on a GPU (both train
# the fast recipe); "import xdist" fails unless XDIST is set; bench fails with exit code 3
STAND_IN = """#!/usr/bin/env bash
[ "$*" = "-c import xdist" ] && { [ -n "${XDIST:-}" ]; exit $?; }
echo "$*|TORCH_LOGS=${TORCH_LOGS:-}|OMP=${OMP_NUM_THREADS:-}|SMOKE=${COURSE_SMOKE-unset}" >> "$CALLS"
case "$*" in
  *"course_utils train"*) mkdir -p runs && echo '{"by": "train"}' > runs/cifarnet-full-e40-b512-s1.json
    printf '%b\n' "${FAST_OUT:-done: cifarnet\nfinal validation accuracy 85.90%, final test accuracy 85.50% (with test-time flip averaging: 86.10%)}" ;;
  *"11_full_training"*) mkdir -p runs && echo '{"by": "notebook"}' > runs/cifarnet-full-e40-b512-s1.json ;;
  *"course_utils bench"*) mkdir -p runs/bench && echo '{"by": "bench"}' > runs/bench/bench-cuda-x.json; exit 3 ;;
  *"course_utils doctor"*) if [ -n "${DOCTOR_SLEEP:-}" ]; then exec sleep "$DOCTOR_SLEEP"; fi
                           if [ -n "${DOCTOR_KILLED:-}" ]; then kill -9 $$; fi ;;
esac
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_checks(tmp_path, budget, workers=None, xdist=True, fast_out=None, script=SCRIPT, doctor_sleep=None,
               doctor_killed=False):
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPU_CHECK_WORKERS", "OMP_NUM_THREADS", "TORCH_LOGS", "COURSE_RUNS_DIR", "XDIST")}
    env.update(PYTHON=str(stand_in), CALLS=str(calls), COURSE_SMOKE="1")
    if workers:
        env["GPU_CHECK_WORKERS"] = str(workers)
    if xdist:
        env["XDIST"] = "1"
    if fast_out is not None:
        env["FAST_OUT"] = fast_out
    if doctor_sleep is not None:
        env["DOCTOR_SLEEP"] = str(doctor_sleep)
    if doctor_killed:
        env["DOCTOR_KILLED"] = "1"
    work = tmp_path / "repo"
    (work / "runs").mkdir(parents=True)
    old = work / "runs" / "before.json"
    old.write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))   # a record from before the checks
    done = subprocess.run(["bash", str(script), "out-rel", str(budget)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=60)
    return done, calls.read_text().splitlines() if calls.exists() else [], work / "out-rel"


def test_every_step_runs_in_order_of_value_at_full_size(tmp_path):
    done, calls, out = run_checks(tmp_path, 200, workers=15)
    assert done.returncode == 1, done.stderr                             # bench failed
    steps = [c.split("|")[0] for c in calls]
    assert steps == ["-m course_utils doctor",
                     "-m course_utils train --recipe fast --no-progress",
                     "-m pytest -q -p no:cacheprovider tests --ignore=tests/test_jupyterlab_e2e.py -n 15 --dist loadfile",
                     "-m course_utils bench --no-time-to-accuracy",
                     "-m pytest -q -p no:cacheprovider --nbval --nbval-current-env notebooks/11_full_training.ipynb"]
    assert all(c.endswith("SMOKE=unset") for c in calls)               # never in smoke mode
    assert [c.split("|")[1] for c in calls] == ["TORCH_LOGS=", "TORCH_LOGS=recompiles"] + ["TORCH_LOGS="] * 3
    assert [c.split("|")[2] for c in calls] == ["OMP="] * 2 + ["OMP=1"] + ["OMP="] * 2   # one thread per xdist process
    log = (out / "steps.log").read_text()
    assert "bench: rc=3" in log and "doctor: rc=0" in log and log.rstrip().endswith("end: failed: bench")
    assert "train_fast: compiled, traced once, final test accuracy 85.50% (85% or more)" in log
    assert (out / "bench.log").read_text().splitlines()[-1] == "rc=3"
    # each step's records in a folder of its own: the notebook's run does not overwrite the Results row's;
    # a record older than the checks is not copied
    # bench's record, written in runs/bench/, comes back two folders below the output folder (the device machine
    # returns nothing deeper)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.json")) == [
        "runs/bench/bench_bench-cuda-x.json", "runs/notebook_11/cifarnet-full-e40-b512-s1.json",
        "runs/train_fast/cifarnet-full-e40-b512-s1.json"]
    assert '"train"' in (out / "runs/train_fast/cifarnet-full-e40-b512-s1.json").read_text()


def test_a_short_budget_skips_what_it_cannot_finish_and_says_so(tmp_path):
    done, calls, out = run_checks(tmp_path, 100, workers=15, xdist=False)
    assert done.returncode == 1, done.stderr
    steps = [c.split("|")[0] for c in calls]
    assert steps == ["-m course_utils doctor",
                     "-m pytest -q -p no:cacheprovider tests --ignore=tests/test_jupyterlab_e2e.py",
                     "-m course_utils bench --no-time-to-accuracy"]
    log = (out / "steps.log").read_text()
    assert "train_fast: skipped" in log and "(it needs 120)" in log and "notebook_11: skipped" in log
    assert "pytest-xdist is not installed (pip install pytest-xdist): one process" in log
    assert [p.name for p in (out / "runs").rglob("*.json")] == ["bench_bench-cuda-x.json"]   # no training ran


def test_bad_arguments_are_refused_with_the_usage(tmp_path):
    for args in ([], ["out", "10m"], ["out", "-5"]):
        done = subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "usage: bash .ci/gpu-checks OUT_DIR [SECONDS]" in done.stderr, args
        assert not (tmp_path / "out" / "steps.log").exists()
    assert "got SECONDS=10m" in subprocess.run(["bash", str(SCRIPT), "out", "10m"], cwd=tmp_path, capture_output=True,
                                               text=True, timeout=30).stderr


@pytest.mark.parametrize("fast_out, why", [
    ("torch.compile failed at the first step (RuntimeError: GPUTooOldForTriton); training uncompiled from here\n"
     "final test accuracy 86.00% (with test-time flip averaging: 86.50%)", "it trained uncompiled"),
    ("torch.compile off: Triton is not installed (pip install triton); training uncompiled (--no-compile skips "
     "this note)\nfinal test accuracy 86.00% (x)", "it trained uncompiled"),
    ("torch.compile off: Triton needs compute capability 7.0 or newer, this GPU is 6.0; training uncompiled "
     "(--no-compile skips this note)\nfinal test accuracy 86.00% (x)", "it trained uncompiled"),
    ("V1205 torch/_dynamo/guards.py] [0/1] Recompiling function forward in models.py\nfinal test accuracy 86.00% (x)",
     "the compiled graph was traced again"),
    ("final validation accuracy 80.20%, final test accuracy 80.00% (with test-time flip averaging: 81.00%)",
     "final test accuracy 80.00%, under 85%"),
    ("done: cifarnet, 12 epochs\nno final accuracy: the run stopped early; continue it with --resume",
     "no final test accuracy in its log"),
])
def test_the_fast_run_fails_on_what_it_did_not_only_on_its_exit_code(tmp_path, fast_out, why):
    """Exit code 0 is not enough: a compile that fell back to eager, a recompile, a run under 85% or one
    with no final accuracy makes the fast run a failed step, and the line says which."""
    done, calls, out = run_checks(tmp_path, 200, workers=15, fast_out=fast_out)
    assert done.returncode == 1, done.stderr
    log = (out / "steps.log").read_text()
    assert "train_fast: rc=0" in log and f"train_fast: failed its checks: {why}" in log, log
    assert log.rstrip().endswith("end: failed: train_fast bench")
    assert len(calls) == 5                      # the later steps still ran


def test_a_fast_run_that_fails_two_checks_names_both(tmp_path):
    done, _, out = run_checks(tmp_path, 200, workers=15, fast_out="Recompiling function forward\nfinal test accuracy 84.99% (x)")
    assert ("train_fast: failed its checks: the compiled graph was traced again; final test accuracy 84.99%, under 85%"
            in (out / "steps.log").read_text())


@pytest.mark.parametrize("doctor_limits, budget, rc, line, end", [
    # its own maximum (3 s) is the limit: it overran what it is allowed, a failure
    ("1 3", 100, 1, "doctor: rc=124 (over its own limit of 3 s: failed)", "end: failed: doctor bench"),
    # the budget (3 s) is the limit: the step is unfinished, not failed, and the last line says so
    # (the budget's seconds are counted from the script's start: the step gets what is left of them, less
    # on a loaded machine, so the seconds are any up to the budget; rc, wording and last line are the check)
    ("1 60", 3, 0, re.compile(r"doctor: rc=124 \(cut when the budget ran out after [0-3] s: unfinished, not failed\)"),
     "end: every step that ran passed; cut by the budget, unfinished: doctor"),
])
def test_a_step_cut_by_the_budget_is_unfinished_and_one_over_its_own_limit_failed(tmp_path, doctor_limits, budget,
                                                                                  rc, line, end):
    """Timed with short limits: a copy of the script whose doctor step may take 1 to 3 (or 60) s, and a
    doctor that hangs for 30 s."""
    script = tmp_path / "gpu-checks"
    text = SCRIPT.read_text()
    assert text.count("step doctor 20 60 ") == 1
    script.write_text(text.replace("step doctor 20 60 ", f"step doctor {doctor_limits} "))
    done, calls, out = run_checks(tmp_path, budget, workers=15, script=script, doctor_sleep=30)
    assert done.returncode == rc, done.stderr
    log = (out / "steps.log").read_text()
    assert (line.search(log) if isinstance(line, re.Pattern) else line in log) and log.rstrip().endswith(end), log
    assert (out / "doctor.log").read_text().splitlines()[-1] == "rc=124"


def test_a_step_killed_before_its_limit_failed_whatever_the_budget(tmp_path):
    """Exit code 137 (SIGKILL) is a cut only when the limit has passed (timeout's KILL, 10 s after its TERM);
    a doctor killed at once (as the out-of-memory killer would) failed, though the budget set its limit."""
    done, _, out = run_checks(tmp_path, 30, workers=15, doctor_killed=True)
    assert done.returncode == 1, done.stderr
    log = (out / "steps.log").read_text()
    assert "doctor: rc=137 (killed before its limit: out of memory?)" in log and "unfinished" not in log, log
    assert log.rstrip().endswith("end: failed: doctor")
