"""Layer-wise optimizers over sharded state (core/shards.py, workloads/layer_norms.py): two real
gloo ranks (threads of this process, one ProcessGroupGloo each) step their shards, and the
whole model ends exactly where one unsharded optimizer takes it, with every layer's norms in
each rank's statistics and one collective per step.

Two ways of sharding, as the backends do it: DeepSpeed's ZeRO-1/2 (each group flattened,
padded and cut into equal parts across layer boundaries, ``step`` called once per group) and
torch's ZeroRedundancyOptimizer (whole parameters dealt out to the ranks)."""

from __future__ import annotations

import datetime
import threading

import pytest
import torch
import torch.distributed as dist
from torch import nn

from larsbench.core.shards import Piece, ShardLayout
from larsbench.core.spec import RunSpec
from larsbench.workloads.lars import lars_param_groups
from larsbench.workloads.models import build_model
from larsbench.workloads.optimizers import OPTIMIZERS, get_optimizer

SHARDED = [name for name, c in OPTIMIZERS.items() if c.layerwise and c.shards]
STEPS, RANKS, DECAY = 4, 2, 1e-2


def make_model(channels_last: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 4).double()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def gradients(model: nn.Module) -> list[list[torch.Tensor]]:
    """Per step, a gradient for every parameter (seeded; one all-zero gradient: ratio 1)."""
    generator = torch.Generator().manual_seed(1)
    steps = []
    for step in range(STEPS):
        grads = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(memory_format=_layout(p)) * 0.1
                 for p in model.parameters()]  # fmt: skip
        if step == 1:
            grads[0].zero_()
        steps.append(grads)
    return steps


