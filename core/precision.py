"""How the training step computes: mixed precision (autocast, loss scaling) and memory layout.

One small object that the loop and the backend adapters share, so that neither branches on the
other (the shape of Lightning Fabric's precision plugins):

- ``fp32``: nothing changes; the step is exactly the plain one.
- ``bf16``: forward and loss under ``torch.autocast(dtype=bfloat16)`` on the run's device;
  weights, gradients and the optimizer stay fp32. bf16 has fp32's exponent range: no scaling.
- ``fp16``: forward and loss under ``torch.autocast(dtype=float16)`` and a
  ``torch.amp.GradScaler``: the loss is multiplied by the scale before backward, and the
  gradients are unscaled *before* the optimizer step, so LARS's trust ratios ‖w‖/‖g‖ see the
  true gradient. A step whose gradients hold inf/NaN is skipped and the scale lowered.
- ``channels_last``: model weights and input batches in ``torch.channels_last`` (NHWC), the
  layout tensor cores' convolutions prefer.

A backend whose library does mixed precision itself (DeepSpeed's ``fp16``/``bf16`` modes) uses
``engine_managed()``: no autocast and no scaler here; the engine casts and scales.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings

import torch

from larsbench.core.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast dtype, gradient scaler and memory layout of one run's training step.

    Args:
        name: ``fp32``, ``bf16`` or ``fp16`` (default ``fp32``).
        device_type: the run's device type, ``cpu`` or ``cuda`` (default ``cpu``).
        channels_last: keep weights and inputs in ``torch.channels_last`` (default False).
        engine: the backend's engine does the casting and loss scaling (default False).
    """

    def __init__(self, name: str = "fp32", device_type: str = "cpu", *, channels_last: bool = False, engine: bool = False) -> None:
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        self.name, self.device_type, self.channels_last, self.engine = name, device_type, channels_last, engine
        self.dtype: torch.dtype | None = DTYPES.get(name)
        if self.dtype is not None and not engine and not autocast_supported(device_type, self.dtype):
            raise ConfigError("precision", unsupported_message(name, device_type))
        self.scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler(device_type) if name == "fp16" and not engine else None
        )

    def engine_managed(self) -> Precision:
        """The same settings, with casting and loss scaling left to the backend's engine."""
        return Precision(self.name, self.device_type, channels_last=self.channels_last, engine=True)

    def __repr__(self) -> str:
        extra = ", channels_last" if self.channels_last else ""
        return f"Precision({self.name!r}, {self.device_type!r}{extra}{', engine' if self.engine else ''})"

    # -- checkpointing: the fp16 loss scale resumes where it was ------------------------------
    def state_dict(self) -> dict | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    # -- the step ----------------------------------------------------------------------------
    def convert_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in the step's memory layout (in place, as ``Module.to`` is)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def convert_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward and loss."""
        if self.dtype is None or self.engine:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call backward on (multiplied by the loss scale under fp16)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` on true gradients: unscaled first, skipped on inf/NaN."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)  # before step: LARS's norms must see the true gradient
        self.scaler.step(optimizer)  # skips the step when unscale_ found inf/NaN
        self.scaler.update()


def autocast_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this torch runs autocast with ``dtype`` on ``device_type`` (older CPU builds
    only warn and disable autocast for float16, which would silently train in fp32)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with torch.autocast(device_type, dtype=dtype):
                return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == dtype
    except (RuntimeError, UserWarning):
        return False


def unsupported_message(name: str, device_type: str) -> str:
    return f"{name} autocast is not supported on {device_type} by torch {torch.__version__}; use bf16 or fp32 there, or run on cuda"


def compile_toolchain_missing(device_type: str) -> str | None:
    """Why ``torch.compile`` cannot build kernels here (None when it can). Inductor writes C++
    for the CPU and needs a compiler; on CUDA it writes Triton kernels."""
    if device_type == "cpu":
        compiler = os.environ.get("CXX") or next((c for c in ("g++", "clang++", "c++") if shutil.which(c)), None)
        if compiler is None or shutil.which(compiler) is None:
            return "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; install one or drop compile"
    elif device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on CUDA needs triton (pip install triton); install it or drop compile"
    return None
