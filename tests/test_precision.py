"""Mixed precision by capability, with the CUDA queries monkeypatched (no GPU runs these tests):
bf16 only where the card has it natively, fp16 with a GradScaler on older cards, fp32 elsewhere."""
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_utils import training
from course_utils.runtime import mixed_precision, needs_grad_scaler, precision_name

CARDS = {  # name: compute capability
    "P100": (6, 0), "GTX 1080": (6, 1), "T4": (7, 5), "V100": (7, 0), "A100": (8, 0), "RTX 4090": (8, 9), "H100": (9, 0),
}


@pytest.fixture
def card(monkeypatch):
    def use(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        # what the old code asked: it counts emulation, so it says True on a T4 too
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return use


@pytest.mark.parametrize("name, expected", [("P100", torch.float16), ("GTX 1080", torch.float16), ("T4", torch.float16),
                                            ("V100", torch.float16), ("A100", torch.bfloat16),
                                            ("RTX 4090", torch.bfloat16), ("H100", torch.bfloat16)])
def test_dtype_and_scaler_per_card(card, name, expected):
    """bf16 from 8.0 (native), fp16 with a scaler on every older card."""
    card(CARDS[name])
    dtype = mixed_precision("cuda")
    assert dtype == expected
    assert needs_grad_scaler(dtype) == (expected == torch.float16)
    assert precision_name(dtype) == ("bf16" if expected == torch.bfloat16 else "fp16 + GradScaler")


@pytest.mark.parametrize("current", [0, 1])
def test_a_machine_with_two_cards_asks_the_card_it_trains_on(monkeypatch, current):
    """A T4 as cuda:0 beside an A100 as cuda:1: each device asks its own card; "cuda" means the current one."""
    cards = {0: CARDS["T4"], 1: CARDS["A100"]}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: cards[index])   # no default: say which
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    assert mixed_precision("cuda:0") == torch.float16 and mixed_precision("cuda:1") == torch.bfloat16
    assert mixed_precision("cuda") == (torch.float16, torch.bfloat16)[current]
    assert mixed_precision(torch.device("cuda", 1)) == torch.bfloat16


