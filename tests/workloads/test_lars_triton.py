"""LARS's Triton step (workloads/lars_triton.py, ``LARS(fused=True)`` on CUDA) against the
references of test_lars.py.

On the CPU the kernels run under Triton's interpreter, with blocks so small that tensors span
several programs, a tensor's partial sums take several loop rounds and a group spans several
cache-sized chunks: the same layout code a GPU runs, at toy sizes. Triton decides at import
whether it interprets (``TRITON_INTERPRET=1``), so those tests run in a child process started
by ``test_the_kernels_under_the_triton_interpreter``. On a CUDA machine the compiled kernels
are checked against the foreach path on ResNet-50.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from larsbench.workloads import lars
from larsbench.workloads.lars import LARS, lars_param_groups

from .test_lars import ReferenceLARS
from .test_lars_host_sync import HOST_READS

lars_triton = pytest.importorskip("larsbench.workloads.lars_triton", reason="needs Triton (it ships with CUDA builds of torch)")

HYPER = dict(momentum=0.9, trust_coefficient=0.02, eps=0.05)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the child process of test_the_kernels_under_the_triton_interpreter"
)


@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_the_kernels_under_the_triton_interpreter():
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu", __file__],
        env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]
    ran = re.search(r"(\d+) passed", child.stdout)
    assert ran and int(ran.group(1)) == 4, child.stdout[-2000:]


@pytest.fixture
def triton_on_cpu(monkeypatch):
    """``fused=True`` on CPU tensors runs the Triton kernels, interpreted, in small blocks."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(lars.FUSED_KERNELS, "cpu", lars.FUSED_KERNELS["cuda"])
    monkeypatch.setattr(lars_triton, "BLOCK", 512)
    monkeypatch.setattr(lars_triton, "PARTIALS_BLOCK", 4)
    monkeypatch.setattr(lars_triton, "CHUNK_BYTES", 4096)
    launches: list[str] = []
    real = lars_triton.step
    monkeypatch.setattr(lars_triton, "step", lambda *a: launches.append("step") or real(*a))
    return launches


