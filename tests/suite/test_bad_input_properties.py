"""Bad input for ``run``, ``data generate`` and ``comm``, generated: malformed experiments,
random flag values, broken input files, odd paths and outputs that cannot be written. Each one
ends with a single line naming the key and the fix, exit status 2, no traceback, and nothing
written (or the command's whole output, where the input was fine after all)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from larsbench.core.spec import RUN_FIELDS, field_help, flag_for
from larsbench.main import build_parser, main
from tests.bad_input import (
    INPUT_KINDS, NAMES, OUTPUT_KINDS, can_mount, check_clean, check_refused, make_input, make_output, snapshot, tiny_disk,
)  # fmt: skip
from tests.conftest import larsbench

SIZE_FIELDS = ["image_size", "world_size", "micro_batch_size", "accumulation_steps", "num_classes",
               "synthetic_samples", "steps", "eval_every_epochs", "log_every_steps"]  # fmt: skip
NAMES = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
WRONG_TYPED = st.one_of(NAMES.map(lambda s: s + "!"), st.lists(st.integers(), max_size=2), st.booleans(), st.just({"a": 1}))


def _unknown_key():
    return NAMES.filter(lambda k: k not in RUN_FIELDS).map(lambda k: {"defaults": {k + "_x": 1}})


def _wrong_type():
    return st.tuples(st.sampled_from(SIZE_FIELDS + ["lr", "epochs", "momentum"]), WRONG_TYPED).map(
        lambda kv: {"defaults": {kv[0]: kv[1]}}
    )


def _non_positive():
    return st.tuples(st.sampled_from(SIZE_FIELDS), st.integers(-1000, 0)).map(lambda kv: {"defaults": {kv[0]: kv[1]}})


def _bad_batch_arithmetic():
    return st.tuples(st.integers(1, 8), st.integers(1, 64), st.integers(1, 8), st.integers(1, 10_000)).filter(
        lambda t: t[0] * t[1] * t[2] != t[3]
    ).map(lambda t: {"defaults": {"world_size": t[0], "micro_batch_size": t[1], "accumulation_steps": t[2], "global_batch_size": t[3]}})


def _unknown_choice():
    return st.tuples(st.sampled_from(["model", "backend", "dataset", "optimizer", "scaling_rule", "device"]), NAMES).map(
        lambda kv: {"defaults": {kv[0]: "no-such-" + kv[1]}}
    )


def _missing_data_dir():
    return NAMES.map(lambda n: {"defaults": {"dataset": "imagefolder", "data_dir": f"/nonexistent/{n}"}})


def _bad_structure():
    return st.sampled_from([
        {"runs": []}, {"runs": "resnet50"}, {"runs": [["x"]]}, {"sweep": {"optimizer": "lars"}},
        {"sweep": {"optimizer": []}}, {"defaults": ["model"]}, {"name": 3}, {"colour": "red"},
    ])  # fmt: skip


EXPERIMENTS = st.one_of(_unknown_key(), _wrong_type(), _non_positive(), _bad_batch_arithmetic(),
                        _unknown_choice(), _missing_data_dir(), _bad_structure()).map(yaml.safe_dump)  # fmt: skip
UNREADABLE = st.sampled_from(["", "   \n", "defaults: {model: [\n", "- a\n- b\n", "just a string\n", "defaults:\n  model: x\n\tbad: tab\n", "\x00\x01"])


def check_experiment_refused(tmp_path, capsys, text):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(experiment), "--output", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("larsbench: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    key_and_message = lines[0].removeprefix("larsbench: error: ")
    assert ": " in key_and_message  # "<key>: <what is wrong and how to fix it>"
    assert not out.exists() or not any(out.iterdir())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=EXPERIMENTS)
def test_malformed_experiments_are_refused_cleanly(tmp_path, capsys, text):
    check_experiment_refused(tmp_path, capsys, text)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=UNREADABLE)
def test_unreadable_files_are_refused_cleanly(tmp_path, capsys, text):
    check_experiment_refused(tmp_path, capsys, text)


# --- random flag values ----------------------------------------------------------------------

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NOWHERE = "/proc/larsbench-test/out"  # an output that cannot be made: valid settings stop there, before any work
SCHEMAS = field_help()
FLAG_FIELDS = [name for name in RUN_FIELDS if name != "repeat"]


def _kind(schema: dict) -> dict:
    return next(s for s in schema.get("anyOf", [schema]) if s.get("type") != "null")


def flag_names(command: str) -> set[str]:
    """Every option string of a sub-command (the keys its errors may name)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def _out_of_bounds(schema: dict, value: float) -> bool:
    kind = _kind(schema)
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return (
        ("minimum" in kind and value < kind["minimum"]) or ("exclusiveMinimum" in kind and value <= kind["exclusiveMinimum"])
        or ("maximum" in kind and value > kind["maximum"]) or ("exclusiveMaximum" in kind and value >= kind["exclusiveMaximum"])
    )  # fmt: skip


