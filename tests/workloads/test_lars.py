"""LARS (workloads/lars.py) against the paper's Algorithm 1, checked by hand and by independent
references written here (plain Python floats, and a per-parameter torch loop)."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from larsbench.core.errors import ConfigError
from larsbench.core.spec import RunSpec
from larsbench.workloads.lars import LARS, lars_param_groups
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import build_optimizer

HYPERPARAMETERS = ("lr", "momentum", "weight_decay", "trust_coefficient", "eps", "lars_exclude")


# --------------------------------------------------------------------------- references


def py_lars_step(w, g, v, *, lr, m, beta, eta, eps=0.0, exclude=False):
    """One step of Algorithm 1 on flat lists of Python floats; returns (new w, new v)."""
    if exclude:
        lam, direction = 1.0, list(g)
    else:
        w_norm = math.sqrt(sum(x * x for x in w))
        g_norm = math.sqrt(sum(x * x for x in g))
        lam = eta * w_norm / (g_norm + beta * w_norm + eps) if w_norm > 0 and g_norm > 0 else 1.0
        direction = [gi + beta * wi for gi, wi in zip(g, w)]
    v = [m * vi + lr * lam * di for vi, di in zip(v, direction)]
    return [wi - vi for wi, vi in zip(w, v)], v


class ReferenceLARS:
    """Plain per-parameter loop with ``.norm()``: the paper's update, one tensor at a time."""

    def __init__(self, groups):
        self.groups = groups  # [{"params": [...], "weight_decay", "lars_exclude", ...}]
        self.buffers: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, lr, momentum, eta, eps):
        for group in self.groups:
            beta = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars_exclude"]:
                    update = lr * g
                else:
                    w_norm, g_norm = p.norm().item(), g.norm().item()
                    if w_norm > 0 and g_norm > 0:
                        lam = eta * w_norm / (g_norm + beta * w_norm + eps)
                    else:
                        lam = 1.0
                    update = lr * lam * (g + beta * p)
                v = self.buffers.get(p)
                v = update.clone() if v is None else momentum * v + update
                self.buffers[p] = v
                p.sub_(v)


def vec_param(values, dtype=torch.float64):
    return nn.Parameter(torch.tensor(values, dtype=dtype))


def set_grad(p, values):
    p.grad = torch.tensor(values, dtype=p.dtype).reshape(p.shape)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1)]


# The two implementations of the update: None runs torch's fused kernel on CPU, False the
# foreach kernels GPUs run. Every reference comparison below runs both.
PATHS = pytest.mark.parametrize("fused", [None, False], ids=["fused-kernel", "foreach"])


@pytest.fixture
def fused_calls(monkeypatch):
    """Tensors per call of torch._fused_sgd_ while the test runs (the real kernel still runs)."""
    calls: list[int] = []
    real = torch._fused_sgd_

    def counting(params, *args, **kwargs):
        calls.append(len(params))
        return real(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_sgd_", counting)
    return calls


# --------------------------------------------------------------------------- hand values


@PATHS
def test_first_step_matches_hand_computed_trust_ratio_and_update(fused):
    # ‖w‖ = 5, ‖g‖ = 1, β = 0.1, η = 0.01  →  λ = 0.01·5 / (1 + 0.1·5) = 1/30
    # g + βw = [0.9, 1.2];  v = lr·λ·(g + βw) = 0.5/30·[0.9, 1.2] = [0.015, 0.02]
    w = vec_param([3.0, 4.0])
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01, fused=fused)
    set_grad(w, [0.6, 0.8])
    opt.step()
    assert_close(w.detach(), torch.tensor([2.985, 3.98], dtype=torch.float64))
    assert_close(opt.state[w]["momentum_buffer"], torch.tensor([0.015, 0.02], dtype=torch.float64))