def small_model() -> nn.Module:
    """Convs with and without bias, BatchNorm, two linear layers; weights of 432 to 4,608
    elements (1 to 9 programs of 512)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, bias=False), nn.BatchNorm2d(32),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10), nn.Linear(10, 5),
    )  # fmt: skip


def set_grads(model: nn.Module, generator: torch.Generator, step: int) -> None:
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.grad = torch.randn(p.shape, generator=generator) * (1 + step) * 10.0 ** (i % 3 - 1)
    params[0].grad.zero_()  # a conv weight with ‖g‖ = 0 → λ = 1
    params[2].grad = None  # a BatchNorm weight without a gradient is left alone


@interpreted
def test_steps_match_the_per_parameter_reference(triton_on_cpu):
    model = small_model()
    with torch.no_grad():
        model[-1].weight.zero_()  # ‖w‖ = 0 → λ = 1
    ref_model = copy.deepcopy(model)
    beta = 1e-3
    opt = LARS(lars_param_groups(model, beta), lr=1.0, fused=True, **HYPER)
    ref = ReferenceLARS(lars_param_groups(ref_model, beta))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    start = [p.detach().clone() for p in model.parameters()]
    for step, lr in enumerate([1.0, 4.0, 0.5]):
        set_grads(model, gen_a, step)
        set_grads(ref_model, gen_b, step)
        before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        ref.step(lr, HYPER["momentum"], HYPER["trust_coefficient"], HYPER["eps"])
        for p, g in zip(model.parameters(), before):
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)  # gradients untouched
    for i, (p, r) in enumerate(zip(model.parameters(), ref_model.parameters())):
        scale = r.detach().abs().max().item()
        assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-6 * scale, msg=f"parameter {i}")
        if r in ref.buffers:
            v_ref = ref.buffers[r]
            assert_close(opt.state[p]["momentum_buffer"], v_ref, rtol=1e-5, atol=1e-6 * v_ref.abs().max().item())
    moved = [not torch.equal(p.detach(), s) for p, s in zip(model.parameters(), start)]
    assert moved == [i != 2 for i in range(len(moved))]
    assert triton_on_cpu == ["step"] * 6  # both groups, every step, ran the Triton path
    # the layout was exercised: several chunks, and a tensor with more programs than one
    # round of partial sums takes
    layouts = [layout for layout, _, _ in lars_triton._TABLES.entries.values()]
    assert max(len(layout.chunks) for layout in layouts) > 1
    assert max(int(layout.tensor_progs.max()) for layout in layouts) > lars_triton.PARTIALS_BLOCK


@interpreted
def test_hand_computed_step_statistics_momentum_zero_and_excluded_group(triton_on_cpu):
    # ‖w‖ = 5, ‖g‖ = 1, β = 0.1, η = 0.01  →  λ = 1/30;  v = 0.5/30·[0.9, 1.2] = [0.015, 0.02]
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, fused=True)
    w.grad = torch.tensor([0.6, 0.8])
    opt.step()
    assert_close(w.detach(), torch.tensor([2.985, 3.98]))
    assert_close(opt.state[w]["momentum_buffer"], torch.tensor([0.015, 0.02]))
    (stats,) = opt.last_stats
    assert_close(torch.stack([stats.w_norm[0], stats.g_norm[0], stats.trust[0]]), torch.tensor([5.0, 1.0, 1 / 30]))
    # without momentum: w ← w − lr·λ·(g + β·w), no buffer
    w0 = nn.Parameter(torch.tensor([3.0, 4.0]))
    plain = LARS([w0], lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.01, fused=True)
    w0.grad = torch.tensor([0.6, 0.8])
    plain.step()
    assert_close(w0.detach(), torch.tensor([2.985, 3.98]))
    assert not plain.state
    # excluded: v ← m·v + lr·g, no trust ratio, no weight decay, no statistics
    b = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    excluded = LARS([{"params": [b], "lars_exclude": True, "weight_decay": 0.3}], lr=0.5, momentum=0.9, fused=True)
    for _ in range(2):
        b.grad = torch.tensor([0.2, 0.4, -1.0])
        excluded.step()
    assert_close(b.detach(), torch.tensor([1.0, -2.0, 0.5]) - 0.5 * torch.tensor([0.2, 0.4, -1.0]) * (1 + 1.9))
    assert excluded.last_stats == []


@interpreted
def test_a_group_the_kernels_cannot_take_is_refused_or_left_to_foreach(monkeypatch):
    # float64 is not among the kernels' dtypes
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    assert not lars_triton.able([w], [w.grad], None)
    monkeypatch.setitem(lars.FUSED_KERNELS, "cpu", lars.FUSED_KERNELS["cuda"])
    with pytest.raises(RuntimeError, match=r"LARS\(fused=True\) needs Triton, and w, g and the momentum buffer in one dtype"):
        LARS([w], lr=0.5, fused=True).step()
    # fused=None never picks it: on CUDA the default stays the foreach path until measured
    w32 = nn.Parameter(torch.tensor([3.0, 4.0]))
    w32.grad = torch.tensor([0.6, 0.8])
    assert lars.FUSED_KERNELS["cuda"].default is False
    assert lars._select_step(None, [w32], [w32.grad], None) is lars._foreach_step
    assert lars._select_step(True, [w32], [w32.grad], None) is lars._triton_step
    # a gradient laid out unlike its weight (a transposed view) cannot be walked in memory order
    m = nn.Parameter(torch.ones(2, 3))
    assert not lars_triton.able([m], [torch.ones(3, 2).t()], None)


@interpreted
def test_the_step_reads_no_tensor_value_on_the_host(triton_on_cpu, monkeypatch):
    model = small_model()
    opt = LARS(lars_param_groups(model, 5e-4), lr=0.1, fused=True, **HYPER)
    set_grads(model, torch.Generator().manual_seed(0), 0)
    opt.step()  # builds the tables and buffers
    # the interpreter itself reads its arguments through numpy, never through these
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail(f"LARS.step() called Tensor.{name}"))
    opt.step()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: compiles the Triton kernels and compares them with the foreach path"
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_kernels_match_the_foreach_path_on_resnet50(channels_last):
    from larsbench.workloads.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet50", 1000).cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    twin = copy.deepcopy(model)
    fused = LARS(lars_param_groups(model, 5e-5), lr=0.1, fused=True, **HYPER)
    foreach = LARS(lars_param_groups(twin, 5e-5), lr=0.1, fused=False, **HYPER)
    generator = torch.Generator(device="cuda").manual_seed(1)
    for step in range(3):
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=generator, device="cuda") * 1e-2)
            q.grad = p.grad.clone()  # laid out as its weight, as backward lays it out
        fused.step()
        foreach.step()
    for i, (p, q) in enumerate(zip(model.parameters(), twin.parameters())):
        assert_close(p, q, rtol=1e-5, atol=1e-6 * q.abs().max().item(), msg=f"parameter {i}")
    for a, b in zip(fused.last_stats, foreach.last_stats):
        assert_close(a.trust, b.trust, rtol=1e-5, atol=0)
        assert_close(a.w_norm, b.w_norm, rtol=1e-5, atol=0)
