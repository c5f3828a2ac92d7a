"""Mixed precision and memory layout (suite/precision.py) through the backends' step verbs, in
this process on the CPU: the loss scale never reaches LARS, fp32 is the plain step, and bad
combinations are refused in one line naming the setting."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from larsbench.backends.base import Backend
from larsbench.backends.ddp import DDPBackend
from larsbench.backends.deepspeed import DeepSpeedBackend, engine_config
from larsbench.backends.horovod import HorovodBackend
from larsbench.core import precision as precision_module
from larsbench.main import build_parser
from larsbench.core.spec import RUN_FIELDS, RunSpec
from larsbench.suite.config import build_spec
from larsbench.core.errors import ConfigError
from larsbench.core.precision import Precision, autocast_supported
from larsbench.loop.trainer import train_step
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import build_optimizer

CPU = torch.device("cpu")
# LARS at the suite's defaults, lr 2.0 unscaled, as the run builds it
LARS_SPEC = RunSpec(optimizer="lars", lr=2.0, global_batch_size=16)


def lars_for(model: nn.Module) -> torch.optim.Optimizer:
    optimizer, _ = build_optimizer(LARS_SPEC, model)
    return optimizer


def micro_batches(n: int, size: int = 8, pixels: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [
        (torch.randn(size, 3, pixels, pixels, generator=generator), torch.randint(0, 10, (size,), generator=generator))
        for _ in range(n)
    ]


class OneProcess(Backend):
    """The base class's verbs (DDP's backward and step) without a process group."""

    name = "one-process"

    def setup(self, env, device, timeout_sec):
        raise NotImplementedError

    def wrap(self, model, optimizer, *, micro_batch_size, accumulation_steps, precision=None):
        self.accumulation_steps, self.precision = accumulation_steps, precision or self.precision
        return model, optimizer


def plain_backend(precision: Precision, accumulation: int = 1) -> Backend:
    backend = OneProcess()
    backend.wrap(None, None, micro_batch_size=1, accumulation_steps=accumulation, precision=precision)
    return backend


def one_step(precision: Precision, accumulation: int = 2) -> tuple[nn.Module, list[torch.Tensor]]:
    """One optimizer step of tiny_cnn with LARS through ``train_step``; returns the model and
    the update of every tensor (the momentum buffer after the first step)."""
    torch.manual_seed(0)
    model = precision.convert_model(build_model("tiny_cnn", 10))
    optimizer = lars_for(model)
    backend = plain_backend(precision, accumulation)
    train_step(model, optimizer, iter(micro_batches(accumulation)), backend, nn.CrossEntropyLoss(), accumulation, CPU, None)
    updates = [optimizer.state[p]["momentum_buffer"].clone() for g in optimizer.param_groups for p in g["params"]]
    return model, updates


# --------------------------------------------------------------------------- the fp32 step


def test_fp32_is_the_plain_step():
    precision = Precision()
    tensor = torch.randn(2, 3, 4, 4)
    model = nn.Conv2d(3, 3, 3)
    assert precision.scaler is None
    assert precision.convert_input(tensor) is tensor and precision.convert_model(model) is model
    assert precision.scale(tensor) is tensor
    with precision.autocast():
        assert not torch.is_autocast_enabled("cpu")


# --------------------------------------------------------------------------- fp16 loss scaling


def test_scaled_loss_gives_the_same_lars_step_as_the_unscaled_one():
    """The fp16 path's loss scale (2**16) multiplies the loss before backward and is divided out
    of the gradients before LARS: the update equals the fp32 step's (a power-of-two scale is
    exact in fp32). Forward runs in fp32 here, so only the scaling differs."""

    class ScaleOnly(Precision):
        def autocast(self):  # the fp16 scaler without fp16 arithmetic
            return Precision().autocast()

    _, plain = one_step(Precision())
    scaled_precision = ScaleOnly("fp16", "cpu")
    assert scaled_precision.scaler.get_scale() == 2.0**16
    _, scaled = one_step(scaled_precision)
    for want, got in zip(plain, scaled):
        assert_close(got, want, rtol=1e-5, atol=1e-9)
    assert scaled_precision.scaler.get_scale() == 2.0**16  # no inf: the step was taken, scale kept


def test_without_unscaling_lars_would_see_the_scaled_gradient():
    """Sharpness check for the test above: stepping on the scaled gradients (no unscale_) gives
    a very different update, for excluded (bias) tensors by the whole loss scale."""

    class NoUnscale(Precision):
        def autocast(self):
            return Precision().autocast()

        def optimizer_step(self, optimizer):
            optimizer.step()

    _, plain = one_step(Precision())
    _, wrong = one_step(NoUnscale("fp16", "cpu"))
    ratios = [(w.norm() / p.norm()).item() for p, w in zip(plain, wrong)]
    assert max(ratios) > 1000  # bias updates 2**16 times too large


@pytest.mark.skipif(not autocast_supported("cpu", torch.float16), reason="this torch has no fp16 autocast on the CPU")
def test_fp16_autocast_step_is_close_to_the_fp32_step():
    _, plain = one_step(Precision())
    _, half = one_step(Precision("fp16", "cpu"))
    for want, got in zip(plain, half):
        assert ((got - want).norm() / want.norm()).item() < 0.05


def test_a_step_with_infinite_gradients_is_skipped_and_the_scale_lowered():
    torch.manual_seed(0)
    precision = Precision("fp16", "cpu")
    model = build_model("tiny_cnn", 10)
    optimizer = lars_for(model)
    backend = plain_backend(precision)
    before = copy.deepcopy(model.state_dict())
    images, labels = micro_batches(1)[0]
    backend.backward(nn.functional.cross_entropy(model(images), labels))
    next(model.parameters()).grad[0].fill_(float("inf"))
    backend.step(optimizer)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert precision.scaler.get_scale() == 2.0**15
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step all the same


# --------------------------------------------------------------------------- bf16 and layout


def test_bf16_autocast_runs_the_forward_in_bf16_and_keeps_fp32_weights():
    precision = Precision("bf16", "cpu")
    model = build_model("tiny_cnn", 10)
    with precision.autocast():
        logits = model(micro_batches(1)[0][0])
    assert logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert precision.scaler is None  # bf16 has fp32's exponent range: no loss scaling


def test_channels_last_model_and_batches_stay_channels_last_through_a_step():
    model, updates = one_step(Precision(channels_last=True), accumulation=1)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    images = Precision(channels_last=True).convert_input(torch.randn(2, 3, 8, 8))
    assert images.is_contiguous(memory_format=torch.channels_last)
    _, plain = one_step(Precision(), accumulation=1)
    for want, got in zip(plain, updates):
        assert_close(got.contiguous(), want, rtol=1e-4, atol=1e-7)


def test_unwrap_reaches_the_plain_module_inside_torch_compile():
    model = build_model("tiny_cnn", 10)
    compiled = torch.compile(model)  # wrapping only: nothing compiles until the first call
    assert DDPBackend().unwrap(compiled) is model
    assert list(DDPBackend().unwrap(compiled).state_dict()) == list(model.state_dict())


# --------------------------------------------------------------------------- configuration


def spec(**fields):
    base = {"model": "tiny_cnn", "device": "cpu", "world_size": 1, "micro_batch_size": 8}
    return build_spec([("defaults", {**base, **fields})])


def test_defaults_and_fields():
    s = spec()
    assert (s.precision, s.channels_last, s.cudnn_benchmark, s.compile) == ("fp32", False, True, False)
    assert RUN_FIELDS.index("precision") == RUN_FIELDS.index("device") + 1


def test_flags_set_the_new_fields():
    args = build_parser().parse_args(
        ["run", "--precision", "bf16", "--channels-last", "--no-cudnn-benchmark", "--no-compile"]
    )
    overrides = {name: getattr(args, name) for name in RUN_FIELDS if hasattr(args, name)}
    s = build_spec([("defaults", {"model": "tiny_cnn", "device": "cpu"}), ("flags", overrides)])
    assert (s.precision, s.channels_last, s.cudnn_benchmark, s.compile) == ("bf16", True, False, False)


def one_line(info: pytest.ExceptionInfo, key: str) -> str:
    assert info.value.key == key
    assert "\n" not in str(info.value)
    return info.value.message


def test_unknown_precision_names_the_field():
    with pytest.raises(ConfigError) as info:
        spec(precision="fp8")
    assert "fp32" in one_line(info, "defaults.precision")


def test_fp16_on_a_cpu_without_fp16_autocast_is_refused(monkeypatch):
    monkeypatch.setattr("larsbench.backends.base.autocast_supported", lambda device_type, dtype: dtype != torch.float16)
    with pytest.raises(ConfigError) as info:
        spec(precision="fp16")
    message = one_line(info, "defaults.precision")
    assert "fp16" in message and "bf16" in message  # names the fix
    spec(precision="bf16")
    spec(precision="fp16", device="auto")  # may run on a GPU: checked where the rank starts


def test_horovod_refuses_channels_last():
    with pytest.raises(ConfigError) as info:
        HorovodBackend.check_precision("fp32", True, "cpu", {})
    assert "contiguous" in one_line(info, "channels_last")
    HorovodBackend.check_precision("bf16", False, "cpu", {})


def test_channels_last_with_horovod_is_refused_in_the_experiment():
    with pytest.raises(ConfigError) as info:
        spec(backend="horovod", channels_last=True)
    one_line(info, "defaults.channels_last")


@pytest.mark.parametrize("key", ["torch_autocast", "bf16", "fp16", "amp"])
def test_deepspeed_mixed_precision_comes_from_precision_not_its_config(key):
    with pytest.raises(ConfigError) as info:
        spec(backend="deepspeed", backend_config={key: {"enabled": True}})
    assert "precision" in one_line(info, f"defaults.backend_config.{key}")


def test_deepspeed_refuses_a_precision_its_cpu_accelerator_lacks(monkeypatch):
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    monkeypatch.setattr(CPU_Accelerator, "supported_dtypes", lambda self: [torch.float32, torch.bfloat16])
    with pytest.raises(ConfigError) as info:
        DeepSpeedBackend.check_precision("fp16", False, "cpu", {})
    assert "DeepSpeed" in one_line(info, "precision")
    DeepSpeedBackend.check_precision("bf16", False, "cpu", {})
    DeepSpeedBackend.check_precision("fp16", False, "cuda", {})


def test_deepspeed_precision_becomes_the_engines_torch_autocast():
    assert "torch_autocast" not in engine_config(4, 1, 2, None)
    assert engine_config(4, 1, 2, None, "bf16")["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    config = engine_config(4, 1, 2, None, "fp16")
    assert config["torch_autocast"] == {"enabled": True, "dtype": "float16"}
    assert "fp16" not in config and "bf16" not in config  # DeepSpeed's own modes wrap LARS (see the adapter)


def test_deepspeed_keeps_no_scaler_of_ours():
    engine_side = Precision("fp16", "cpu").engine_managed()
    assert engine_side.scaler is None and engine_side.name == "fp16"
    with engine_side.autocast():
        assert not torch.is_autocast_enabled("cpu")  # the engine's forward autocasts


def test_compile_without_a_compiler_is_refused(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(precision_module.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError) as info:
        spec(compile=True)
    assert "C++ compiler" in one_line(info, "defaults.compile")
    spec(compile=True, device="auto")


def test_every_combination_of_the_fast_path_is_valid_for_ddp():
    for precision, channels_last, compile_ in itertools.product(("fp32", "bf16", "fp16"), (False, True), (False, True)):
        if precision == "fp16" and not autocast_supported("cpu", torch.float16):
            continue
        if compile_ and precision_module.compile_toolchain_missing("cpu"):
            continue
        spec(precision=precision, channels_last=channels_last, compile=compile_)