def test_three_steps_with_momentum_vector_and_matrix_params():
    hyper = dict(lr=0.5, m=0.9, beta=0.1, eta=0.01)
    w_vec = vec_param([3.0, 4.0])
    w_mat = vec_param([[1.0, 2.0], [2.0, 4.0]])  # ‖w‖ = 5
    grads_vec = [[0.6, 0.8], [0.0, 1.0], [-0.3, 0.4]]
    grads_mat = [[[0.0, 0.6], [0.0, 0.8]], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.0, -2.0]]]
    opt = LARS(
        [w_vec, w_mat], lr=hyper["lr"], momentum=hyper["m"], weight_decay=hyper["beta"],
        trust_coefficient=hyper["eta"],
    )  # fmt: skip
    vec, vec_v = flat(w_vec), [0.0, 0.0]
    mat, mat_v = flat(w_mat), [0.0] * 4
    vec_no_m = flat(w_vec)
    for gv, gm in zip(grads_vec, grads_mat):
        set_grad(w_vec, gv)
        set_grad(w_mat, gm)
        opt.step()
        vec, vec_v = py_lars_step(vec, gv, vec_v, **hyper)
        mat, mat_v = py_lars_step(mat, [x for row in gm for x in row], mat_v, **hyper)
        vec_no_m, _ = py_lars_step(vec_no_m, gv, [0.0, 0.0], **{**hyper, "m": 0.0})
        assert_close(flat(w_vec), vec)
        assert_close(flat(w_mat), mat)
    # momentum was really carried: a momentum-free run ends elsewhere
    assert abs(vec[0] - vec_no_m[0]) > 1e-3


def test_eps_enters_the_trust_ratio_denominator():
    # λ = 0.01·5 / (1 + 0.1·5 + 0.5) = 0.025;  v = 1·0.025·[0.9, 1.2]
    w = vec_param([3.0, 4.0])
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.1, trust_coefficient=0.01, eps=0.5)
    set_grad(w, [0.6, 0.8])
    opt.step()
    assert_close(flat(w), [3.0 - 0.0225, 4.0 - 0.03])


def test_zero_weight_norm_falls_back_to_trust_ratio_one():
    # ‖w‖ = 0 → λ = 1:  v = lr·(g + β·0) = 0.1·[1, 2]
    w = vec_param([0.0, 0.0])
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.001, eps=1e-3)
    set_grad(w, [1.0, 2.0])
    opt.step()
    assert_close(flat(w), [-0.1, -0.2])


def test_zero_grad_norm_falls_back_to_trust_ratio_one():
    # ‖g‖ = 0 → λ = 1 (even with eps > 0):  v = lr·β·w = 0.1·0.1·[3, 4]
    w = vec_param([3.0, 4.0])
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.1, trust_coefficient=0.001, eps=1e-3)
    set_grad(w, [0.0, 0.0])
    opt.step()
    assert_close(flat(w), [2.97, 3.96])


@PATHS
def test_excluded_group_is_plain_momentum_sgd_without_weight_decay(fused):
    # v1 = 0.5·[0.6, 0.8] = [0.3, 0.4];  w = [2.7, 3.6]
    # v2 = 0.9·[0.3, 0.4] + [0.3, 0.4] = [0.57, 0.76];  w = [2.13, 2.84]
    w = vec_param([3.0, 4.0])
    group = {"params": [w], "lars_exclude": True, "weight_decay": 0.1}  # decay must be ignored
    opt = LARS([group], lr=0.5, momentum=0.9, trust_coefficient=0.01, fused=fused)
    set_grad(w, [0.6, 0.8])
    opt.step()
    assert_close(flat(w), [2.7, 3.6])
    opt.step()
    assert_close(flat(w), [2.13, 2.84])


@PATHS
def test_momentum_zero_is_a_plain_scaled_step(fused):
    w = vec_param([3.0, 4.0])
    opt = LARS([w], lr=0.5, momentum=0.0, weight_decay=0.1, trust_coefficient=0.01, fused=fused)
    set_grad(w, [0.6, 0.8])
    opt.step()
    opt.step()
    expected, v = py_lars_step([3.0, 4.0], [0.6, 0.8], [0.0, 0.0], lr=0.5, m=0.0, beta=0.1, eta=0.01)
    expected, _ = py_lars_step(expected, [0.6, 0.8], v, lr=0.5, m=0.0, beta=0.1, eta=0.01)
    assert_close(flat(w), expected)


def test_params_without_grad_are_left_alone_and_closure_loss_is_returned():
    a, b = vec_param([1.0, 1.0]), vec_param([2.0, 2.0])
    opt = LARS([a, b], lr=0.1)
    set_grad(a, [1.0, 0.0])
    loss = opt.step(lambda: torch.tensor(3.5))
    assert float(loss) == 3.5
    assert flat(b) == [2.0, 2.0] and b not in opt.state
    assert flat(a) != [1.0, 1.0]


# --------------------------------------------------------------------------- whole model


