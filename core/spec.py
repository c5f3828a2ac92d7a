"""The run spec: every setting of one run, validated, and the role each setting plays.

A setting's *role* is declared once, on its field, and everything that asks "does this setting
matter?" derives from it:

- ``measure``: it changes what is measured (model, batch, precision, backend, data workers...).
  Runs that differ here are different settings: they never pool as repeats, never match in
  ``larsbench compare``, and their labels differ. A resumed run must keep them.
- ``sample``: a different draw of the same measurement (the seed, and how repeats draw it).
  Repeats differ here; a resumed run must keep it.
- ``bookkeeping``: where and how often things are written (data folder, logging, telemetry and
  checkpoint intervals, timeouts). Never part of a setting's identity; a resume may change it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
# Finite only: an infinite LR, epoch count or timeout is never meant, and would run forever or diverge.
PositiveFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Text = Annotated[str, Strict(), Field(min_length=1)]


# Each setting's role, declared once with the field (see the module docstring).
MEASURE, SAMPLE, BOOKKEEPING = "measure", "sample", "bookkeeping"


# Base LR when a run gives none (before the scaling rule), per optimizer. Kept with the spec's
# other defaults, not with the optimizers: labels and records read it without loading torch.
# An optimizer without an entry has no default: its runs must set lr.
DEFAULT_LR = {"lars": 2.0, "lamb": 0.01, "sgd": 0.1}


def _doc(text: str, role: str = MEASURE) -> Any:
    return Field(description=text, json_schema_extra={"role": role})


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run. Plain data: it is recorded verbatim in provenance."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    backend: Annotated[Text, _doc("distributed backend: ddp, deepspeed, horovod or a registered one")] = "ddp"
    backend_config: Annotated[
        dict[str, Any] | None,
        _doc("the backend library's own settings, JSON or a JSON file: a DeepSpeed config, "
             "DistributedDataParallel arguments"),
    ] = None
    model: Annotated[Text, _doc("resnet50, alexnet, alexnet_bn, alexnet_bn_mini (CPU studies) or tiny_cnn")] = "resnet50"
    dataset: Annotated[
        Literal["synthetic", "imagefolder", "generated"],
        _doc("synthetic tensors, an ImageFolder tree (data_dir), or a generated ImageFolder set"),
    ] = "synthetic"
    data_dir: Annotated[Text | None, _doc("ImageFolder root holding train/ and val/", BOOKKEEPING)] = None
    image_size: Annotated[PositiveInt, _doc("square input size in pixels")] = 32
    num_classes: Annotated[int, Strict(), Field(ge=2), _doc("number of classes")] = 10
    world_size: Annotated[PositiveInt, _doc("number of ranks (workers)")] = 1
    micro_batch_size: Annotated[PositiveInt, _doc("images per rank per forward pass")] = 32
    accumulation_steps: Annotated[PositiveInt, _doc("micro-batches per optimizer step")] = 1
    global_batch_size: Annotated[
        PositiveInt | None,
        _doc("optional; without accumulation_steps it sets it: global = world × micro × accumulation, "
             "micro_batch_size being the largest per-rank micro-batch; with it, a check"),
    ] = None
    optimizer: Annotated[Text, _doc("the optimizer: lars, sgd or another registered one (workloads/optimizers.py)")] = "lars"
    optimizer_sharding: Annotated[
        Literal["none", "zero1", "zero2"],
        _doc("partition the optimizer state over the ranks: zero1 (deepspeed: ZeRO stage 1; ddp: torch's "
             "ZeroRedundancyOptimizer) or zero2 (deepspeed: ZeRO stage 2, gradients partitioned too); "
             "layer-wise optimizers reduce each layer's norms across the partitions"),
    ] = "none"
    lr: Annotated[
        PositiveFloat | None,
        _doc("base learning rate before the scaling rule (default per optimizer: "
             + ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items()) + ")"),
    ] = None
    scaling_rule: Annotated[
        Literal["none", "linear", "sqrt"],
        _doc("peak LR = lr × (B/ref) for linear, × sqrt(B/ref) for sqrt"),
    ] = "none"
    reference_batch_size: Annotated[PositiveInt, _doc("ref in the scaling rule")] = 256
    momentum: Annotated[float, Strict(), Field(ge=0, lt=1), _doc("momentum")] = 0.9
    weight_decay: Annotated[NonNegativeFloat, _doc("weight decay β (not on BN/bias)")] = 5e-4
    trust_coefficient: Annotated[PositiveFloat, _doc("LARS trust coefficient η")] = 0.001
    lars_eps: Annotated[NonNegativeFloat, _doc("LARS denominator epsilon")] = 0.0
    warmup_epochs: Annotated[NonNegativeFloat, _doc("linear LR warm-up length")] = 0.0
    end_lr: Annotated[NonNegativeFloat, _doc("LR at the end of the polynomial decay")] = 0.0
    poly_power: Annotated[PositiveFloat, _doc("power of the polynomial decay")] = 2.0
    epochs: Annotated[PositiveFloat, _doc("training length in epochs (the LR schedule's)")] = 1.0
    steps: Annotated[
        PositiveInt | None, _doc("training length in optimizer steps (overrides epochs)")
    ] = None
    target_top1: Annotated[
        float | None, Strict(), Field(gt=0, le=1), _doc("top-1 for time-to-accuracy (0..1]")
    ] = None
    eval_every_epochs: Annotated[PositiveInt, _doc("evaluate every N epochs (and at the end)")] = 1
    seed: Annotated[NonNegativeInt, _doc("seed for weights, data order and synthetic data", SAMPLE)] = 0
    repeat: Annotated[
        NonNegativeInt, _doc("index of this run among the repeats of its setting (set by 'repeats')", SAMPLE)
    ] = 0
    # A sample setting: it decides which spread the repeats measure, not what one run measures,
    # so runs with and without it are repeats of one setting (their throughput is one quantity;
    # one seed's accuracy is a draw of the seeds' accuracy) and never split a series or a
    # comparison; unlike bookkeeping it changes what a repeat computes, so a resume keeps it.
    hold_seed: Annotated[
        bool,
        _doc("repeats keep 'seed' as given, so their spread is run-to-run noise only (nondeterminism, the "
             "machine); by default repeat r > 0 trains with a seed derived from 'seed' and r, and the spread "
             "is seed-to-seed", SAMPLE),
    ] = False
    device: Annotated[Literal["auto", "cpu", "cuda"], _doc("auto picks cuda when present")] = "auto"
    precision: Annotated[
        Literal["fp32", "bf16", "fp16"],
        _doc("fp32; bf16 autocast; fp16 autocast with loss scaling, gradients unscaled before "
             "LARS's norms (deepspeed: its engine's own torch_autocast and scaler)"),
    ] = "fp32"
    channels_last: Annotated[bool, _doc("model weights and input batches in channels_last (NHWC)")] = False
    cudnn_benchmark: Annotated[
        bool, _doc("let cuDNN pick the fastest convolution algorithms (CUDA only)")
    ] = True
    allow_host_transport: Annotated[
        bool,
        _doc("let a backend move CUDA gradients through host memory (Horovod built without NCCL) while "
             "NCCL is available; otherwise such a run is refused: it would not compare fairly with "
             "backends on NCCL"),
    ] = False
    compile: Annotated[
        bool,
        _doc("torch.compile the model before the backend wraps it: faster steps after a one-off "
             "compile of seconds to minutes per rank, inside the timing warm-up steps"),
    ] = False
    data_workers: Annotated[NonNegativeInt, _doc("DataLoader worker processes per rank")] = 1
    threads_per_rank: Annotated[
        PositiveInt | None,
        _doc("torch intra-op threads per rank; default: OMP_NUM_THREADS, which the launchers set to the "
             "cores a rank may use (its CPU affinity shared by the ranks on its node; Slurm's --cpus-per-task)"),
    ] = None
    data_loader: Annotated[
        Literal["cpu", "gpu"],
        _doc("where JPEGs are decoded and augmented: cpu (PIL in the DataLoader workers) or gpu "
             "(workers read file bytes, nvjpeg decodes each micro-batch on the GPU; CUDA, "
             "imagefolder or generated data)"),
    ] = "cpu"
    network_interface: Annotated[
        Text | None,
        _doc("network interface the ranks' collectives use on every node (ib0, eth0): sets GLOO_SOCKET_IFNAME, "
             "NCCL_SOCKET_IFNAME and HOROVOD_GLOO_IFACE; default: each library's own choice"),
    ] = None
    conditions: Annotated[
        dict[str, str] | None,
        _doc("conditions set outside larsbench that change what is measured, as name: value (e.g. "
             "{link_rate: 1gbit} on a shaped network): recorded, and part of the run's setting and label"),
    ] = None
    synthetic_samples: Annotated[PositiveInt, _doc("size of the synthetic train set")] = 1024
    train_images_per_class: Annotated[PositiveInt, _doc("generated set: train images/class")] = 64
    val_images_per_class: Annotated[PositiveInt, _doc("generated set: val images/class")] = 16
    timing_warmup_steps: Annotated[
        NonNegativeInt, _doc("optimizer steps left out of the throughput window")
    ] = 2
    # Bookkeeping only when it changes no work inside the measured window: the probe runs before
    # the run's clocks start and a periodic checkpoint is cut out of the window; the loss
    # reduction and the telemetry happen inside it, so their intervals are measure settings.
    compute_probe_steps: Annotated[
        NonNegativeInt,
        _doc("steps timed on a copy of the model without communication before the run's clocks start, "
             "giving the step split its compute part; 0 turns it off", BOOKKEEPING),
    ] = 5
    log_every_steps: Annotated[
        PositiveInt, _doc("steps between loss reductions (progress, divergence check): a collective inside the window")
    ] = 10
    telemetry_every_steps: Annotated[
        NonNegativeInt | None,
        _doc("LARS telemetry (per-layer norms, trust ratio, effective LR) every N steps, inside the window; "
             "0 turns it off; default: about 200 records per run"),
    ] = None
    checkpoint_every_steps: Annotated[
        PositiveInt | None,
        _doc("also checkpoint every N steps (always on the preemption signal); each save is cut out of the "
             "throughput window", BOOKKEEPING),
    ] = None
    collective_timeout_sec: Annotated[
        PositiveFloat, _doc("a rank waiting longer than this on its peers fails the run", BOOKKEEPING)
    ] = 600.0
    mlperf: Annotated[
        dict[str, str] | None,
        _doc("MLPerf submission fields for the event log: org, platform (default: the hardware), "
             "division (open, closed; default open), status (research, onprem, cloud, preview; "
             "default research)", BOOKKEEPING),
    ] = None

    @property
    def label(self) -> str:
        return run_label(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunSpec))
RUN_ADAPTER = TypeAdapter(RunSpec)


@functools.cache
def field_help() -> dict[str, dict[str, Any]]:
    """Per-field JSON schema (type, choices, description, role): drives CLI flags and the docs.
    Computed once (about 50 ms: every command line builds its flags from it); read it, do not
    change it."""
    return RUN_ADAPTER.json_schema()["properties"]


ROLES: dict[str, str] = {name: schema["role"] for name, schema in field_help().items()}
MEASURE_FIELDS: tuple[str, ...] = tuple(n for n in RUN_FIELDS if ROLES[n] == MEASURE)
# Settings a resumed run may change: they alter nothing that is computed or measured.
RESUMABLE_FIELDS: frozenset[str] = frozenset(n for n in RUN_FIELDS if ROLES[n] == BOOKKEEPING)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(RunSpec)}


# The flags named in the project's CLI contract; every other field gets --field-name.
FLAG_ALIASES = {"micro_batch_size": "--micro-batch", "accumulation_steps": "--accumulation"}


def flag_for(field_name: str) -> str:
    return FLAG_ALIASES.get(field_name, "--" + field_name.replace("_", "-"))


def default_of(name: str, settings: dict[str, Any]) -> Any:
    """A field's default as a resolved spec holds it (the LR default depends on the optimizer)."""
    if name == "lr":
        return DEFAULT_LR.get(settings.get("optimizer") or "", None)
    return DEFAULTS[name]


