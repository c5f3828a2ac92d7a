"""LARS's GPU step as Triton kernels: ``LARS(fused=True)`` on CUDA.

The step is bound by memory traffic. Fused SGD reads w, g, v and writes v, w: 5 accesses per
element. LARS needs ‖w‖ and ‖g‖ before it can update, 2 more reads, so a step that streams
all norms first and all updates after moves 1.4× fused SGD's bytes (the foreach path moves
about 13 accesses' worth, over many launches). Here the group's tensors are cut into blocks
of about ``CHUNK_BYTES`` of parameters, small enough that a block's w and g stay in the GPU's
L2 cache (50 MB on an H100 or H200) between two kernels:

1. norms: each program sums w² and g² over ``BLOCK`` elements of one tensor into its own
   slot of a partial-sums buffer (no atomics: the sums come out the same every run);
2. update: each program adds up its tensor's partial sums, forms λ and updates its
   ``BLOCK`` elements: ``v ← m·v + lr·λ·(g + β·w)``, ``w ← w − v``. Its reads of w and g
   hit L2, so memory sees about fused SGD's 5 accesses.

Tensors are reached through tables of their addresses (a "multi-tensor" launch), so a block
is two launches whatever its tensor count. The tables are built on the host from
``data_ptr()`` (metadata, no device read), copied from pinned memory without blocking, and
cached by address and size; a ``step`` never reads a tensor value on the host and never
synchronises. Norms, λ and the update run in fp32 (fp16 and bf16 tensors are read and
written in their own dtype). Excluded groups (no trust ratio) are one update launch.

On a CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1``), which is
how the tests check them against the reference implementations.
"""

import functools
import os
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from larsbench.workloads.multi_tensor import laid_out_alike