def _layout(p: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def build(name: str, groups, fused):
    spec = RunSpec(optimizer=name, lr=0.5, global_batch_size=32, weight_decay=DECAY)
    optimizer = get_optimizer(name).build(groups, spec, 0.5)
    for group in optimizer.param_groups:
        group["fused"] = fused
    return optimizer


def reference(name: str, fused, channels_last: bool = False):
    """The unsharded optimizer: final parameters, and per step each adapted group's statistics."""
    model = make_model(channels_last)
    optimizer = build(name, lars_param_groups(model, DECAY), fused)
    stats = []
    for grads in gradients(model):
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        optimizer.step()
        stats.append([(s.w_norm.clone(), s.g_norm.clone(), s.trust.clone()) for s in optimizer.last_stats])
    return [p.detach().clone() for p in model.parameters()], stats


def cut(groups, rank: int, how: str):
    """This rank's share: per group, (its stepped tensor or None, [(parameter, offset in the
    stepped tensor, elements, offset in the parameter)]). ``zero``: the group's parameters
    flattened in order, padded to a multiple of the ranks, one equal part each; otherwise whole
    parameters dealt out in turn, each its own stepped tensor."""
    out = []
    for group in groups:
        if how == "zero":
            sizes = [p.numel() for p in group["params"]]
            size = (sum(sizes) + (-sum(sizes)) % RANKS) // RANKS
            start, end, offset, parts = rank * size, (rank + 1) * size, 0, []
            for p, n in zip(group["params"], sizes):
                lo, hi = max(offset, start), min(offset + n, end)
                if lo < hi:
                    parts.append((p, lo - start, hi - lo, lo - offset))
                offset += n
            out.append((group, nn.Parameter(torch.zeros(size, dtype=torch.float64)), parts))
        else:
            for i, p in enumerate(group["params"]):
                if i % RANKS == rank:
                    out.append((group, None, [(p, 0, p.numel(), 0)]))
    return out


def run_rank(name, fused, how, rank, model, store, results):
    params = list(model.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    pg = dist.ProcessGroupGloo(dist.PrefixStore(f"{name}-{how}-{fused}", store), rank, RANKS, datetime.timedelta(seconds=60))
    calls = []

    def all_reduce(tensor):
        calls.append(tensor.numel())
        pg.allreduce([tensor]).wait()

    groups = lars_param_groups(model, DECAY)
    share = cut(groups, rank, how)
    pieces, by_group = {}, {}
    for group, flat, parts in share:
        stepped = flat if flat is not None else parts[0][0]
        if flat is not None:
            with torch.no_grad():
                for p, at, n, inside in parts:
                    flat[at : at + n] = p.detach().view(-1)[inside : inside + n]
        pieces[id(stepped)] = tuple(Piece(index[id(p)], at, n) for p, at, n, _ in parts)
        by_group.setdefault(id(group), (group, []))[1].append(stepped)
    # every group on every rank, even one holding none of its parameters (as ZeroRedundancyOptimizer does)
    shard_groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": by_group.get(id(g), (g, []))[1]}
                    for g in groups]  # fmt: skip
    optimizer = build(name, shard_groups, fused)
    optimizer.use_shards(ShardLayout(tuple(params), pieces, all_reduce, torch.device("cpu")))
    stats = []
    for grads in gradients(model):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        for _, flat, parts in share:
            if flat is not None:
                flat.grad = torch.zeros_like(flat)
                for p, at, n, inside in parts:
                    flat.grad[at : at + n] = p.grad.view(-1)[inside : inside + n]
        before = len(calls)
        if how == "zero":  # as DeepSpeed's ZeRO optimizer does: one call of step per group
            groups_now = optimizer.param_groups
            for group in groups_now:
                optimizer.param_groups = [group]
                optimizer.step()
            optimizer.param_groups = groups_now
        else:
            optimizer.step()
        assert len(calls) == before + 1, "one collective per step for every layer's norms"
        stats.append(list(optimizer.last_stats))
    owned = [torch.zeros(p.numel(), dtype=torch.bool) for p in params]
    with torch.no_grad():
        for _, flat, parts in share:
            for p, at, n, inside in parts:
                owned[index[id(p)]][inside : inside + n] = True
                if flat is not None:  # what this rank stepped, back into its slices of the model
                    p.view(-1)[inside : inside + n] = flat[at : at + n]
    results[rank] = ([p.detach().clone() for p in params], owned, stats)


def sharded(name, fused, how):
    store, results = dist.HashStore(), {}
    models = [make_model(how.endswith("channels-last")) for _ in range(RANKS)]  # here: threads would share the global RNG
    threads = [
        threading.Thread(target=run_rank, args=(name, fused, how, r, models[r], store, results)) for r in range(RANKS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(RANKS)), "a rank failed (its exception is printed above)"
    return results


@pytest.mark.parametrize("how", ["zero", "whole-parameters", "whole-parameters-channels-last"])
@pytest.mark.parametrize("fused", [None, False], ids=["default", "foreach"])
@pytest.mark.parametrize("name", SHARDED)
def test_sharded_ranks_end_where_one_unsharded_optimizer_does(name, fused, how):
    want, want_stats = reference(name, fused, how.endswith("channels-last"))
    results = sharded(name, fused, how)
    for i, w in enumerate(want):
        got = torch.zeros(w.numel(), dtype=w.dtype)
        covered = torch.zeros(w.numel(), dtype=torch.int64)
        for params, owned, _ in results.values():
            got[owned[i]] = params[i].reshape(-1)[owned[i]]
            covered += owned[i].long()
        assert covered.eq(1).all(), f"parameter {i}: every element on exactly one rank"
        torch.testing.assert_close(got.view(w.shape), w.contiguous(), rtol=1e-12, atol=1e-15, msg=lambda m: f"parameter {i}: {m}")
    adapted = [i for i, p in enumerate(make_model().parameters()) if p.ndim > 1]
    for rank, (_, _, stats) in results.items():
        for step, (mine, expected) in enumerate(zip(stats, want_stats)):
            (stat,), ((w_norm, g_norm, trust),) = mine, expected
            kept = stat.member.nonzero().view(-1)
            assert kept.tolist() == adapted, "the adapted group's layers, known on every rank"
            for got_t, want_t in ((stat.w_norm, w_norm), (stat.g_norm, g_norm), (stat.trust, trust)):
                torch.testing.assert_close(got_t[kept].to(want_t.dtype), want_t, rtol=1e-12, atol=0, msg=f"rank {rank} step {step}")