def _random_grads(model, generator, step):
    params = list(model.parameters())
    weights = [i for i, p in enumerate(params) if p.ndim >= 2]
    for i, p in enumerate(params):
        if i == weights[1]:
            p.grad = None  # a conv weight that never has a gradient: skipped
        elif i == weights[2]:
            p.grad = torch.zeros_like(p)  # a conv weight with ‖g‖ = 0 → λ = 1
        else:
            scale = 10.0 ** (torch.rand((), generator=generator).item() * 4 - 3)
            p.grad = torch.randn(p.shape, generator=generator) * scale * (1 + step)
    return weights[1]


@PATHS
def test_matches_per_parameter_reference_on_a_real_model_over_several_steps(fused, fused_calls):
    # MobileNetV3-small: BatchNorm, biases, depthwise and 1×1 convs, linear layers; small enough
    # for 2 CPU cores
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    model = mobilenet_v3_small(num_classes=10)
    with torch.no_grad():
        model.classifier[-1].weight.zero_()  # an all-zero weight: ‖w‖ = 0 → λ = 1
    ref_model = copy.deepcopy(model)
    beta, eta, eps, m = 1e-3, 0.02, 0.05, 0.9
    opt = LARS(lars_param_groups(model, beta), lr=1.0, momentum=m, trust_coefficient=eta, eps=eps, fused=fused)
    ref = ReferenceLARS(lars_param_groups(ref_model, beta))
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    start = [p.detach().clone() for p in model.parameters()]
    for step, lr in enumerate([1.0, 4.0, 0.5, 8.0, 2.0]):
        skipped = _random_grads(model, gen_a, step)
        _random_grads(ref_model, gen_b, step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        ref.step(lr, m, eta, eps)
    params, ref_params = list(model.parameters()), list(ref_model.parameters())
    for i, (p, r) in enumerate(zip(params, ref_params)):
        # 1e-6 relative, with the absolute slack scaled to the tensor (float32 rounding)
        scale = r.detach().abs().max().item()
        assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-6 * scale, msg=f"parameter {i}")
        if p in opt.state:
            v_ref = ref.buffers[r]  # elements of v can cancel: tolerance relative to the tensor
            atol = 1e-6 * v_ref.abs().max().item()
            assert_close(opt.state[p]["momentum_buffer"], v_ref, rtol=1e-5, atol=atol, msg=f"v {i}")
    # the steps were not negligible: every parameter with a gradient moved
    moved = [not torch.equal(p.detach(), s) for p, s in zip(params, start)]
    assert moved[skipped] is False and sum(moved) == len(params) - 1
    assert len(params) > 50 and len(opt.state) == len(params) - 1
    # the path under test ran: per step, one kernel call per LARS tensor and one for the
    # excluded group; none at all on the foreach path
    weights = sum(1 for p in params if p.ndim > 1) - 1  # one weight never has a gradient
    expected_calls = ([1] * weights + [len(params) - weights - 1]) * 5 if fused is None else []
    assert fused_calls == expected_calls


@PATHS
def test_grad_is_left_bitwise_unmodified(fused):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 5)
    opt = LARS(lars_param_groups(model, 1e-2), lr=0.7, momentum=0.9, trust_coefficient=0.01, fused=fused)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the second and third steps update the momentum buffers in place
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        before = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for p, g in zip(model.parameters(), before):
            assert torch.equal(p.grad, g)


def test_a_group_the_fused_kernel_cannot_take_runs_the_foreach_kernels(fused_calls):
    # a gradient laid out differently from its weight (a transposed view): the fused kernel,
    # walking both in memory order, would pair the wrong elements
    w_auto, w_foreach = vec_param([[1.0, 2.0, 0.5], [3.0, 4.0, 1.5]]), vec_param([[1.0, 2.0, 0.5], [3.0, 4.0, 1.5]])
    grad = torch.tensor([[0.3, -0.2], [0.1, 0.6], [0.4, 0.0]], dtype=torch.float64).t()
    assert not grad.is_contiguous()
    hyper = dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    auto, foreach = LARS([w_auto], **hyper), LARS([w_foreach], **hyper, fused=False)
    for _ in range(2):
        w_auto.grad, w_foreach.grad = grad.clone(), grad.clone()
        auto.step()
        foreach.step()
    assert fused_calls == []
    assert torch.equal(w_auto, w_foreach)
    forced = LARS([w_auto], **hyper, fused=True)
    with pytest.raises(RuntimeError, match=r"LARS\(fused=True\) needs CPU tensors"):
        forced.step()