# Elements per program; partial sums a program adds per loop iteration.
BLOCK, PARTIALS_BLOCK = 4096, 1024
# Parameter bytes per block of tensors: w and g of a block (twice this) must fit in L2
# beside what the update streams through it.
CHUNK_BYTES = 8 << 20
DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def norms_kernel(w_ptrs, g_ptrs, numels, prog_tensor, prog_start, partials, first_prog, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    pid = first_prog + tl.program_id(0)
    t = tl.load(prog_tensor + pid)
    offsets = tl.load(prog_start + pid) + tl.arange(0, BLOCK)
    inside = offsets < tl.load(numels + t)
    # evict_last: the update kernel reads these elements again right after
    w = tl.load(tl.load(w_ptrs + t).to(tl.pointer_type(DTYPE)) + offsets, mask=inside, other=0.0, eviction_policy="evict_last")
    g = tl.load(tl.load(g_ptrs + t).to(tl.pointer_type(DTYPE)) + offsets, mask=inside, other=0.0, eviction_policy="evict_last")
    w, g = w.to(tl.float32), g.to(tl.float32)
    tl.store(partials + 2 * pid, tl.sum(w * w, axis=0))
    tl.store(partials + 2 * pid + 1, tl.sum(g * g, axis=0))


def update_kernel(
    w_ptrs, g_ptrs, v_ptrs, numels, prog_tensor, prog_start, tensor_first, tensor_progs, partials, stats, n_tensors,
    first_prog, lr, momentum, beta, eta, eps,
    DTYPE: tl.constexpr, ADAPT: tl.constexpr, MOMENTUM: tl.constexpr, BLOCK: tl.constexpr, PARTIALS_BLOCK: tl.constexpr,
):  # fmt: skip
    pid = first_prog + tl.program_id(0)
    t = tl.load(prog_tensor + pid)
    start = tl.load(prog_start + pid)
    if ADAPT:
        first, count = tl.load(tensor_first + t), tl.load(tensor_progs + t)
        w_sq = tl.zeros([PARTIALS_BLOCK], dtype=tl.float32)
        g_sq = tl.zeros([PARTIALS_BLOCK], dtype=tl.float32)
        for k in range(0, count, PARTIALS_BLOCK):
            index = k + tl.arange(0, PARTIALS_BLOCK)
            valid = index < count
            w_sq += tl.load(partials + 2 * (first + index), mask=valid, other=0.0)
            g_sq += tl.load(partials + 2 * (first + index) + 1, mask=valid, other=0.0)
        w_norm, g_norm = tl.sqrt(tl.sum(w_sq, axis=0)), tl.sqrt(tl.sum(g_sq, axis=0))
        trust = tl.where((w_norm > 0) & (g_norm > 0), eta * w_norm / (g_norm + beta * w_norm + eps), 1.0)
        scale = lr * trust
        if start == 0:  # one program per tensor keeps the statistics telemetry reads
            tl.store(stats + t, w_norm)
            tl.store(stats + n_tensors + t, g_norm)
            tl.store(stats + 2 * n_tensors + t, trust)
    else:
        scale = lr
    offsets = start + tl.arange(0, BLOCK)
    inside = offsets < tl.load(numels + t)
    w_at = tl.load(w_ptrs + t).to(tl.pointer_type(DTYPE)) + offsets
    w = tl.load(w_at, mask=inside, other=0.0).to(tl.float32)
    g = tl.load(tl.load(g_ptrs + t).to(tl.pointer_type(DTYPE)) + offsets, mask=inside, other=0.0).to(tl.float32)
    direction = g + beta * w
    if MOMENTUM:
        v_at = tl.load(v_ptrs + t).to(tl.pointer_type(DTYPE)) + offsets
        v = momentum * tl.load(v_at, mask=inside, other=0.0).to(tl.float32) + scale * direction
        tl.store(v_at, v.to(DTYPE), mask=inside)
        w = w - v
    else:
        w = w - scale * direction
    tl.store(w_at, w.to(DTYPE), mask=inside)


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """The jitted kernels; Triton picks compiled or interpreted when jitting, by the
    environment (the key keeps the two apart)."""
    keep = ["first_prog", "n_tensors"]  # launch offsets: specialising on them buys nothing
    return triton.jit(norms_kernel, do_not_specialize=keep), triton.jit(update_kernel, do_not_specialize=keep)


class Plan(NamedTuple):
    """Where each program works, for one list of tensor sizes, and the blocks of tensors."""

    numels: torch.Tensor  # per tensor
    prog_tensor: torch.Tensor  # per program: its tensor
    prog_start: torch.Tensor  # per program: its first element
    tensor_first: torch.Tensor  # per tensor: its first program
    tensor_progs: torch.Tensor  # per tensor: its program count
    chunks: tuple[tuple[int, int], ...]  # (first program, programs) per block of tensors
    programs: int


def plan(numels: list[int], element_bytes: int, device: torch.device) -> Plan:
    prog_tensor, prog_start, tensor_first, tensor_progs = [], [], [], []
    chunks, chunk_first, chunk_bytes = [], 0, 0
    for t, n in enumerate(numels):
        count = triton.cdiv(n, BLOCK)
        if chunk_bytes and chunk_bytes + n * element_bytes > CHUNK_BYTES:
            chunks.append((chunk_first, len(prog_tensor) - chunk_first))
            chunk_first, chunk_bytes = len(prog_tensor), 0
        chunk_bytes += n * element_bytes
        tensor_first.append(len(prog_tensor))
        tensor_progs.append(count)
        prog_tensor += [t] * count
        prog_start += range(0, n, BLOCK)
    chunks.append((chunk_first, len(prog_tensor) - chunk_first))
    return Plan(
        to_device(numels, torch.int64, device), to_device(prog_tensor, torch.int32, device),
        to_device(prog_start, torch.int64, device), to_device(tensor_first, torch.int32, device),
        to_device(tensor_progs, torch.int32, device), tuple(chunks), len(prog_tensor),
    )  # fmt: skip


def to_device(values: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list on ``device`` without a synchronising copy: through pinned memory, whose
    block torch keeps until the copy has run."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class _Tables:
    """Cached device tables, keyed by the tensors' addresses and sizes (which fully determine
    them): a model's parameters and momentum buffers keep their addresses, gradients usually
    get the same ones back from the allocator."""

    def __init__(self, size: int = 16):
        self.entries: OrderedDict[tuple, tuple[Plan, torch.Tensor, torch.Tensor]] = OrderedDict()
        self.size = size

    def get(self, params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, adapt: bool):
        key = (adapt, bufs is None, BLOCK, CHUNK_BYTES, *((p.data_ptr(), g.data_ptr(), p.numel()) for p, g in zip(params, grads)),
               *(v.data_ptr() for v in bufs or ()))  # fmt: skip
        entry = self.entries.get(key)
        if entry is None:
            device = params[0].device
            layout = plan([p.numel() for p in params], params[0].element_size(), device)
            if not adapt:  # nothing to keep in cache between two kernels: one launch
                layout = layout._replace(chunks=((0, layout.programs),))
            pointers = [p.data_ptr() for p in params] + [g.data_ptr() for g in grads] + [v.data_ptr() for v in bufs or ()]
            partials = torch.empty(2 * layout.programs if adapt else 1, dtype=torch.float32, device=device)
            entry = self.entries[key] = (layout, to_device(pointers, torch.int64, device), partials)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return entry


_TABLES = _Tables()


def able(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None) -> bool:
    """Whether the kernels can take this group: one device and one dtype they support for all
    its tensors (one launch reads them all through one pointer type), each laid out alike."""
    first = params[0]
    return (
        first.dtype in DTYPES
        and all(p.device == first.device and p.dtype == first.dtype for p in params)
        and laid_out_alike(params, grads, bufs)
    )


def step(
    params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, group: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """One LARS step of a group; returns ‖w‖, ‖g‖ and λ per tensor (device tensors), or None
    for an excluded group."""
    adapt = not group["lars_exclude"]
    layout, pointers, partials = _TABLES.get(params, grads, bufs, adapt)
    norms, update = _kernels(os.environ.get("TRITON_INTERPRET", "0") == "1")
    n = len(params)
    w_ptrs, g_ptrs = pointers[:n], pointers[n : 2 * n]
    v_ptrs = pointers[2 * n :] if bufs is not None else w_ptrs  # unread without momentum
    stats = torch.empty(3, n if adapt else 1, dtype=torch.float32, device=params[0].device)
    dtype = DTYPES[params[0].dtype]
    beta = group["weight_decay"] if adapt else 0.0
    for first, count in layout.chunks:
        if adapt:
            norms[(count,)](w_ptrs, g_ptrs, layout.numels, layout.prog_tensor, layout.prog_start, partials, first,
                            DTYPE=dtype, BLOCK=BLOCK)  # fmt: skip
        update[(count,)](
            w_ptrs, g_ptrs, v_ptrs, layout.numels, layout.prog_tensor, layout.prog_start, layout.tensor_first,
            layout.tensor_progs, partials, stats, n, first, float(group["lr"]), float(group["momentum"]), float(beta),
            float(group["trust_coefficient"]), float(group["eps"]),
            DTYPE=dtype, ADAPT=adapt, MOMENTUM=bufs is not None, BLOCK=BLOCK, PARTIALS_BLOCK=PARTIALS_BLOCK,
        )  # fmt: skip
    return tuple(stats.unbind(0)) if adapt else None