NUMBERS = st.one_of(st.integers(-5, 5), st.integers(), st.integers(-(2**80), 2**80))
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.5, 1.0]))


@st.composite
def flag_value(draw):
    """(field, the command-line words, whether the value is invalid on its own)."""
    name = draw(st.sampled_from(FLAG_FIELDS))
    schema = SCHEMAS[name]
    kind = _kind(schema)
    flag = flag_for(name)
    if kind.get("type") == "boolean":
        return name, [draw(st.sampled_from([flag, "--no-" + flag[2:]]))], False
    if "enum" in kind:
        text = draw(st.one_of(st.sampled_from(kind["enum"]), st.text(max_size=8)))
        return name, [f"{flag}={text}"], text not in kind["enum"]
    if kind.get("type") == "integer":
        value = draw(NUMBERS)
        return name, [f"{flag}={value}"], _out_of_bounds(schema, value)
    if kind.get("type") == "number":
        value = draw(FLOATS)
        return name, [f"{flag}={value!r}"], _out_of_bounds(schema, value)
    if kind.get("type") == "object":
        text = draw(st.one_of(st.text(max_size=10), st.sampled_from(["{}", "[]", "null", "3", '{"a": 1}', "{", '"x"'])))
        try:
            value = json.loads(text)
        except ValueError:
            return name, [f"{flag}={text}"], True
        invalid = not isinstance(value, (dict, type(None)))
        if isinstance(value, dict) and kind.get("additionalProperties") == {"type": "string"}:
            invalid = any(not isinstance(v, str) for v in value.values())  # conditions, mlperf: name → text
        return name, [f"{flag}={text}"], invalid
    text = draw(st.text(max_size=10))
    return name, [f"{flag}={text}"], len(text) < kind.get("minLength", 0)


@MANY
@given(flags=st.lists(flag_value(), min_size=1, max_size=3, unique_by=lambda f: f[0]))
# Found by a CI run: a mapping of names to text with a number in it is as bad as the other flag.
@example(flags=[("conditions", ['--conditions={"":0}'], True), ("synthetic_samples", ["--synthetic-samples=0"], True)])
def test_run_flag_values(flags):
    words = [word for _, flag, _ in flags for word in flag]
    result = larsbench("run", *words, "--output", NOWHERE)
    keys = flag_names("run") | set(RUN_FIELDS)
    key = check_refused(result, keys)
    bad = [flag_for(name) for name, _, invalid in flags if invalid]
    if bad:
        assert key in bad, f"{key} named, but {bad} are invalid: {result.stderr}"


NUMBER_FIELDS = [name for name in FLAG_FIELDS if _kind(SCHEMAS[name]).get("type") in ("integer", "number")]


