"""Malformed experiments, generated: each one ends with a single line naming the key and the
fix, exit status 2, no traceback, and nothing written to the results folder."""

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from larsbench.main import main
from larsbench.core.spec import RUN_FIELDS

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


def check_refused(tmp_path, capsys, text):
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
    check_refused(tmp_path, capsys, text)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=UNREADABLE)
def test_unreadable_files_are_refused_cleanly(tmp_path, capsys, text):
    check_refused(tmp_path, capsys, text)
