"""course_utils.benchmark: the arithmetic of relative speed, with the timer stubbed (no timing in tests)."""
import itertools
import json
import math

import pytest
import torch
from torch import nn

from course_utils.benchmark import RelativeSpeed, relative_throughput, train_step_throughput


class Named(nn.Module):
    def __init__(self, name):
        super().__init__()
        self.name = name
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def stub_measure(timings):
    """A stand-in for train_step_throughput: images/s read in turn from ``timings[name]``, and a log
    of the calls (model name, order, settings passed on)."""
    feeds = {name: iter(values) for name, values in timings.items()}
    calls = []

    def measure(model, device, batch_size, channels_last, steps):
        calls.append((model.name, device, batch_size, channels_last, steps))
        return next(feeds[model.name])

    return measure, calls


def builds(*names):
    return {name: (lambda name=name: Named(name)) for name in names}


def test_relative_throughput_pairs_each_pass_with_the_reference_of_that_pass():
    # The machine slows down by half in pass 2: raw medians would blur it, per-pass ratios do not.
    measure, calls = stub_measure({"ref": [1000, 500, 1000], "fast": [1200, 600, 1200], "slow": [800, 400, 900]})
    rows = relative_throughput(builds("ref", "fast", "slow"), "cpu", passes=3, batch_size=64, steps=4,
                               channels_last=False, measure=measure)
    assert [r.name for r in rows] == ["ref", "fast", "slow"]
    ref, fast, slow = rows
    assert ref.ratios == (1.0, 1.0, 1.0) and not ref.is_reading
    assert fast.ratios == pytest.approx((1.2, 1.2, 1.2)) and fast.ratio == pytest.approx(1.2)
    assert fast.is_reading and fast.images_per_s == 1200
    assert slow.ratios == pytest.approx((0.8, 0.8, 0.9))
    assert (slow.ratio, slow.low, slow.high) == pytest.approx((0.8, 0.8, 0.9))
    assert slow.is_reading and slow.images_per_s == 800
    # interleaved: every pass times every model once, in order, with the settings passed on
    assert [c[0] for c in calls] == ["ref", "fast", "slow"] * 3
    assert {c[1:] for c in calls} == {("cpu", 64, False, 4)}


def test_a_range_that_includes_one_is_not_a_reading():
    measure, _ = stub_measure({"ref": [1000, 1000, 1000], "noisy": [1100, 950, 1300]})
    ref, noisy = relative_throughput(builds("ref", "noisy"), "cpu", passes=3, measure=measure)
    assert (noisy.low, noisy.ratio, noisy.high) == pytest.approx((0.95, 1.1, 1.3))
    assert not noisy.is_reading
    assert RelativeSpeed("x", 1.0, (0.7, 0.99)).is_reading
    assert not RelativeSpeed("x", 1.0, (0.7, 1.0)).is_reading


def test_relative_throughput_takes_a_named_reference_and_builds_a_fresh_model_each_time():
    built = itertools.count()

    def build():
        next(built)
        return Named("b")

    measure, _ = stub_measure({"a": [300, 300], "b": [600, 900]})
    rows = relative_throughput({"a": lambda: Named("a"), "b": build}, "cpu", reference="b", passes=2, measure=measure)
    assert rows[0].ratios == pytest.approx((0.5, 1 / 3)) and rows[1].ratios == (1.0, 1.0)
    assert next(built) == 2  # one fresh model per pass