def test_cpu_and_mps_train_in_fp32_unless_asked(card):
    card(CARDS["H100"])  # even with a capable GPU in the machine
    assert mixed_precision("cpu") is None and mixed_precision("mps") is None
    assert mixed_precision("cuda", amp=False) is None
    assert not needs_grad_scaler(None) and precision_name(None) == "fp32"


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")   # torch 2.4: "User provided device_type of .cuda., but CUDA is not available"
def test_autocast_follows_the_decision(card):
    card(CARDS["T4"])
    ctx = training.autocast_for(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16
    card(CARDS["A100"])
    assert training.autocast_for(torch.device("cuda")).fast_dtype == torch.bfloat16
    assert not isinstance(training.autocast_for(torch.device("cpu")), torch.autocast)


def test_cpu_autocast_runs_through_the_same_path():
    """The CUDA branch's code path, exercised on the CPU: an explicit bf16 autocast in training_step gives
    bf16 activations and a finite loss, and evaluate and predict (fp32 here: the CPU's decision is no
    autocast) agree on the model it trained. Their autocast on CUDA is
    test_evaluate_and_predict_autocast_when_the_device_calls_for_it."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cpu = torch.device("cpu")
    with training.autocast_for(cpu, True, torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
    loss, logits = training.training_step(model, x, y, opt, nn.functional.cross_entropy, cpu, True, None, torch.bfloat16)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    plain_loss, plain_acc = training.evaluate(model, loader, cpu)
    preds, labels = training.predict(model, loader, cpu)
    assert preds.shape == labels.shape == (16,) and (labels == y.numpy()).all()
    assert plain_acc == pytest.approx(100 * (preds == labels).mean()) and math.isfinite(plain_loss)


@pytest.mark.parametrize("device, expected", [("cuda", True), ("cuda:1", True), ("mps", False), ("cpu", False)])
def test_asynchronous_copies_only_on_cuda(device, expected):
    assert training.non_blocking(torch.device(device)) is expected


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # only built here, never iterated
@pytest.mark.parametrize("device, workers, pinned, persistent_eval", [
    ("cuda", 8, True, True), ("mps", 2, False, False), ("cpu", 0, False, False)])
def test_loader_settings_per_device(image_folder, monkeypatch, device, workers, pinned, persistent_eval):
    from course_utils.data import load_cifar10, make_loaders
    from course_utils.runtime import loader_settings, loader_workers

    monkeypatch.setattr("course_utils.runtime.usable_cores", lambda: 16)
    assert loader_workers(torch.device(device)) == workers
    how = loader_settings(device, workers)
    assert how["pin_memory"] is pinned and how["non_blocking"] is pinned and how["persistent_eval"] is persistent_eval
    assert how["persistent_train"] is (workers > 0)   # on CUDA and MPS: kept for the run
    assert loader_settings("cpu", 2)["persistent_train"] is False   # a CPU's workers start each epoch anew
    train, test = make_loaders(load_cifar10(image_folder, download=False), 8, workers, device=device)
    assert train.pin_memory is pinned and test.pin_memory is pinned
    assert train.persistent_workers is (workers > 0) and test.persistent_workers is persistent_eval
    # evaluation loads in the training process except on CUDA: on MPS a pass would spawn its workers again
    assert train.num_workers == workers and test.num_workers == (workers if device == "cuda" else 0)
    _, test = make_loaders(load_cifar10(image_folder, download=False), 8, 1, device=device)   # --workers 1
    assert test.num_workers == (1 if device == "cuda" else 0) and how["eval_workers"] == (workers if device == "cuda" else 0)
    assert loader_workers(torch.device(device), requested=1) == 1


def test_evaluate_and_predict_autocast_when_the_device_calls_for_it(monkeypatch):
    """evaluate and predict on a device for which mixed_precision says bf16 (the CPU stands in for a
    CUDA card here, through the CPU autocast path): the model runs in bf16 inside them, and the
    numbers agree with fp32 to bf16's precision."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10)).eval()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    cpu = torch.device("cpu")
    fp32_loss, _ = training.evaluate(model, loader, cpu)
    fp32_preds, _ = training.predict(model, loader, cpu)
    dtypes = []
    model.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    monkeypatch.setattr(training, "mixed_precision", lambda device, enabled=True: torch.bfloat16)
    bf16_loss, _ = training.evaluate(model, loader, cpu)
    bf16_preds, labels = training.predict(model, loader, cpu)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert bf16_loss == pytest.approx(fp32_loss, rel=2e-2)
    assert (bf16_preds == fp32_preds).mean() >= 0.9 and (labels == y.numpy()).all()
    assert training.evaluate(model, loader, cpu, amp=False)[0] == pytest.approx(fp32_loss)  # amp off: fp32 again
    assert set(dtypes[-len(loader):]) == {torch.float32}


@pytest.mark.parametrize("device, waits_on", [("cuda", "cuda"), ("cuda:0", "cuda"), ("mps", "mps"), ("cpu", None)])
def test_timers_wait_for_cuda_and_mps_alike(monkeypatch, device, waits_on):
    """The benchmark's and fit's timers stop only after the device's queued work: CUDA and MPS both
    run asynchronously, so both are synchronised (simulated: no accelerator here)."""
    from course_utils import runtime

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append("cuda"))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    runtime.synchronize(device)
    assert calls == ([waits_on] if waits_on else [])


def test_on_mps_batches_go_in_contiguous_and_the_model_stays_as_built():
    """MPS's BatchNorm backward is wrong for channels-last input (pytorch/pytorch#175189): there the layout
    is contiguous whatever the recipe asks, including the loaders' batches, which are channels-last in memory
    (a permuted view of HWC images); on CUDA and the CPU the recipe's channels_last holds."""
    from course_utils.runtime import channels_last_on
    from course_utils.training import _layout

    assert channels_last_on("mps", True) is False and channels_last_on("cuda:1", True) is True
    assert channels_last_on("cpu", True) is True and channels_last_on("cuda", False) is False
    batch = torch.zeros(4, 32, 32, 3).permute(0, 3, 1, 2)          # what unit_tensor hands the loader
    assert batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()
    assert _layout(batch, "mps", True).is_contiguous() and _layout(batch, "mps", False).is_contiguous()
    assert _layout(batch, "cpu", True).is_contiguous(memory_format=torch.channels_last)
    assert _layout(batch, "cuda", False) is batch                    # asked for nothing: left as it is


def test_describe_says_the_layout_mps_runs_in(monkeypatch):
    """On MPS the recipe's channels_last is not used (runtime.channels_last_on): describe says what runs."""
    from course_utils import runtime
    from course_utils.config import TrainConfig

    monkeypatch.setattr(runtime, "get_device", lambda device=None: torch.device(device or "cpu"))
    assert ", channels_last" in TrainConfig().describe("cpu")
    on_mps = TrainConfig().describe("mps")
    assert "on mps, contiguous (channels_last is off on MPS)" in on_mps and ", channels_last\n" not in on_mps