def test_an_optimizer_state_saved_without_the_fused_option_loads_and_steps():
    w = vec_param([3.0, 4.0])
    opt = LARS([w], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    set_grad(w, [0.6, 0.8])
    opt.step()
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        del group["fused"]  # as written before the option existed
    restored = LARS([w], lr=0.5)
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["fused"] is None
    restored.step()
    expected, v = py_lars_step([3.0, 4.0], [0.6, 0.8], [0.0, 0.0], lr=0.5, m=0.9, beta=0.1, eta=0.01)
    expected, _ = py_lars_step(expected, [0.6, 0.8], v, lr=0.5, m=0.9, beta=0.1, eta=0.01)
    assert_close(flat(w), expected)


def _train(model, opt, generator, steps):
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4)
    kwargs = dict(lr=0.3, momentum=0.85, trust_coefficient=0.02, eps=1e-6)
    opt = LARS(lars_param_groups(model, 5e-3), **kwargs)
    gen = torch.Generator().manual_seed(0)
    _train(model, opt, gen, 3)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    clone = build_model("tiny_cnn", 4)
    clone.load_state_dict(saved["model"])
    # a fresh optimizer with different constructor values: the saved groups must win
    restored = LARS(lars_param_groups(clone, 0.5), lr=9.0, momentum=0.1, trust_coefficient=0.5)
    restored.load_state_dict(saved["opt"])
    for g_old, g_new in zip(opt.param_groups, restored.param_groups):
        assert {k: g_new[k] for k in HYPERPARAMETERS} == {k: g_old[k] for k in HYPERPARAMETERS}

    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    _train(model, opt, gen_a, 3)
    _train(clone, restored, gen_b, 3)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def test_every_group_holds_every_hyperparameter():
    model = build_model("tiny_cnn", 3)
    opt = LARS(lars_param_groups(model, 1e-4), lr=0.2, momentum=0.8, trust_coefficient=0.003, eps=1e-7)
    assert len(opt.param_groups) == 2
    for group in opt.param_groups:
        assert set(HYPERPARAMETERS) <= set(group)
        assert (group["lr"], group["momentum"], group["trust_coefficient"], group["eps"]) == (
            0.2, 0.8, 0.003, 1e-7,
        )  # fmt: skip
    decay, excluded = opt.param_groups
    assert (decay["weight_decay"], decay["lars_exclude"]) == (1e-4, False)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)
    # plain params get the constructor's values
    plain = LARS([nn.Parameter(torch.ones(2))], lr=0.1).param_groups[0]
    assert {k: plain[k] for k in HYPERPARAMETERS} == dict(
        lr=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=0.0, lars_exclude=False
    )


def _hyper(groups):
    return [{k: g[k] for k in HYPERPARAMETERS} for g in groups]


def _custom_groups_optimizer(model):
    groups = lars_param_groups(model, 3e-3)
    groups[0].update(lr=0.4, momentum=0.7, trust_coefficient=0.05, eps=1e-4)
    groups[1].update(lr=0.2, momentum=0.6)
    return LARS(groups, lr=1.0)


def test_recreating_from_param_groups_keeps_group_hyperparameters():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 3)
    clone = copy.deepcopy(model)
    opt = _custom_groups_optimizer(model)
    # the clone's optimizer is rebuilt from opt's groups (params swapped for the clone's),
    # with constructor values that must all lose against the groups
    index = {id(p): i for i, p in enumerate(model.parameters())}
    clone_params = list(clone.parameters())
    groups = [{**g, "params": [clone_params[index[id(p)]] for p in g["params"]]} for g in opt.param_groups]
    again = LARS(groups, lr=123.0, momentum=0.0, weight_decay=0.9, trust_coefficient=1.0, eps=1.0)
    assert _hyper(again.param_groups) == _hyper(opt.param_groups)
    gen_a, gen_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    _train(model, opt, gen_a, 3)
    _train(clone, again, gen_b, 3)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


def _horovod_style_init(self, params):
    # horovod.torch.optimizer._DistributedOptimizer.__init__ does exactly this: the wrapper class
    # subclasses the user's optimizer class and calls its __init__ with the param groups only.
    super(self.__class__, self).__init__(params)


def test_horovod_style_recreation_from_param_groups_alone():
    model = build_model("tiny_cnn", 3)
    opt = _custom_groups_optimizer(model)
    wrapper_cls = type(LARS.__name__, (LARS,), {"__init__": _horovod_style_init})
    wrapped = wrapper_cls(opt.param_groups)
    assert _hyper(wrapped.param_groups) == _hyper(opt.param_groups)
    assert _hyper(LARS(opt.param_groups).param_groups) == _hyper(opt.param_groups)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=-0.1),
        dict(lr=0.1, momentum=-0.1),
        dict(lr=0.1, momentum=1.0),
        dict(lr=0.1, weight_decay=-1e-4),
        dict(lr=0.1, trust_coefficient=0.0),
        dict(lr=0.1, trust_coefficient=-0.001),
        dict(lr=0.1, eps=-1e-8),
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.ones(2))], **kwargs)


