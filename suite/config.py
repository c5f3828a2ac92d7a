"""Experiments as data: YAML (and command-line flags) in, validated ``RunSpec`` objects out.

An experiment file has ``defaults`` (settings shared by every run), an optional ``runs`` list
(each entry overrides the defaults for one family of runs) and an optional ``sweep`` (a
cartesian product of values applied to every entry of ``runs``). Command-line flags override
everything. Every resolved cell becomes one frozen ``RunSpec``.

Top-level keys that start with ``_`` are ignored: they hold YAML anchors (``&lars``) that
runs merge in with ``<<: *lars``.

Repeats (``repeats: N``, ``--repeats N``) run every cell N times, each repeat with its own seed
unless the cell holds it (``suite.repeats``); ``repeats: auto`` runs each cell's first repeat
and leaves the rest to an adaptive series (``repeats_target``, ``repeats_max``).

Errors name the place the bad value came from (``runs[1].image_size``, ``sweep.optimizer``,
``--micro-batch``) so the fix is obvious.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from larsbench.core.errors import ConfigError
from larsbench.core.files import not_a_file
from larsbench.core.spec import DEFAULT_LR, RUN_ADAPTER, RUN_FIELDS, RunSpec, flag_for
from larsbench.suite.repeats import AutoRepeats, parse_most, parse_repeats, parse_target, repeat_of

@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    output: str | None
    runs: tuple[RunSpec, ...]
    auto: AutoRepeats | None = None  # repeats: auto: ``runs`` holds each cell's first repeat


# "slurm" holds the allocation for `larsbench slurm` (read by slurm/, ignored by local runs).
EXPERIMENT_KEYS = ("name", "description", "output", "repeats", "repeats_target", "repeats_max", "mlperf", "defaults", "runs",
                   "sweep", "slurm")  # fmt: skip
MLPERF_KEYS = {"org": None, "platform": None, "division": ("open", "closed"), "status": ("research", "onprem", "cloud", "preview")}
MAX_REPEATS = 1000
# Experiments are a few KiB; a file far larger is a wrong path, and YAML would hold it all.
MAX_EXPERIMENT_BYTES = 16 * 2**20

BUNDLED_DIR = Path(__file__).parent / "experiments"


def bundled_experiment(name: str = "default") -> Path:
    return BUNDLED_DIR / f"{name}.yaml"


def load_experiment(
    path: str | Path | None, overrides: dict[str, Any] | None = None, repeats: int | str | None = None,
    target: str | None = None, most: int | None = None,
) -> Experiment:
    """Read an experiment file (or none: one run from the flags) and resolve every run;
    ``repeats``, ``target`` and ``most`` (``--repeats``, ``--repeats-target``, ``--repeats-max``)
    override the file's."""
    overrides = overrides or {}
    if path is None:
        doc: dict[str, Any] = {"name": "cli", "defaults": {}}
        source = "command line"
    else:
        source = str(path)
        doc = read_experiment_file(Path(path))
    return resolve_experiment(doc, overrides, source, repeats, target, most)


def read_experiment_file(path: Path) -> dict[str, Any]:
    why = not_a_file(path)
    if why == "no such file":
        raise ConfigError(str(path), "no such experiment file; check the path")
    if why is not None:  # a pipe or device would block or never end: never opened
        raise ConfigError(str(path), f"{why}; give an experiment YAML file")
    try:
        if path.stat().st_size > MAX_EXPERIMENT_BYTES:
            raise ConfigError(str(path), f"{path.stat().st_size} bytes is not an experiment (at most {MAX_EXPERIMENT_BYTES // 2**20} MiB); check the path")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the experiment file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not a text file (byte {exc.start} is not UTF-8); give an experiment YAML file") from None
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


def resolve_experiment(
    doc: dict[str, Any], overrides: dict[str, Any], source: str, repeats: int | str | None = None,
    target: str | None = None, most: int | None = None,
) -> Experiment:  # fmt: skip
    """Every cell of the experiment (runs × sweep, flags on top), each ``repeats`` times with
    its repeat index and seed (``suite.repeats.repeat_of``): N records per setting, the sample
    the reports' statistics need; with ``auto``, each cell's first repeat and the series' rule."""
    _check_keys(doc, EXPERIMENT_KEYS, source)
    count, auto = _repeats(doc, repeats, target, most)
    name = _optional_text(doc, "name", source) or Path(source).stem
    description = _optional_text(doc, "description", source) or ""
    output = _optional_text(doc, "output", source)

    defaults = _mapping(doc.get("defaults", {}), "defaults")
    if "mlperf" in doc:  # the experiment's MLPerf submission fields hold for every run
        defaults = {**defaults, "mlperf": doc["mlperf"]}
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
            for repeat in range(count):
                copy = repeat_of(spec, repeat)
                if copy not in specs:
                    specs.append(copy)
    return Experiment(name=name, description=description, output=output, runs=tuple(specs), auto=auto)