@pytest.mark.parametrize("kwargs, message", [
    (dict(builds={}), "no models"),
    (dict(passes=0), "passes must be at least 1"),
    (dict(reference="nope"), "reference 'nope' is not among the models"),
])
def test_relative_throughput_rejects_bad_input_with_a_clear_message(kwargs, message):
    args = dict(builds=builds("a"), device="cpu", measure=lambda *a, **k: 1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        relative_throughput(**args)


def test_relative_throughput_times_training_steps_by_default(monkeypatch):
    """Without ``measure`` each model's speed is ``train_step_throughput``'s, called with the settings given
    (a stand-in records the calls; the real one then runs once: a finite, positive speed)."""
    from course_utils import benchmark

    measure, calls = stub_measure({"a": [400.0, 100.0], "b": [200.0, 100.0]})
    monkeypatch.setattr(benchmark, "train_step_throughput", measure)
    rows = relative_throughput(builds("a", "b"), "cpu", passes=2, batch_size=4, steps=3, channels_last=False)
    assert calls == [("a", "cpu", 4, False, 3), ("b", "cpu", 4, False, 3)] * 2
    assert [(r.name, r.ratios) for r in rows] == [("a", (1.0, 1.0)), ("b", (0.5, 1.0))]
    monkeypatch.undo()
    speed = train_step_throughput(Named("c"), "cpu", 4, steps=1, warmup=1)
    assert math.isfinite(speed) and speed > 0


def test_pointwise_timings_time_each_shape_both_ways():
    from course_utils.benchmark import pointwise_timings

    rows = pointwise_timings([(8, 16, 4), (16, 8, 2)], "cpu", batch_size=4, repeats=2)
    assert [(r["in_channels"], r["out_channels"], r["size"]) for r in rows] == [(8, 16, 4), (16, 8, 2)]
    for r in rows:
        assert r["conv_ms"] > 0 and r["matmul_ms"] > 0
        assert r["speedup"] == pytest.approx(r["conv_ms"] / r["matmul_ms"])
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        pointwise_timings([(8, 16, 4)], repeats=0)
    for device in ("cuda", "cuda:1", "mps"):   # PointwiseConv2d's matrix product is CPU-only: conv against conv
        with pytest.raises(ValueError, match=r"compares two CPU kernels; on (cuda|mps) both ways would run the same "
                                             r"convolution: use device='cpu'"):
            pointwise_timings([(8, 16, 4)], device)


def test_forward_ms_times_eval_mode_forward_passes_after_a_warm_up_and_returns_the_median(monkeypatch):
    from course_utils import benchmark

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x):
            self.calls.append((self.training, torch.is_grad_enabled()))
            return x

    clock = iter([0.0, 0.001, 1.0, 1.002, 2.0, 2.010, 3.0, 3.004, 4.0, 4.003])   # ms: (1, 2 warm-up) 10, 4, 3
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: next(clock))
    probe = Probe().train()
    assert benchmark.forward_ms(probe, torch.zeros(2, 3), repeats=3, warmup=2) == pytest.approx(4.0)
    assert probe.calls == [(False, False)] * 5 and probe.training       # eval, no autograd; mode restored
    with pytest.raises(ValueError, match="repeats must be at least 1 and warmup at least 0, got 0 and 3"):
        benchmark.forward_ms(probe, torch.zeros(2, 3), repeats=0)


def test_torch_threads_sets_the_count_for_the_block_and_restores_it_even_after_an_error():
    from course_utils.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(KeyboardInterrupt):
        with torch_threads(before + 1):
            raise KeyboardInterrupt                     # a stopped cell
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        with torch_threads(0):
            pass


def test_the_benchmark_times_its_cuda_rows_with_the_autotuner_training_uses(monkeypatch):
    """On a (simulated) CUDA device every training-step row is timed with cuDNN's autotuner on, as
    training runs (it used to come on only with the time-to-accuracy run after the rows), and the record
    says so, and whether the fp32 rows may use TF32."""
    # experiment imported before mixed_precision is patched: run_benchmark imports it, and a first import
    # under the patch would bind the simulated fp16 for every later test in this process
    from course_utils import benchmark, experiment, runtime  # noqa: F401

    class Data:
        def subset(self, *a):
            return self

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(runtime, "device_name", lambda device: "a simulated T4")
    monkeypatch.setattr(runtime, "mixed_precision", lambda device, amp=True: torch.float16)
    monkeypatch.setattr(benchmark, "loader_throughput", lambda *a, **k: 1000.0)
    seen = []
    monkeypatch.setattr(benchmark, "train_step_throughput",
                        lambda model, device, batch, amp, cl, steps: seen.append(torch.backends.cudnn.benchmark) or 500.0)
    record = benchmark.run_benchmark(torch.device("cuda"), quick=True, data=Data(), log=None)
    assert seen and all(seen) and record["cudnn_benchmark"] is True
    assert record["cudnn_allow_tf32"] is bool(torch.backends.cudnn.allow_tf32)
    assert {r["amp"] for r in record["train_step"]} == {"fp32", "fp16"}          # no bf16 row on a T4


