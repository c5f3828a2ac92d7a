"""Experiments as data: YAML (and command-line flags) in, validated ``RunSpec`` objects out.

An experiment file has ``defaults`` (settings shared by every run), an optional ``runs`` list
(each entry overrides the defaults for one family of runs) and an optional ``sweep`` (a
cartesian product of values applied to every entry of ``runs``). Command-line flags override
everything. Every resolved cell becomes one frozen ``RunSpec``.

Top-level keys that start with ``_`` are ignored: they hold YAML anchors (``&lars``) that
runs merge in with ``<<: *lars``.

Errors name the place the bad value came from (``runs[1].image_size``, ``sweep.optimizer``,
``--micro-batch``) so the fix is obvious.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError

from suite.errors import ConfigError

PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Text = Annotated[str, Strict(), Field(min_length=1)]


def _doc(text: str) -> Any:
    return Field(description=text)


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
    data_dir: Annotated[Text | None, _doc("ImageFolder root holding train/ and val/")] = None
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
    optimizer: Annotated[Literal["lars", "sgd"], _doc("LARS or momentum SGD")] = "lars"
    lr: Annotated[
        PositiveFloat | None,
        _doc("base learning rate before the scaling rule (default: lars 2.0, sgd 0.1)"),
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
    seed: Annotated[NonNegativeInt, _doc("seed for weights, data order and synthetic data")] = 0
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
    compile: Annotated[
        bool,
        _doc("torch.compile the model before the backend wraps it: faster steps after a one-off "
             "compile of seconds to minutes per rank, inside the timing warm-up steps"),
    ] = False
    data_workers: Annotated[NonNegativeInt, _doc("DataLoader worker processes per rank")] = 1
    synthetic_samples: Annotated[PositiveInt, _doc("size of the synthetic train set")] = 1024
    train_images_per_class: Annotated[PositiveInt, _doc("generated set: train images/class")] = 64
    val_images_per_class: Annotated[PositiveInt, _doc("generated set: val images/class")] = 16
    timing_warmup_steps: Annotated[
        NonNegativeInt, _doc("optimizer steps left out of the throughput window")
    ] = 2
    log_every_steps: Annotated[
        PositiveInt, _doc("steps between loss reductions (progress, divergence check)")
    ] = 10
    telemetry_every_steps: Annotated[
        NonNegativeInt | None,
        _doc("LARS telemetry (per-layer norms, trust ratio, effective LR) every N steps; "
             "0 turns it off; default: about 200 records per run"),
    ] = None
    checkpoint_every_steps: Annotated[
        PositiveInt | None, _doc("also checkpoint every N steps (always on the preemption signal)")
    ] = None
    collective_timeout_sec: Annotated[
        PositiveFloat, _doc("a rank waiting longer than this on its peers fails the run")
    ] = 600.0

    @property
    def label(self) -> str:
        rule = "" if self.scaling_rule == "none" else f"-{self.scaling_rule}"
        warmup = "-warmup" if self.warmup_epochs else ""
        return (
            f"{self.backend}-{self.model}-{self.dataset}-w{self.world_size}"
            f"-gb{self.global_batch_size}-{self.optimizer}{rule}{warmup}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunSpec))

# The flags named in the project's CLI contract; every other field gets --field-name.
FLAG_ALIASES = {"micro_batch_size": "--micro-batch", "accumulation_steps": "--accumulation"}


def flag_for(field_name: str) -> str:
    return FLAG_ALIASES.get(field_name, "--" + field_name.replace("_", "-"))


DEFAULT_LR = {"lars": 2.0, "sgd": 0.1}

# Smallest input each model accepts: AlexNet's stride-4 stem and three max-pools leave no
# feature map below 63 px.
MODEL_MIN_IMAGE_SIZE = {"resnet50": 32, "alexnet": 63, "alexnet_bn": 63, "alexnet_bn_mini": 16, "tiny_cnn": 8}

_RUN_ADAPTER = TypeAdapter(RunSpec)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    output: str | None
    runs: tuple[RunSpec, ...]


# "slurm" holds the allocation for `larsbench slurm` (read by slurm/, ignored by local runs).
EXPERIMENT_KEYS = ("name", "description", "output", "defaults", "runs", "sweep", "slurm")

BUNDLED_DIR = Path(__file__).parent / "experiments"


def bundled_experiment(name: str = "default") -> Path:
    return BUNDLED_DIR / f"{name}.yaml"


def load_experiment(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Experiment:
    """Read an experiment file (or none: one run from the flags) and resolve every run."""
    overrides = overrides or {}
    if path is None:
        doc: dict[str, Any] = {"name": "cli", "defaults": {}}
        source = "command line"
    else:
        source = str(path)
        doc = _read_yaml(Path(path))
    return resolve_experiment(doc, overrides, source)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(str(path), "no such experiment file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the experiment file ({exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(str(path), f"not valid YAML{where}: {problem}") from None
    if doc is None:
        raise ConfigError(str(path), "the experiment file is empty; give at least 'defaults:'")
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "an experiment must be a YAML mapping (key: value lines)")
    return doc


def resolve_experiment(doc: dict[str, Any], overrides: dict[str, Any], source: str) -> Experiment:
    _check_keys(doc, EXPERIMENT_KEYS, source)
    name = _optional_text(doc, "name", source) or Path(source).stem
    description = _optional_text(doc, "description", source) or ""
    output = _optional_text(doc, "output", source)

    defaults = _mapping(doc.get("defaults", {}), "defaults")
    runs = doc.get("runs", [{}])
    if not isinstance(runs, list) or not runs:
        raise ConfigError("runs", "must be a non-empty list of mappings, e.g. '- model: alexnet'")
    runs = [_mapping(run, f"runs[{i}]") for i, run in enumerate(runs)]
    sweep = _mapping(doc.get("sweep", {}), "sweep")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}", "must be a non-empty list of values, e.g. [lars, sgd]")

    layers: list[tuple[str, dict[str, Any]]] = [("defaults", defaults)]
    specs: list[RunSpec] = []
    for i, run in enumerate(runs):
        for combo in itertools.product(*sweep.values()):
            cell_layers = [
                *layers,
                (f"runs[{i}]", run),
                ("sweep", dict(zip(sweep.keys(), combo))),
                ("flags", overrides),
            ]
            spec = build_spec(cell_layers)
            if spec not in specs:
                specs.append(spec)
    return Experiment(name=name, description=description, output=output, runs=tuple(specs))


def build_spec(layers: list[tuple[str, dict[str, Any]]]) -> RunSpec:
    """Merge layered settings (later wins), validate them, and fill derived fields."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer_name, values in layers:
        for key, value in values.items():
            merged[key] = value
            origin[key] = flag_for(key) if layer_name == "flags" else f"{layer_name}.{key}"
    try:
        spec = _RUN_ADAPTER.validate_python(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        where = origin.get(field, field)
        got = f" (got {error['input']!r})" if "input" in error else ""
        raise ConfigError(where, f"{error['msg']}{got}") from None
    return check_spec(spec, origin)


def check_spec(spec: RunSpec, origin: dict[str, str] | None = None) -> RunSpec:
    """Rules that span several fields or need the registries; returns the resolved spec."""
    origin = origin or {}

    def where(field: str) -> str:
        return origin.get(field, field)

    if spec.global_batch_size is not None and "accumulation_steps" not in origin:
        spec = _resolve_accumulation(spec, where("global_batch_size"))
    product = spec.world_size * spec.micro_batch_size * spec.accumulation_steps
    if spec.global_batch_size is not None and spec.global_batch_size != product:
        raise ConfigError(
            where("global_batch_size"),
            f"{spec.global_batch_size} != world_size × micro_batch_size × accumulation_steps = "
            f"{spec.world_size} × {spec.micro_batch_size} × {spec.accumulation_steps} = {product};"
            " change one of them or drop global_batch_size",
        )
    if spec.model not in MODEL_MIN_IMAGE_SIZE:
        raise ConfigError(
            where("model"),
            f"unknown model {spec.model!r}; choose one of {', '.join(MODEL_MIN_IMAGE_SIZE)}",
        )
    min_size = MODEL_MIN_IMAGE_SIZE[spec.model]
    if spec.image_size < min_size:
        raise ConfigError(
            where("image_size"),
            f"{spec.model} needs images of at least {min_size} px, got {spec.image_size}",
        )
    from backends.registry import backend_names, get_backend  # keeps backends out of import time

    names = backend_names()
    if spec.backend not in names:
        raise ConfigError(
            where("backend"), f"unknown backend {spec.backend!r}; choose one of {', '.join(names)}"
        )
    backend = get_backend(spec.backend)
    try:
        backend.check_available()
        backend.check_options(spec.backend_config or {}, spec.optimizer)
    except ConfigError as exc:  # re-key to where the setting came from
        field = "backend_config" if exc.key.startswith("backend_config") else "backend"
        raise ConfigError(where(field) + exc.key[len(field) :], exc.message) from None
    if spec.dataset == "imagefolder":
        _check_imagefolder(spec, where("data_dir"))
    else:
        size_field = "synthetic_samples" if spec.dataset == "synthetic" else "train_images_per_class"
        samples = (
            spec.synthetic_samples
            if spec.dataset == "synthetic"
            else spec.train_images_per_class * spec.num_classes
        )
        if samples < product:
            raise ConfigError(
                where(size_field),
                f"the {spec.dataset} train set has {samples} images, fewer than one global batch "
                f"({product}); raise {size_field} or lower the batch",
            )
    if spec.steps is None and spec.warmup_epochs >= spec.epochs:
        raise ConfigError(
            where("warmup_epochs"),
            f"warm-up ({spec.warmup_epochs} epochs) must be shorter than training "
            f"({spec.epochs} epochs)",
        )
    try:
        backend.check_precision(spec.precision, spec.channels_last, spec.device, spec.backend_config or {})
    except ConfigError as exc:  # re-key to where the setting came from
        field = "backend_config" if exc.key.startswith("backend_config") else exc.key
        raise ConfigError(where(field) + exc.key[len(field) :], exc.message) from None
    if spec.compile and spec.device != "auto":
        from suite.precision import compile_toolchain_missing

        if (why := compile_toolchain_missing(spec.device)) is not None:
            raise ConfigError(where("compile"), why)
    return dataclasses.replace(
        spec,
        global_batch_size=product,
        lr=spec.lr if spec.lr is not None else DEFAULT_LR[spec.optimizer],
    )


def _resolve_accumulation(spec: RunSpec, key: str) -> RunSpec:
    """Micro-batch and accumulation for a requested global batch: each rank's share in
    micro-batches of at most ``micro_batch_size``, so one setting sweeps 16 to 32K."""
    batch, world, micro = spec.global_batch_size, spec.world_size, spec.micro_batch_size
    assert batch is not None
    if batch % world:
        raise ConfigError(key, f"{batch} does not split evenly over world_size {world}; choose a multiple of {world}")
    share = batch // world
    if share <= micro:
        return dataclasses.replace(spec, micro_batch_size=share, accumulation_steps=1)
    if share % micro:
        raise ConfigError(
            key,
            f"each rank's share ({batch} / {world} = {share}) is not a multiple of micro_batch_size {micro};"
            " choose a micro_batch_size that divides it, or set accumulation_steps",
        )
    return dataclasses.replace(spec, accumulation_steps=share // micro)


def _check_imagefolder(spec: RunSpec, key: str) -> None:
    if spec.data_dir is None:
        raise ConfigError(key, "dataset 'imagefolder' needs data_dir (a folder with train/ and val/)")
    root = Path(spec.data_dir).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ConfigError(
                key,
                f"{root / split} is not a directory; data_dir must hold train/ and val/ "
                "with one sub-folder per class (ImageNet layout)",
            )


def _check_keys(mapping: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in valid and not str(key).startswith("_"):
            raise ConfigError(where, _unknown(str(key), valid))


def _unknown(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {key!r}; {hint}"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, "must be a mapping of run settings (key: value)")
    for key in value:
        if key not in RUN_FIELDS:
            raise ConfigError(f"{where}.{key}", _unknown(str(key), RUN_FIELDS))
    return value


def _optional_text(doc: dict[str, Any], key: str, source: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(key, f"must be a string (in {source})")
    return value


def field_help() -> dict[str, dict[str, Any]]:
    """Per-field JSON schema (type, choices, description): drives CLI flags and the docs."""
    return _RUN_ADAPTER.json_schema()["properties"]