def _repeats(doc: dict[str, Any], repeats: int | str | None, target: str | None, most: int | None) -> tuple[int, AutoRepeats | None]:
    """Repeats per cell, and the adaptive rule for ``auto`` (flags win over the file)."""
    where = "repeats" if repeats is None else "--repeats"
    count = parse_repeats(doc.get("repeats", 1) if repeats is None else repeats, where, MAX_REPEATS, text=repeats is not None)
    given = {"repeats_target": (target, "--repeats-target"), "repeats_max": (most, "--repeats-max")}
    values = {}
    for key, (flag_value, flag) in given.items():
        value, place = (doc.get(key), key) if flag_value is None else (flag_value, flag)
        if value is not None and count is not None:
            raise ConfigError(place, f"applies to adaptive repeats only; set repeats to auto (or drop {place})")
        values[key] = (value, place)
    if count is not None:
        return count, None
    target_value, target_place = values["repeats_target"]
    most_value, most_place = values["repeats_max"]
    auto = AutoRepeats(
        parse_target(target_value, target_place) if target_value is not None else AutoRepeats.target,
        parse_most(most_value, most_place, MAX_REPEATS) if most_value is not None else AutoRepeats.most,
    )  # fmt: skip
    return 1, auto


def build_spec(layers: list[tuple[str, dict[str, Any]]]) -> RunSpec:
    """Merge layered settings (later wins), validate them, and fill derived fields."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer_name, values in layers:
        for key, value in values.items():
            merged[key] = value
            origin[key] = flag_for(key) if layer_name == "flags" else f"{layer_name}.{key}"
    try:
        spec = RUN_ADAPTER.validate_python(merged)
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
    from larsbench.workloads.models import MIN_IMAGE_SIZE  # torch loads only when checking

    if spec.model not in MIN_IMAGE_SIZE:
        raise ConfigError(
            where("model"),
            f"unknown model {spec.model!r}; choose one of {', '.join(MIN_IMAGE_SIZE)}",
        )
    min_size = MIN_IMAGE_SIZE[spec.model]
    if spec.image_size < min_size:
        raise ConfigError(
            where("image_size"),
            f"{spec.model} needs images of at least {min_size} px, got {spec.image_size}",
        )
    from larsbench.workloads.optimizers import optimizer_names  # torch loads only when checking

    if spec.optimizer not in optimizer_names():
        raise ConfigError(where("optimizer"), f"unknown optimizer {spec.optimizer!r}; choose one of {', '.join(optimizer_names())}")
    if spec.lr is None and spec.optimizer not in DEFAULT_LR:
        raise ConfigError(where("lr"), f"the {spec.optimizer} optimizer has no default base LR; set lr")
    from larsbench.backends.registry import backend_names, get_backend  # torch and the backends load only when checking

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
    if spec.optimizer_sharding != "none":
        _check_sharding(spec, backend, where("optimizer_sharding"))
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
    if spec.data_loader == "gpu":
        _check_gpu_loader(spec, where("data_loader"))
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
    if spec.mlperf is not None:
        _check_mlperf(spec.mlperf, where("mlperf"))
    if _cuda_run(spec.device) and not spec.allow_host_transport and (why := backend.host_staged_on_cuda()):
        raise ConfigError(
            where("backend"),
            f"{why}, while DDP and DeepSpeed use NCCL: a comparison would not be fair; rebuild it with NCCL "
            "(bash .ci/install_horovod.sh .venv/bin/python on a machine with the CUDA toolkit) or set "
            "allow_host_transport: true",
        )
    if spec.compile and spec.device != "auto":
        from larsbench.core.precision import compile_toolchain_missing

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


def _cuda_run(device: str) -> bool:
    """Whether the run's ranks compute on CUDA (auto: where this machine has a GPU)."""
    if device == "cuda":
        return True
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def _check_sharding(spec: RunSpec, backend, key: str) -> None:
    """Sharded optimizer state needs a backend that shards it and an optimizer that trains the
    same on the pieces it is handed (its component's ``shards`` trait)."""
    from larsbench.workloads.optimizers import get_optimizer

    if not get_optimizer(spec.optimizer).shards:
        raise ConfigError(
            key,
            f"the {spec.optimizer} optimizer cannot step sharded state (it needs whole layers and does not reduce "
            "their norms across the ranks); use optimizer_sharding none with it",
        )
    try:
        backend.check_sharding(spec.optimizer_sharding, spec.channels_last)
    except ConfigError as exc:
        raise ConfigError(key, exc.message) from None


def _check_mlperf(fields: dict[str, str], key: str) -> None:
    for name, value in fields.items():
        if name not in MLPERF_KEYS:
            raise ConfigError(f"{key}.{name}", _unknown(name, tuple(MLPERF_KEYS)))
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key}.{name}", "must be non-empty text")
        allowed = MLPERF_KEYS[name]
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{key}.{name}", f"{value!r} is not one of {', '.join(allowed)} (MLPerf's values)")


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


def _check_gpu_loader(spec: RunSpec, key: str) -> None:
    """The GPU loader decodes JPEG files on a CUDA device: it needs both."""
    if spec.device == "cpu":
        raise ConfigError(key, "'gpu' decodes on a CUDA device but device is 'cpu'; set device to cuda or auto, or data_loader to cpu")
    if spec.dataset == "synthetic":
        raise ConfigError(
            key, "'gpu' decodes JPEG files, and synthetic data has none; use dataset imagefolder or generated, or data_loader cpu"
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