def _at_default(name: str, value: Any, settings: dict[str, Any]) -> bool:
    # An unresolved spec's lr is None: the optimizer's default LR, once resolved.
    return value == default_of(name, settings) or (name == "lr" and value is None)


def measured_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The ``measure`` fields of a spec dict (a record's ``provenance.config``); fields the dict
    lacks (a record written before the field existed) take their defaults."""
    return {name: config[name] if name in config else default_of(name, config) for name in MEASURE_FIELDS}


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings that differ between a checkpoint's spec and the resuming one, bookkeeping aside."""
    names = (saved.keys() | current.keys()) - RESUMABLE_FIELDS
    return sorted(n for n in names if saved.get(n) != current.get(n))


def recipe_label(optimizer: Any, scaling_rule: Any = "none", warmup_epochs: Any = 0) -> str:
    """The large-batch recipe, the axis a study compares: ``lars``, ``sgd-linear``,
    ``lars+warmup2`` (warm-up length in epochs). The one format every table and label uses."""
    name = str(optimizer or "?")
    if scaling_rule not in (None, "none"):
        name += f"-{scaling_rule}"
    if warmup_epochs:
        name += f"+warmup{float(warmup_epochs):g}"
    return name


# Shown in a label's head; every other measure field appears when it is not at its default.
_HEAD = (
    "backend", "model", "image_size", "dataset", "global_batch_size", "world_size", "micro_batch_size",
    "accumulation_steps", "optimizer", "scaling_rule", "warmup_epochs",
)  # fmt: skip


def short_label(settings: dict[str, Any]) -> str:
    """The head of ``run_label``: backend, model, image size, data, batch split and recipe."""
    s = measured_settings(settings)
    recipe = recipe_label(s["optimizer"], s["scaling_rule"], s["warmup_epochs"])
    batch = f"gb{s['global_batch_size']}={s['world_size']}x{s['micro_batch_size']}x{s['accumulation_steps']}"
    return f"{s['backend']}-{s['model']}-{s['image_size']}px-{s['dataset']}-{batch}-{recipe}"


def run_label(settings: dict[str, Any]) -> str:
    """A run's label: ``ddp-resnet50-32px-synthetic-gb64=2x16x2-lars+warmup2`` (global batch =
    ranks × micro-batch × accumulation) followed by every other ``measure`` setting that is not
    at its default (``-precision=bf16-data_workers=4``). Two different settings therefore never
    share a label."""
    s = measured_settings(settings)
    head = short_label(s)
    extras = [
        f"{name}={_compact(value)}"
        for name, value in s.items()
        if name not in _HEAD and not _at_default(name, value, s)
    ]
    return "-".join([head, *extras])


def _compact(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
