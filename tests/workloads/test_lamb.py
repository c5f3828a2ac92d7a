"""LAMB (workloads/lamb.py) against the paper's Algorithm 2: hand values, an independent
reference written here from the algorithm (plain Python floats), torch's own Adam for the
excluded group (LAMB without a trust ratio and weight decay is Adam), on both implementations
(per tensor on the CPU, foreach kernels as on a GPU)."""

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

from larsbench.core.spec import RunSpec
from larsbench.loop.telemetry import LayerTelemetry
from larsbench.workloads.lamb import LAMB
from larsbench.workloads.lars import lars_param_groups
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import build_optimizer

PATHS = pytest.mark.parametrize("fused", [None, False], ids=["per-tensor", "foreach"])
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def py_lamb(w, g, m, v, t, *, lr, beta1, beta2, eps, decay, exclude=False):
    """Algorithm 2, one tensor, on lists of floats: returns (w, m, v, ‖w‖, ‖u‖, r)."""
    m = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(m, g)]
    v = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(v, g)]
    m_hat = [mi / (1 - beta1**t) for mi in m]
    v_hat = [vi / (1 - beta2**t) for vi in v]
    u = [mh / (math.sqrt(vh) + eps) for mh, vh in zip(m_hat, v_hat)]
    if exclude:
        return [wi - lr * ui for wi, ui in zip(w, u)], m, v, None, None, None
    u = [ui + decay * wi for ui, wi in zip(u, w)]
    w_norm, u_norm = math.sqrt(sum(x * x for x in w)), math.sqrt(sum(x * x for x in u))
    r = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return [wi - lr * r * ui for wi, ui in zip(w, u)], m, v, w_norm, u_norm, r


def vec(values):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def flat(t):
    return [float(x) for x in t.detach().reshape(-1)]


# --------------------------------------------------------------------------- hand values


@PATHS
def test_first_step_by_hand(fused):
    # t = 1: m̂ = g, v̂ = g², so with ε = 0 the direction is sign(g) = [1, −1]; ‖w‖ = 5,
    # ‖u‖ = √2, r = 5/√2; with lr = √2/50 the step is lr·r·u = 0.1·[1, −1].
    w = vec([3.0, 4.0])
    opt = LAMB([w], lr=math.sqrt(2) / 50, betas=(0.9, 0.999), eps=0.0, fused=fused)
    w.grad = torch.tensor([2.0, -2.0], dtype=torch.float64)
    opt.step()
    assert_close(flat(w), [2.9, 4.1])
    assert_close(flat(opt.state[w]["exp_avg"]), [0.2, -0.2])
    assert_close(flat(opt.state[w]["exp_avg_sq"]), [0.004, 0.004])
    assert opt.state[w]["step"] == 1
    (stats,) = opt.last_stats
    assert_close(flat(stats.trust), [5 / math.sqrt(2)]) and stats.norm_name == "update_norm"


@PATHS
def test_weight_decay_enters_the_direction_before_the_ratio(fused):
    # ε = 0, t = 1: u = sign(g) + λ·w = [1, 1] + 0.5·[0, 2] = [1, 2]; ‖w‖ = 2, ‖u‖ = √5
    w = vec([0.0, 2.0])
    opt = LAMB([w], lr=0.1, eps=0.0, weight_decay=0.5, fused=fused)
    w.grad = torch.tensor([3.0, 0.5], dtype=torch.float64)
    opt.step()
    r = 2 / math.sqrt(5)
    assert_close(flat(w), [0.0 - 0.1 * r * 1.0, 2.0 - 0.1 * r * 2.0])


@PATHS
def test_zero_norms_fall_back_to_ratio_one(fused):
    zero_w, zero_u = vec([0.0, 0.0]), vec([1.0, 1.0])
    opt = LAMB([zero_w, zero_u], lr=0.1, eps=1e-8, fused=fused)
    zero_w.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    zero_u.grad = torch.zeros(2, dtype=torch.float64)  # m = 0 and no decay: u = 0
    opt.step()
    assert_close(flat(zero_w), [-0.1 / (1 + 1e-8), 0.1 / (1 + 1e-8)])  # r = 1
    assert flat(zero_u) == [1.0, 1.0]
    assert_close(flat(opt.last_stats[0].trust), [1.0, 1.0])