# --------------------------------------------------------------------------- param groups


def test_lars_param_groups_on_resnet50_excludes_exactly_bn_and_biases():
    model = build_model("resnet50", 1000)
    groups = lars_param_groups(model, 5e-5)
    assert len(groups) == 2
    decay, excluded = groups
    # independent: BatchNorm parameters and biases by module type and name, not by ndim
    bn = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    biases = [p for name, p in model.named_parameters() if name.endswith(".bias")]
    expected_excluded = {id(p) for p in bn} | {id(p) for p in biases}
    # ResNet-50: 53 BatchNorms (stem 1 + 16 bottlenecks × 3 + 4 downsample) × 2 + fc.bias = 107;
    # 53 convolutions + fc.weight = 54 weight tensors
    assert len(expected_excluded) == 107
    assert {id(p) for p in excluded["params"]} == expected_excluded
    assert len(excluded["params"]) == 107
    all_ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in decay["params"]} == all_ids - expected_excluded
    assert len(decay["params"]) == 54
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim <= 1 for p in excluded["params"])
    assert (decay["weight_decay"], decay["lars_exclude"]) == (5e-5, False)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)


def test_build_optimizer_scales_lr_and_uses_the_two_groups():
    model = build_model("tiny_cnn", 3)
    common = dict(
        lr=0.1, scaling_rule="linear", global_batch_size=1024, reference_batch_size=256, momentum=0.8,
        weight_decay=1e-3, trust_coefficient=0.002, lars_eps=1e-9,
    )  # fmt: skip
    opt, peak = build_optimizer(RunSpec(optimizer="lars", **common), model)
    assert isinstance(opt, LARS) and peak == pytest.approx(0.4)
    decay, excluded = opt.param_groups
    assert (decay["lr"], decay["momentum"], decay["trust_coefficient"], decay["eps"]) == pytest.approx(
        (0.4, 0.8, 0.002, 1e-9)
    )
    assert (decay["weight_decay"], excluded["weight_decay"], excluded["lars_exclude"]) == (1e-3, 0.0, True)
    sgd, sgd_peak = build_optimizer(RunSpec(optimizer="sgd", **{**common, "scaling_rule": "sqrt"}), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd_peak == pytest.approx(0.2)
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-3, 0.0]
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'"):
        build_optimizer(RunSpec(optimizer="adam", **common), model)


# --------------------------------------------------------------------------- property


small = st.integers(-1000, 1000).map(lambda i: i / 100)


@st.composite
def lars_cases(draw):
    n = draw(st.integers(1, 6))
    w = draw(st.lists(small, min_size=n, max_size=n))
    g1 = draw(st.lists(small, min_size=n, max_size=n))
    g2 = draw(st.lists(small, min_size=n, max_size=n))
    if draw(st.booleans()):
        w = [0.0] * n if draw(st.booleans()) else w
        g1 = [0.0] * n if draw(st.booleans()) else g1
    hyper = dict(
        lr=draw(st.floats(0.0, 5.0)),
        m=draw(st.floats(0.0, 0.99)),
        beta=draw(st.floats(0.0, 0.1)),
        eta=draw(st.floats(1e-4, 1.0)),
        eps=draw(st.sampled_from([0.0, 1e-8, 1e-3, 0.5])),
        exclude=draw(st.booleans()),
    )
    return w, g1, g2, hyper, draw(st.sampled_from([None, False]))


@settings(max_examples=60, deadline=None)
@given(lars_cases())
def test_property_steps_match_the_plain_python_reference(case):
    w0, g1, g2, h, fused = case
    w = vec_param(w0)
    group = {"params": [w], "weight_decay": h["beta"], "lars_exclude": h["exclude"]}
    opt = LARS([group], lr=h["lr"], momentum=h["m"], trust_coefficient=h["eta"], eps=h["eps"], fused=fused)
    hyper = dict(lr=h["lr"], m=h["m"], beta=h["beta"], eta=h["eta"], eps=h["eps"], exclude=h["exclude"])
    expected, v = list(w0), [0.0] * len(w0)
    for g in (g1, g2):
        set_grad(w, g)
        opt.step()
        expected, v = py_lars_step(expected, g, v, **hyper)
        assert_close(flat(w), expected, rtol=1e-9, atol=1e-12)
