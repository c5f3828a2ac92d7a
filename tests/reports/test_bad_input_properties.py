"""Generated bad input for ``report``, ``compare``, ``baseline save`` and ``history``: broken
result files, odd paths, random option values and outputs that cannot be written. Each case
ends in a report written whole or in one line naming the argument (status 2, no traceback,
no output left behind); unreadable lines are counted once per file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.bad_input import (
    INPUT_KINDS, NAMES, OUTPUT_KINDS, can_mount, check_clean, check_refused, complete_lines, make_input,
    make_output, notice_lines, snapshot, tiny_disk, unreadable_lines,
)  # fmt: skip
from tests.conftest import larsbench
from tests.reports.history_records import nightly_record
from tests.reports.report_records import record, write

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Each example of these renders a whole report (plots included) on a fresh tmpfs: ~1.5 s apiece.
RENDERS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CUTS = st.floats(0.05, 0.999)


def good_bytes(kind: str = "report") -> bytes:
    if kind == "history":
        runs = [nightly_record(night, 100.0 + night) for night in range(3)]
    else:
        runs = [record(), record(world_size=2, micro_batch_size=4)]
    return "".join(json.dumps(r) + "\n" for r in runs).encode()


def fresh(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "case"
    shutil.rmtree(folder, ignore_errors=True)
    if folder.is_symlink():
        folder.unlink()
    folder.mkdir()
    return folder / name


def expect_input(result, data: bytes | None, keys: tuple[str, ...], path: Path) -> bool:
    """The outcome a bad input should have: True when the file still had records and the
    command went on (one notice for its unreadable lines), else a refusal naming ``keys``."""
    check_clean(result)
    if data is not None and complete_lines(data):
        assert result.returncode in (0, 1), result.stdout + result.stderr
        skipped = unreadable_lines(data)
        expected = [f"larsbench: {skipped} unreadable line{'s' if skipped != 1 else ''} skipped in {path}"] if skipped else []
        assert notice_lines(result.stderr) == expected, result.stderr
        return True
    check_refused(result, keys)
    return False


def input_bytes(kind: str, path: Path) -> bytes | None:
    return path.read_bytes() if kind in ("truncated", "non_utf8", "empty", "binary") else None


def check_report_folder(out: Path, names: tuple[str, ...]) -> None:
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")) == [], "staging left behind"
    for name in names:
        assert (out / name).is_file(), f"{name} missing from {out}"
    markdown = (out / names[0]).read_text()
    for line in markdown.splitlines():
        if line.startswith("![") and "](" in line:
            assert (out / line.split("](", 1)[1].rstrip(")")).is_file(), line


# --- inputs ------------------------------------------------------------------------------------


@FEW
@given(kind=st.sampled_from(INPUT_KINDS), name=NAMES, cut=CUTS)
def test_report_of_a_bad_results_file(tmp_path, kind, name, cut):
    path = make_input(kind, fresh(tmp_path, name), good_bytes(), cut)
    out = tmp_path / "case" / "report out"
    result = larsbench("report", path, "-o", out)
    if expect_input(result, input_bytes(kind, path), ("RESULTS",), path):
        check_report_folder(out, ("report.md", "report.html"))
    else:
        assert not out.exists()


@MANY
@given(kind=st.sampled_from(INPUT_KINDS), name=NAMES, cut=CUTS, side=st.sampled_from(["BASELINE", "CURRENT"]))
def test_compare_with_a_bad_file_on_either_side(tmp_path, kind, name, cut, side):
    good = fresh(tmp_path, "good.jsonl")
    good.write_bytes(good_bytes())
    bad = make_input(kind, good.with_name(name), good_bytes(), cut)
    args = (bad, good) if side == "BASELINE" else (good, bad)
    result = larsbench("compare", *args)
    expect_input(result, input_bytes(kind, bad), (side,), bad)


@MANY
@given(kind=st.sampled_from(INPUT_KINDS), name=NAMES, cut=CUTS)
def test_baseline_save_from_a_bad_file(tmp_path, kind, name, cut):
    path = make_input(kind, fresh(tmp_path, name), good_bytes(), cut)
    out = path.with_name("baseline.jsonl")
    result = larsbench("baseline", "save", path, "-o", out)
    if expect_input(result, input_bytes(kind, path), ("RESULTS",), path):
        assert result.returncode == 0 and complete_lines(out.read_bytes()) == complete_lines(path.read_bytes())
    else:
        assert not out.exists()


@FEW
@given(kind=st.sampled_from(INPUT_KINDS), name=NAMES, cut=CUTS)
def test_history_of_a_bad_results_file(tmp_path, kind, name, cut):
    path = make_input(kind, fresh(tmp_path, name), good_bytes("history"), cut)
    out = tmp_path / "case" / "history out"
    result = larsbench("history", path, "-o", out)
    data = input_bytes(kind, path)
    if kind == "directory":  # a folder of nights: none below it
        check_refused(result, ("RESULTS",))
    elif expect_input(result, data, ("RESULTS",), path):
        check_report_folder(out, ("history.md", "history.html", "history.json"))
        return
    assert not out.exists()


def test_a_binary_file_is_one_line_however_many_lines_it_holds(tmp_path):
    noise = tmp_path / "noise.jsonl"
    noise.write_bytes(bytes(range(1, 256)) * 40)  # 40 line breaks of noise
    for command in (["report", noise, "-o", tmp_path / "r"], ["compare", noise, noise], ["baseline", "save", noise, "-o", tmp_path / "b"],
                    ["history", noise, "-o", tmp_path / "h"]):  # fmt: skip
        result = larsbench(*command)
        check_refused(result, ("RESULTS", "BASELINE"))
        assert "41 unreadable lines" in result.stderr, result.stderr


def test_unreadable_lines_are_one_notice_per_file_in_every_reader(tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for path, torn in ((one, 12), (two, 1)):
        path.write_bytes(good_bytes("history") + b"{torn\n" * torn)
    for command in (["report", one, two, "-o", tmp_path / "r"], ["baseline", "save", one, two, "-o", tmp_path / "b"],
                    ["history", one, two, "-o", tmp_path / "h"]):  # fmt: skip
        result = larsbench(*command)
        assert result.returncode == 0, result.stderr
        assert notice_lines(result.stderr) == [f"larsbench: 12 unreadable lines skipped in {one}",
                                               f"larsbench: 1 unreadable line skipped in {two}"], result.stderr  # fmt: skip
    result = larsbench("compare", one, one)  # the same file on both sides: one notice
    assert notice_lines(result.stderr) == [f"larsbench: 12 unreadable lines skipped in {one}"], result.stderr


# --- option values -----------------------------------------------------------------------------

METRIC_NAMES = st.sampled_from(["throughput", "time_to_accuracy", "epochs_to_accuracy", "final_top1", "exposed_comm",
                                "comm_fraction", "speed", ""])  # fmt: skip
AMOUNTS = st.one_of(st.sampled_from(["5%", "5", "1pp", "-3%", "nan", "inf%", "1e400", "%", "0", "abc", "", "2pp%"]),
                    st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6))  # fmt: skip
TOLERANCES = st.one_of(st.tuples(METRIC_NAMES, AMOUNTS).map("=".join), st.text(max_size=12))


@MANY
@given(tolerances=st.lists(TOLERANCES, min_size=1, max_size=3), as_json=st.booleans())
def test_compare_tolerance_values(tmp_path, tolerances, as_json):
    good = fresh(tmp_path, "good.jsonl")
    good.write_bytes(good_bytes())
    result = larsbench("compare", good, good, *[f"--tolerance={t}" for t in tolerances], *(["--json"] if as_json else []))
    check_clean(result)
    if result.returncode == 2:
        check_refused(result, ("--tolerance",))
    else:
        assert result.returncode == 0, result.stdout + result.stderr


@MANY
@given(experiment=st.one_of(st.none(), st.text(max_size=8)), label=st.one_of(st.none(), NAMES, st.sampled_from(["*", "[", "[!]", "ddp-*", "**"])))
def test_baseline_save_selection_values(tmp_path, experiment, label):
    good = fresh(tmp_path, "good.jsonl")
    good.write_bytes(good_bytes())
    out = good.with_name("base.jsonl")
    args = [*(["--experiment", experiment] if experiment is not None else []), *(["--label", label] if label is not None else [])]
    result = larsbench("baseline", "save", good, "-o", out, *args)
    check_clean(result)
    if result.returncode == 2:
        check_refused(result, ("RESULTS", "--experiment", "--label"))
        assert not out.exists()
    else:
        assert result.returncode == 0 and complete_lines(out.read_bytes()) >= 1


@MANY
@given(
    metric=st.lists(st.one_of(METRIC_NAMES, st.text(max_size=6)), max_size=2),
    tolerance=st.lists(TOLERANCES, max_size=2),
    min_nights=st.one_of(st.integers(-5, 40), st.integers()),
    night_ends=st.one_of(st.integers(-5, 30), st.integers()),
)
def test_history_option_values(tmp_path, metric, tolerance, min_nights, night_ends):
    fine = not tolerance and all(m in ("throughput", "time_to_accuracy", "final_top1", "exposed_comm", "comm_fraction") for m in metric)
    assume(not (fine and min_nights >= 2 and 0 <= night_ends <= 23))  # a valid set renders a whole report: the input tests cover it
    good = fresh(tmp_path, "good.jsonl")
    good.write_bytes(good_bytes("history"))
    out = good.with_name("out")
    args = [*[f"--metric={m}" for m in metric], *[f"--tolerance={t}" for t in tolerance],
            f"--min-nights={min_nights}", f"--night-ends={night_ends}"]  # fmt: skip
    result = larsbench("history", good, "-o", out, *args)
    check_clean(result)
    if result.returncode == 2:
        check_refused(result, ("--metric", "--tolerance", "--min-nights", "--night-ends"))
        assert not out.exists()


@MANY
@given(world=st.one_of(st.integers(-3, 3), st.integers()))
def test_report_baseline_world_size_values(tmp_path, world):
    assume(world < 1)  # a valid one renders a whole report: the input tests cover that
    good = fresh(tmp_path, "good.jsonl")
    good.write_bytes(good_bytes())
    result = larsbench("report", good, "-o", good.with_name("out"), f"--baseline-world-size={world}")
    check_refused(result, ("--baseline-world-size",))
    assert not good.with_name("out").exists()


# --- outputs -----------------------------------------------------------------------------------

needs_mount = pytest.mark.skipif(not can_mount(), reason="a full disk is a tmpfs: mounting one needs root (CI runs as root)")
OUTPUTS = st.one_of(st.sampled_from(OUTPUT_KINDS), st.just("fine"))


def output_case(tmp_path: Path, kind: str, name: str, disk: Path | None) -> Path:
    if kind == "fine":
        return fresh(tmp_path, name)
    return make_output(kind, tmp_path / "case", name, disk)


@needs_mount
@RENDERS
@given(kind=OUTPUTS, name=NAMES, free=st.sampled_from([0, 8, 40, 120]), command=st.sampled_from(["report", "history"]))
def test_report_and_history_into_a_bad_output(tmp_path, kind, name, free, command):
    source = tmp_path / "in" / "results.jsonl"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(good_bytes("history"))
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    with tiny_disk(free) as disk:
        out = output_case(tmp_path, kind, name, disk)
        before = snapshot(tmp_path / "case", disk)
        result = larsbench(command, source, "-o", out)
        check_clean(result)
        if result.returncode == 0:
            assert kind in ("fine", "full"), result.stdout
            check_report_folder(out, ("report.md", "report.html") if command == "report" else ("history.md", "history.html", "history.json"))
        else:
            check_refused(result, ("--output",))
            assert snapshot(tmp_path / "case", disk) == before, "a refused report left files behind"


@needs_mount
@MANY
@given(kind=st.one_of(OUTPUTS, st.just("directory")), name=NAMES, free=st.sampled_from([0, 4, 8]))
def test_baseline_save_into_a_bad_output(tmp_path, kind, name, free):
    source = tmp_path / "in" / "results.jsonl"
    source.parent.mkdir(exist_ok=True)
    runs = [record(world_size=w) for w in (1, 2, 4) for _ in range(3)]  # about 9 KiB: more than some disks hold
    source.write_text("".join(json.dumps(r) + "\n" for r in runs))
    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    with tiny_disk(free) as disk:
        out = fresh(tmp_path, name) if kind == "directory" else output_case(tmp_path, kind, name, disk)
        if kind == "directory":
            out.mkdir()
        before = snapshot(tmp_path / "case", disk)
        result = larsbench("baseline", "save", source, "-o", out)
        check_clean(result)
        if result.returncode == 0:
            assert kind in ("fine", "full", "existing_file"), result.stdout
            assert complete_lines(out.read_bytes()) == 9
        else:
            check_refused(result, ("--output",))
            assert snapshot(tmp_path / "case", disk) == before