@PATHS
def test_the_excluded_group_is_torchs_adam_without_weight_decay(fused):
    torch.manual_seed(0)
    ours, theirs = vec(torch.randn(7).tolist()), vec([0.0] * 7)
    with torch.no_grad():
        theirs.copy_(ours)
    group = {"params": [ours], "lars_exclude": True, "weight_decay": 0.3}  # decay must be ignored
    opt = LAMB([group], lr=0.01, betas=(0.8, 0.99), eps=1e-6, fused=fused)
    adam = torch.optim.Adam([theirs], lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    generator = torch.Generator().manual_seed(2)
    for _ in range(6):
        grad = torch.randn(7, generator=generator, dtype=torch.float64)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt.step()
        adam.step()
    assert_close(ours.detach(), theirs.detach(), rtol=1e-12, atol=1e-15)
    assert opt.last_stats == []


# --------------------------------------------------------------------------- whole model


def _grads(model, generator, step):
    params = list(model.parameters())
    for i, p in enumerate(params):
        if i == 2:
            p.grad = None  # never a gradient: skipped, no state
        else:
            p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype) * 10.0 ** (step % 3 - 1)


@PATHS
def test_matches_the_reference_on_a_real_model_over_several_steps(fused):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 5).double()
    with torch.no_grad():
        model[6].weight.zero_()  # the classifier: ‖w‖ = 0 → r = 1
    beta1, beta2, eps, decay = 0.9, 0.99, 1e-6, 0.02
    opt = LAMB(lars_param_groups(model, decay), lr=0.01, betas=(beta1, beta2), eps=eps, fused=fused)
    names = {id(p): n for n, p in model.named_parameters()}
    excluded = {id(p) for p in model.parameters() if p.ndim <= 1}
    state = {id(p): (flat(p), [0.0] * p.numel(), [0.0] * p.numel(), 0) for p in model.parameters()}
    generator = torch.Generator().manual_seed(1)
    for step, lr in enumerate([0.01, 0.05, 0.02, 0.1, 0.03]):
        _grads(model, generator, step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        expected_stats = []
        for p in model.parameters():
            if p.grad is None:
                continue
            w, m, v, t = state[id(p)]
            w, m, v, w_norm, u_norm, r = py_lamb(w, flat(p.grad), m, v, t + 1, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                                  decay=decay, exclude=id(p) in excluded)  # fmt: skip
            state[id(p)] = (w, m, v, t + 1)
            if r is not None:
                expected_stats.append((names[id(p)], w_norm, u_norm, r))
        (stats,) = opt.last_stats
        assert [names[id(p)] for p in stats.params] == [n for n, *_ in expected_stats]
        assert_close(stats.w_norm, torch.tensor([s[1] for s in expected_stats], dtype=torch.float64), rtol=1e-10, atol=0)
        assert_close(stats.g_norm, torch.tensor([s[2] for s in expected_stats], dtype=torch.float64), rtol=1e-10, atol=0)
        assert_close(stats.trust, torch.tensor([s[3] for s in expected_stats], dtype=torch.float64), rtol=1e-10, atol=0)
    for p in model.parameters():
        assert_close(flat(p), state[id(p)][0], rtol=1e-10, atol=1e-13, msg=names[id(p)])
    skipped = list(model.parameters())[2]
    assert skipped not in opt.state


def test_both_implementations_agree_and_leave_grad_untouched():
    torch.manual_seed(0)
    a = build_model("tiny_cnn", 5)
    b = copy.deepcopy(a)
    per_tensor = LAMB(lars_param_groups(a, 1e-2), lr=0.02, fused=None)
    foreach = LAMB(lars_param_groups(b, 1e-2), lr=0.02, fused=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        for p, q in zip(a.parameters(), b.parameters()):
            p.grad = torch.randn(p.shape, generator=generator)
            q.grad = p.grad.clone()
        before = [p.grad.clone() for p in a.parameters()]
        per_tensor.step()
        foreach.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(a.parameters(), before))
    for p, q in zip(a.parameters(), b.parameters()):
        assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("decay", [0.0, 1e-2])
def test_the_foreach_step_reads_no_tensor_value_on_the_host(monkeypatch, decay):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10)
    with torch.no_grad():
        model[6].weight.zero_()  # ‖w‖ = 0: the fallback r = 1 must not branch on the host either
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    next(model.parameters()).grad.zero_()
    opt = LAMB(lars_param_groups(model, decay), lr=0.01, fused=False)

    def refuse(*args, **kwargs):
        raise AssertionError("LAMB.step() read a tensor value on the host")

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt.step()  # creates the moments
    opt.step()


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: checks with torch.cuda.set_sync_debug_mode that LAMB.step() never synchronises",
)
def test_the_step_does_not_synchronise_cuda():
    torch.manual_seed(0)
    model = build_model("resnet50", 10).cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    opt = LAMB(lars_param_groups(model, 1e-2), lr=0.01)  # fused=None: the foreach kernels on CUDA
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        opt.step()  # creates the moments
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_fused_true_off_the_cpu_is_an_error_naming_the_fallback():
    w = vec([1.0, 2.0]).to("meta")
    opt = LAMB([nn.Parameter(w)], fused=True)
    opt.param_groups[0]["params"][0].grad = torch.ones(2, dtype=torch.float64, device="meta")
    with pytest.raises(RuntimeError, match=r"fused=None"):
        opt.step()