def test_a_relative_timing_turns_the_autotuner_on_as_training_does_whatever_ran_before(monkeypatch):
    """Notebook 09's speed comparison on a (simulated) CUDA device: timed with cuDNN's autotuner on even in a
    kernel where no training cell has run yet, so its ratios do not depend on what ran before."""
    from course_utils import benchmark, runtime

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    turned = []
    monkeypatch.setattr(runtime, "use_cudnn_autotuner", lambda device: turned.append(str(device)) or True)
    monkeypatch.setattr(runtime, "synchronize", lambda device: None)
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: self)          # no GPU here: the model stays put
    real_randn, real_randint = torch.randn, torch.randint
    monkeypatch.setattr(torch, "randn", lambda *a, device=None, **k: real_randn(*a, **k))
    monkeypatch.setattr(torch, "randint", lambda *a, device=None, **k: real_randint(*a, **k))
    from course_utils import training
    monkeypatch.setattr(training, "training_step", lambda *a, **k: None)
    benchmark.relative_throughput({"a": lambda: nn.Linear(2, 2)}, "cuda", passes=1, steps=1)
    assert turned == ["cuda"]


def test_a_benchmark_stopped_in_its_time_to_accuracy_run_is_not_complete(monkeypatch):
    """Ctrl-C during the (simulated) CUDA time-to-85% run: training keeps its epochs and returns, and the
    benchmark must not call that a finished record (it marked it complete and exited 0)."""
    from types import SimpleNamespace

    from course_utils import benchmark, experiment, runtime
    from course_utils.config import TrainConfig
    from course_utils.training import History

    class Data:
        def subset(self, *a):
            return self

    monkeypatch.setattr(runtime, "device_name", lambda device: "a simulated A100")
    monkeypatch.setattr(runtime, "mixed_precision", lambda device, amp=True: torch.bfloat16)
    monkeypatch.setattr(runtime, "use_cudnn_autotuner", lambda device: True)
    monkeypatch.setattr(benchmark, "loader_throughput", lambda *a, **k: 1000.0)
    monkeypatch.setattr(benchmark, "train_step_throughput", lambda *a, **k: 500.0)
    stopped = History(epoch=[1, 2], test_acc=[60.0, 70.0], seconds=[5.0, 5.0])
    stopped.interrupted = True
    monkeypatch.setattr(experiment, "run_training", lambda *a, **k: SimpleNamespace(history=stopped, config=TrainConfig.fast()))
    saved = []
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark(torch.device("cuda"), quick=False, data=Data(), log=None,
                                save=lambda r: saved.append(json.loads(json.dumps(r))))
    assert saved[0]["pipeline"] == [] and saved[0]["complete"] is False     # written before the first row
    last = saved[-1]
    assert last["complete"] is False and last["time_to_accuracy"]["interrupted"] is True
    assert last["time_to_accuracy"]["reached_at_epoch"] is None and len(last["train_step"]) > 0


def test_a_benchmark_without_its_time_to_accuracy_run_trains_nothing_and_says_why(monkeypatch):
    """`bench --no-time-to-accuracy` (what .ci/gpu-checks runs, right after its own fast run) measures the
    throughput rows on (simulated) CUDA and never starts the fast recipe's training run."""
    from course_utils import benchmark, experiment, runtime
    from course_utils.__main__ import build_parser

    class Data:
        def subset(self, *a):
            return self

    def must_not_train(*a, **k):
        raise AssertionError("the time-to-85% run was started")

    monkeypatch.setattr(runtime, "device_name", lambda device: "a simulated A100")
    monkeypatch.setattr(runtime, "mixed_precision", lambda device, amp=True: torch.bfloat16)
    monkeypatch.setattr(runtime, "use_cudnn_autotuner", lambda device: True)
    monkeypatch.setattr(benchmark, "loader_throughput", lambda *a, **k: 1000.0)
    monkeypatch.setattr(benchmark, "train_step_throughput", lambda *a, **k: 500.0)
    monkeypatch.setattr(experiment, "run_training", must_not_train)
    lines = []
    record = benchmark.run_benchmark(torch.device("cuda"), quick=False, data=Data(), log=lines.append,
                                     time_to_target=False)
    assert record["complete"] is True and record["time_to_accuracy"] is None and record["train_step"]
    assert record["time_to_accuracy_skipped"] == "--no-time-to-accuracy"       # the record says why, too
    assert lines[-1] == "time to accuracy: skipped (--no-time-to-accuracy)"
    assert build_parser().parse_args(["bench", "--no-time-to-accuracy"]).time_to_target is False
    assert build_parser().parse_args(["bench"]).time_to_target is True


