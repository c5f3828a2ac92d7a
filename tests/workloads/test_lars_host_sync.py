"""LARS.step() never reads a tensor value on the host off the CPU (no GPU synchronisation).

On CPU the default step reads each tensor's lr·λ on the host for the fused kernel, which costs
nothing there; GPUs run the foreach kernels. That path is checked on CPU (``fused=False``) by
making every host read (item, bool, tolist) raise during step(), as is the Triton path
(``fused=True`` on CUDA; interpreted on the CPU in test_lars_triton.py). On a CUDA machine
torch.cuda.set_sync_debug_mode("error") checks the real thing for both GPU paths, the foreach
kernels (the default) and the Triton kernels (skipped elsewhere, with a reason).
"""

from __future__ import annotations

import pytest
import torch

from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def _model_with_grads(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet50", 10).to(device)
    with torch.no_grad():
        model.fc.weight.zero_()  # ‖w‖ = 0: the fallback λ = 1 must not branch on the host either
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    next(model.parameters()).grad.zero_()  # ‖g‖ = 0
    return model


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_step_reads_no_tensor_value_on_the_host(monkeypatch, momentum):
    model = _model_with_grads(torch.device("cpu"))
    opt = LARS(lars_param_groups(model, 5e-4), lr=0.1, momentum=momentum, eps=1e-8, fused=False)

    def refuse(*args, **kwargs):
        raise AssertionError("LARS.step() read a tensor value on the host")

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt.step()  # creates the momentum buffers
    opt.step()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: checks with torch.cuda.set_sync_debug_mode that LARS.step() never synchronises",
)
@pytest.mark.parametrize("momentum", [0.9, 0.0])
@pytest.mark.parametrize("fused", [None, True], ids=["foreach", "triton"])
def test_step_does_not_synchronise_cuda(momentum, fused):
    model = _model_with_grads(torch.device("cuda"))
    opt = LARS(lars_param_groups(model, 5e-4), lr=0.1, momentum=momentum, eps=1e-8, fused=fused)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        opt.step()  # creates the momentum buffers
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert all(torch.isfinite(p).all() for p in model.parameters())