# --------------------------------------------------------------------------- groups and state


def test_every_hyperparameter_lives_in_the_groups_and_a_rebuild_keeps_them():
    model = build_model("tiny_cnn", 3)
    spec = RunSpec(optimizer="lamb", lr=0.004, global_batch_size=64, momentum=0.8, weight_decay=1e-3)
    opt, peak = build_optimizer(spec, model)
    assert isinstance(opt, LAMB) and peak == 0.004
    decay, excluded = opt.param_groups
    assert (decay["lr"], decay["betas"], decay["eps"], decay["weight_decay"]) == (0.004, (0.8, 0.999), 1e-6, 1e-3)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)
    rebuilt = LAMB(opt.param_groups)  # what Horovod does
    assert [{k: v for k, v in g.items() if k != "params"} for g in rebuilt.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in opt.param_groups
    ]


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4)
    opt = LAMB(lars_param_groups(model, 1e-2), lr=0.01)
    generator = torch.Generator().manual_seed(3)

    def train(m, o, steps):
        for _ in range(steps):
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=generator)
            o.step()

    train(model, opt, 2)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    state = generator.get_state()
    train(model, opt, 2)
    resumed_model = build_model("tiny_cnn", 4)
    resumed = LAMB(lars_param_groups(resumed_model, 1e-2), lr=0.01)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["opt"])
    generator.set_state(state)
    train(resumed_model, resumed, 2)
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "kwargs", [{"lr": -1.0}, {"betas": (1.0, 0.999)}, {"betas": (0.9, -0.1)}, {"eps": -1e-8}, {"weight_decay": -0.1}]
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        LAMB([vec([1.0])], **kwargs)


def test_telemetry_rows_name_the_update_norm(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4)
    opt = LAMB(lars_param_groups(model, 1e-2), lr=0.01)
    model(torch.randn(4, 3, 8, 8)).logsumexp(1).mean().backward()
    opt.step()
    LayerTelemetry(opt, model, tmp_path / "t.jsonl", every=1).collect(1)
    import json

    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in rows] == [n for n, p in model.named_parameters() if p.ndim > 1]
    assert all("update_norm" in r and "g_norm" not in r for r in rows)
    assert all(r["effective_lr"] == pytest.approx(0.01 * r["trust_ratio"]) for r in rows)


# --------------------------------------------------------------------------- property

small = st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 2))


@st.composite
def lamb_cases(draw):
    n = draw(st.integers(1, 6))
    w = draw(st.lists(small, min_size=n, max_size=n))
    grads = draw(st.lists(st.lists(small.filter(lambda x: x != 0), min_size=n, max_size=n), min_size=1, max_size=4))
    return dict(
        w=w, grads=grads, lr=draw(st.sampled_from([0.001, 0.01, 0.1])), beta1=draw(st.sampled_from([0.0, 0.5, 0.9])),
        beta2=draw(st.sampled_from([0.9, 0.999])), eps=draw(st.sampled_from([1e-8, 1e-6, 0.1])),
        decay=draw(st.sampled_from([0.0, 1e-3, 0.1])), exclude=draw(st.booleans()),
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(lamb_cases())
def test_property_steps_match_the_plain_python_reference(case):
    for fused in (None, False):
        w = vec(case["w"])
        group = {"params": [w], "weight_decay": case["decay"], "lars_exclude": case["exclude"]}
        opt = LAMB([group], lr=case["lr"], betas=(case["beta1"], case["beta2"]), eps=case["eps"], fused=fused)
        want, m, v = list(case["w"]), [0.0] * len(case["w"]), [0.0] * len(case["w"])
        for t, g in enumerate(case["grads"], start=1):
            w.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
            want, m, v, *_ = py_lamb(want, g, m, v, t, lr=case["lr"], beta1=case["beta1"], beta2=case["beta2"],
                                     eps=case["eps"], decay=case["decay"], exclude=case["exclude"])  # fmt: skip
        assert_close(flat(w), want, rtol=1e-9, atol=1e-12)