@MANY
@given(name=st.sampled_from(NUMBER_FIELDS), value=st.one_of(st.sampled_from([math.inf, -math.inf, math.nan, 0, -1, 2**63, 1e300]), FLOATS, NUMBERS))
def test_run_number_values(name, value):
    schema = SCHEMAS[name]
    integer = _kind(schema).get("type") == "integer"
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    result = larsbench("run", f"{flag_for(name)}={value!r}", "--output", NOWHERE)
    key = check_refused(result, flag_names("run") | set(RUN_FIELDS))
    if (integer and not isinstance(value, int)) or _out_of_bounds(schema, value):
        assert key == flag_for(name), result.stderr


@MANY
@given(repeats=NUMBERS, run_id=st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["..", ".", "a/b", "../x", "", "-x", "a\nb"])))
def test_run_repeats_and_run_id(repeats, run_id):
    args = ["--model", "tiny_cnn", "--steps", "1", f"--repeats={repeats}"]
    if run_id is not None:
        args.append(f"--run-id={run_id}")
    result = larsbench("run", *args, "--output", NOWHERE)
    key = check_refused(result, ("--repeats", "--run-id", "--output"))
    if not 1 <= repeats <= 1000:
        assert key == "--repeats", result.stderr
    elif run_id is not None and (repeats > 1 or run_id in ("", ".", "..") or "/" in run_id or not run_id.strip() or any(c in run_id for c in "\n\r\0")):
        assert key == "--run-id", result.stderr


GOOD_EXPERIMENT = yaml.safe_dump({"name": "tiny", "defaults": {"model": "tiny_cnn", "dataset": "synthetic", "steps": 1, "micro_batch_size": 4}}).encode()


@FEW
@given(kind=st.sampled_from(INPUT_KINDS), name=NAMES, cut=st.floats(0.05, 0.999), command=st.sampled_from(["run", "slurm"]))
def test_run_and_slurm_with_a_bad_experiment_file(tmp_path, kind, name, cut, command):
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = make_input(kind, folder / name, GOOD_EXPERIMENT, cut)
    before = snapshot(folder)
    result = larsbench(command, path, "--output", NOWHERE)
    keys = {str(path), "--output", "name", "defaults", "runs", "sweep"} | {f"defaults.{k}" for k in RUN_FIELDS}
    key = check_refused(result, keys)
    if kind not in ("truncated", "non_utf8"):
        assert key == str(path), result.stderr
    assert snapshot(folder) == before


needs_mount = pytest.mark.skipif(not can_mount(), reason="a full disk is a tmpfs: mounting one needs root (CI runs as root)")


# Valid settings: only the output is wrong.
WRITERS = {
    "run": ["run", "--model", "tiny_cnn", "--steps", "1"],
    "comm": ["comm", "--backend", "ddp", "--world-size", "1", "--iterations", "3", "--max-bytes", "4K"],
}


@needs_mount
@FEW
@given(kind=st.sampled_from(OUTPUT_KINDS), name=NAMES, command=st.sampled_from(sorted(WRITERS)))
def test_run_and_comm_into_a_bad_output(tmp_path, kind, name, command):
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    with tiny_disk(0) as disk:
        out = make_output(kind, tmp_path / "case", name, disk)
        before = snapshot(tmp_path / "case", disk)
        result = larsbench(*WRITERS[command], "--output", out)
        check_refused(result, ("--output",))
        assert snapshot(tmp_path / "case", disk) == before


# --- data generate -----------------------------------------------------------------------------

SMALL = st.integers(-2, 3)
GENERATE_FLAGS = ("num_classes", "train_per_class", "val_per_class", "image_size", "seed")


def generate_invalid(name: str, value: int) -> bool:
    if name == "seed":
        return value < 0
    if name == "image_size":
        return not 1 <= value <= 4096
    return value < (2 if name == "num_classes" else 1)