def test_the_loader_is_timed_from_its_first_pass_once_started_and_counts_every_image(monkeypatch):
    """The start-up batch comes before the clock; the timed batches continue that pass (a new pass would
    start its workers again on a CPU, inside the timing), and the next pass only when it runs out."""
    from course_utils import benchmark, data

    passes = []

    class Loader:
        def __iter__(self):
            passes.append(0)
            for _ in range(3):
                passes[-1] += 1
                yield torch.zeros(4, 3, 2, 2), None

    monkeypatch.setattr(data, "make_loaders", lambda *a, **k: (Loader(), None))
    clock = iter(range(100))
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: float(next(clock)))
    rate = benchmark.loader_throughput(object(), 4, 2, max_batches=4)
    assert passes == [3, 2]                 # 1 start-up batch + 2 timed from the first pass, then 2 from a second
    assert rate == 4 * 4 / 1.0              # 16 images timed: the stubbed clock read once at start, once at the end


def test_compile_speedup_times_a_fresh_eager_and_compiled_model_per_size_and_pass(monkeypatch):
    from course_utils import benchmark

    calls = []

    class Compiled:
        pass

    def measure(model, device, batch, channels_last, steps, size, warmup=3):
        calls.append((type(model).__name__, size, steps))
        return {"CifarNet": 1000.0, "Compiled": 1500.0}[type(model).__name__] * (32 / size) ** 2

    clock = iter(range(0, 1000, 5))
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: float(next(clock)))
    rows = benchmark.compile_speedup("cifarnet", sizes=(24, 32), steps=7, passes=2, measure=measure,
                                     compile_fn=lambda m: Compiled())
    assert [(r["pass"], r["size"]) for r in rows] == [(1, 24), (1, 32), (2, 24), (2, 32)]
    assert rows[1]["eager_images_per_s"] == 1000.0 and rows[1]["compiled_images_per_s"] == 1500.0
    assert all(r["compile_seconds"] == 5.0 for r in rows)          # the compiled model's first step, on the clock
    # per size: the eager model timed, then the compiled one warmed up (one step) and timed
    assert calls[:3] == [("CifarNet", 24, 7), ("Compiled", 24, 1), ("Compiled", 24, 7)] and len(calls) == 12


def test_train_step_throughput_trains_on_the_size_asked_for(monkeypatch):
    seen = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    train_step_throughput(model, "cpu", 4, steps=1, warmup=0, size=24)
    assert seen == [(24, 24)]


class _Events:
    """Stands in for a GPU's clock and its queue: records, in order, each read of the clock ("clock"),
    each wait for the device ("sync") and each unit of work queued, so a test can check that every
    clock read that ends a timing comes after a wait for the work it times (the GPU runs asynchronously:
    reading the clock before the wait times how fast work was queued, not done)."""

    def __init__(self):
        self.log, self._now = [], 0.0

    def perf_counter(self):
        self.log.append("clock")
        self._now += 1.0
        return self._now

    def sync(self, device=None):
        self.log.append("sync")

    def work(self, name):
        def queued(*args, **kwargs):
            self.log.append(name)
        return queued


def _simulate_cuda_tensors(monkeypatch):
    """No GPU here: tensors and models asked for 'cuda' stay on the CPU, so the device path's code runs."""
    real_randn, real_randint = torch.randn, torch.randint
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: self)
    monkeypatch.setattr(torch, "randn", lambda *a, device=None, **k: real_randn(*a, **k))
    monkeypatch.setattr(torch, "randint", lambda *a, device=None, **k: real_randint(*a, **k))


