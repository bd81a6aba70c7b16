"""``.ci/gpu-checks``: the README's GPU acceptance steps in order of value under one time limit. Its
logic (order, budget, skips, exit codes, what is kept) is tested here with a stand-in interpreter that
records each call; the steps themselves are tested where they live (doctor, train, bench, notebooks)."""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from course_utils.runtime import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "gpu-checks"

STAND_IN = """#!/usr/bin/env bash
echo "$*|TORCH_LOGS=${TORCH_LOGS:-}|OMP=${OMP_NUM_THREADS:-}|SMOKE=${COURSE_SMOKE-unset}" >> "$CALLS"
case "$*" in
  *"course_utils train"*) mkdir -p runs && echo '{}' > runs/cifarnet-fast.json ;;
  *"course_utils bench"*) exit 3 ;;
esac
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_checks(tmp_path, budget, workers=None):
    stand_in = tmp_path / "python"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PYTHON": str(stand_in), "CALLS": str(calls), "COURSE_SMOKE": "1"}
    env.pop("GPU_CHECK_WORKERS", None)
    if workers:
        env["GPU_CHECK_WORKERS"] = str(workers)
    work = tmp_path / "repo"
    (work / "runs").mkdir(parents=True)
    old = work / "runs" / "before.json"
    old.write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))   # a record from before the checks
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), str(out), str(budget)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=60)
    return done, calls.read_text().splitlines() if calls.exists() else [], out


def test_every_step_runs_in_order_of_value_at_full_size(tmp_path):
    done, calls, out = run_checks(tmp_path, 200, workers=15)
    assert done.returncode == 0, done.stderr
    steps = [c.split("|")[0] for c in calls]
    assert steps == ["-m course_utils doctor",
                     "-m course_utils train --recipe fast --no-progress",
                     "-m pytest -q -p no:cacheprovider -n 15 --dist loadfile tests --ignore=tests/test_jupyterlab_e2e.py",
                     "-m course_utils bench",
                     "-m pytest -q -p no:cacheprovider --nbval --nbval-current-env notebooks/11_full_training.ipynb"]
    assert all(c.endswith("SMOKE=unset") for c in calls)               # never in smoke mode
    assert "TORCH_LOGS=recompiles" in calls[1] and "TORCH_LOGS=|" in calls[0]   # for the fast run only
    assert "OMP=1" in calls[2]                                           # one thread per test process
    log = (out / "steps.log").read_text()
    assert "bench: rc=3" in log and "doctor: rc=0" in log and log.rstrip().endswith("end")
    assert (out / "bench.log").read_text().splitlines()[-1] == "rc=3"
    # the fast run's record comes back; a record older than the checks does not
    assert sorted(p.name for p in (out / "runs").rglob("*.json")) == ["cifarnet-fast.json"]


def test_a_short_budget_skips_what_it_cannot_finish_and_says_so(tmp_path):
    done, calls, out = run_checks(tmp_path, 100)
    assert done.returncode == 0, done.stderr
    steps = [c.split("|")[0] for c in calls]
    assert steps == ["-m course_utils doctor",
                     "-m pytest -q -p no:cacheprovider tests --ignore=tests/test_jupyterlab_e2e.py",
                     "-m course_utils bench"]
    log = (out / "steps.log").read_text()
    assert "train_fast: skipped" in log and "(it needs 120)" in log and "notebook_11: skipped" in log


def test_without_an_output_folder_it_says_how_to_call_it(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "usage: bash .ci/gpu-checks OUT_DIR [SECONDS]" in done.stderr