def check_generated(root: Path, values: dict[str, int]) -> None:
    assert json.loads((root / "larsbench-generated.json").read_text())["num_classes"] == values["num_classes"]
    for split, per_class in (("train", values["train_per_class"]), ("val", values["val_per_class"])):
        classes = sorted(p.name for p in (root / split).iterdir())
        assert len(classes) == values["num_classes"]
        assert all(len(list((root / split / c).glob("*.jpg"))) == per_class for c in classes)
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == [], "staging left behind"


@MANY
@given(values=st.fixed_dictionaries({name: st.one_of(SMALL, NUMBERS) for name in GENERATE_FLAGS}), name=NAMES)
def test_data_generate_flag_values(tmp_path, values, name):
    small = all(-2 <= v <= 3 for v in values.values())
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    root = folder / name if small else Path(NOWHERE)  # a large valid set would take long: stop at the folder
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in values.items()]
    result = larsbench("data", "generate", root, *flags)
    invalid = [f"--{k.replace('_', '-')}" for k, v in values.items() if generate_invalid(k, v)]
    if result.returncode == 0:
        assert not invalid and small, result.stdout
        check_generated(root, values)
        return
    key = check_refused(result, {*(f"--{k.replace('_', '-')}" for k in GENERATE_FLAGS), "directory"})
    if invalid:
        assert key in invalid, result.stderr
    assert not root.exists()


@needs_mount
@FEW
@given(kind=st.one_of(st.sampled_from(OUTPUT_KINDS), st.sampled_from(["fine", "not_empty"])), name=NAMES, free=st.sampled_from([0, 4, 16, 48]))
def test_data_generate_into_a_bad_directory(tmp_path, kind, name, free):
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    values = {"num_classes": 2, "train_per_class": 3, "val_per_class": 2, "image_size": 64, "seed": 0}
    with tiny_disk(free) as disk:
        if kind in ("fine", "not_empty"):
            root = tmp_path / "case" / name
            root.mkdir(parents=True)
            if kind == "not_empty":
                (root / "mine.txt").write_text("keep")
        else:
            root = make_output(kind, tmp_path / "case", name, disk) / "set"
        before = snapshot(tmp_path / "case", disk)
        result = larsbench("data", "generate", root, *[f"--{k.replace('_', '-')}={v}" for k, v in values.items()])
        check_clean(result)
        if result.returncode == 0:
            assert kind in ("fine", "full"), result.stdout
            check_generated(root, values)
        else:
            check_refused(result, ("directory",))
            assert snapshot(tmp_path / "case", disk) == before


# --- comm --------------------------------------------------------------------------------------

SIZES = st.one_of(st.sampled_from(["4K", "256M", "1", "0", "-4K", "4Q", "1e3", "", "  8 k ", "99999999999999999999G"]), st.text(max_size=6), NUMBERS.map(str))


@MANY
@given(
    world=NUMBERS, iterations=NUMBERS, low=SIZES, high=SIZES,
    operations=st.one_of(st.sampled_from(["all_reduce", "broadcast,all_gather", ",", "", "reduce_scatter"]), st.text(max_size=10)),
    backends=st.lists(st.one_of(st.sampled_from(["ddp", "deepspeed", "horovod"]), st.text(max_size=6)), max_size=2),
    device=st.one_of(st.sampled_from(["auto", "cpu", "cuda"]), st.text(max_size=4)),
)  # fmt: skip
def test_comm_flag_values(world, iterations, low, high, operations, backends, device):
    args = [f"--world-size={world}", f"--iterations={iterations}", f"--min-bytes={low}", f"--max-bytes={high}",
            f"--operations={operations}", f"--device={device}", *[f"--backend={b}" for b in backends]]  # fmt: skip
    result = larsbench("comm", *args, "--output", NOWHERE)
    key = check_refused(result, flag_names("comm"))
    if world < 1:
        assert key in ("--world-size", "--device"), result.stderr
    if device not in ("auto", "cpu", "cuda"):
        assert key == "--device", result.stderr