def test_a_training_step_timing_waits_for_the_device_before_each_clock_read(monkeypatch):
    """``train_step_throughput`` on (simulated) CUDA: warm-up, wait, clock, the timed steps, wait, clock,
    so the GPU's queue is empty when the clock starts and done when it stops."""
    from types import SimpleNamespace

    from course_utils import benchmark, runtime, training

    events = _Events()
    _simulate_cuda_tensors(monkeypatch)
    monkeypatch.setattr(benchmark, "time", SimpleNamespace(perf_counter=events.perf_counter))
    monkeypatch.setattr(runtime, "synchronize", events.sync)
    monkeypatch.setattr(runtime, "use_cudnn_autotuner", lambda device: True)
    monkeypatch.setattr(training, "training_step", events.work("step"))
    rate = benchmark.train_step_throughput(nn.Linear(2, 2), torch.device("cuda"), batch_size=8, steps=3, warmup=2)
    assert events.log == ["step"] * 2 + ["sync", "clock"] + ["step"] * 3 + ["sync", "clock"]
    assert rate == 8 * 3 / 1.0   # the clock moved by one between its two reads


def test_a_forward_timing_waits_for_the_device_before_each_clock_read(monkeypatch):
    """``forward_ms``: each timed call is wait, clock, forward, wait, clock; the warm-up's end is not
    read, and every timed call counts 1 s on the simulated clock."""
    from types import SimpleNamespace

    from course_utils import benchmark, runtime

    events = _Events()
    monkeypatch.setattr(benchmark, "time", SimpleNamespace(perf_counter=events.perf_counter))
    monkeypatch.setattr(runtime, "synchronize", events.sync)

    class Forward(nn.Module):
        def forward(self, x):
            events.log.append("forward")
            return x

    assert benchmark.forward_ms(Forward(), torch.zeros(1), repeats=2, warmup=1) == 1000.0
    warm_up = ["sync", "clock", "forward", "sync"]   # its end is not read
    assert events.log == warm_up + ["sync", "clock", "forward", "sync", "clock"] * 2


@pytest.mark.parametrize("device", ["mps", "cuda:1"])
def test_the_benchmark_on_mps_times_one_layout_and_on_cuda_n_loads_inside_that_cards_context(monkeypatch, device):
    """Simulated devices (none here). On MPS, batches always go in contiguous (``runtime.channels_last_on``),
    so the benchmark times one fp32 row per model and batch, never a 'channels_last=True' row that would time
    the contiguous layout again under another label. On ``cuda:1`` every loader row runs with that card made
    current (its pin-memory thread pins on the current card: card 0 otherwise)."""
    from conftest import CardContext

    from course_utils import benchmark, experiment, runtime  # noqa: F401  (imported before the patches below)

    class Data:
        def subset(self, *a):
            return self

    card, loads = CardContext(), []
    monkeypatch.setattr(runtime, "cuda_device_context", card)
    monkeypatch.setattr(runtime, "device_name", lambda d: f"a simulated {d}")
    monkeypatch.setattr(runtime, "mixed_precision", lambda d, amp=True: torch.bfloat16 if "cuda" in str(d) else None)
    monkeypatch.setattr(runtime, "use_cudnn_autotuner", lambda d: torch.device(d).type == "cuda")
    monkeypatch.setattr(benchmark, "loader_throughput", lambda *a, **k: loads.append(list(card.current)) or 1000.0)
    monkeypatch.setattr(benchmark, "train_step_throughput", lambda model, d, batch, amp, cl, steps: 500.0)
    record = benchmark.run_benchmark(torch.device(device), quick=True, data=Data(), log=None)
    rows = {(r["model"], r["amp"], r["channels_last"]) for r in record["train_step"]}
    models = set(benchmark.BENCH_MODELS)
    assert loads and record["complete"]
    if device == "mps":
        assert rows == {(m, "fp32", False) for m in models}
        assert len(record["train_step"]) == len(models)   # batch 128 only (quick), one row per model
    else:
        assert rows == {(m, amp, cl) for m in models for amp, cl in
                        [("fp32", False), ("fp32", True), ("bf16", True), ("fp16", True)]}
        assert loads == [[torch.device("cuda:1")]] * len(loads)
