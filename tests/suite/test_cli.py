import pytest

from tests.conftest import larsbench as run_cli


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--model", "vgg16"], "--model"),
        (["--micro-batch", "0"], "--micro-batch"),
        (["--world-size", "2", "--micro-batch", "4", "--global-batch-size", "9"], "--global-batch-size"),
        (["--dataset", "imagefolder", "--data-dir", "/nonexistent"], "--data-dir"),
        (["--backend", "nccl-magic"], "--backend"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, args, key):
    out = tmp_path / "out"
    result = run_cli("run", *args, "--output", str(out))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"larsbench: error: {key}: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (out / "results.jsonl").exists()


def test_bad_experiment_file_exits_2(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("defaults:\n  epochs: -1\n")
    result = run_cli("run", str(exp), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == "larsbench: error: defaults.epochs: Input should be greater than 0 (got -1)"


def test_unwritable_output_exits_2_before_training():
    result = run_cli("run", "--model", "tiny_cnn", "--steps", "1", "--output", "/proc/larsbench")
    assert result.returncode == 2
    assert result.stderr.startswith("larsbench: error: --output: cannot write results")


def test_data_generate_writes_an_imagefolder_tree(tmp_path):
    root = tmp_path / "set"
    args = ["data", "generate", str(root), "--num-classes", "3", "--train-per-class", "4", "--val-per-class", "2", "--image-size", "16"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert len(list((root / "train").glob("*/*.jpg"))) == 12
    assert len(list((root / "val").glob("*/*.jpg"))) == 6
    assert run_cli(*args).returncode == 0  # same parameters: reused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    refused = run_cli("data", "generate", str(tmp_path / "other"))
    assert refused.returncode == 2 and "exists" in refused.stderr
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@pytest.fixture
def full_disk(tmp_path):
    """A real filesystem with no space left: a 16 KiB tmpfs, filled (needs root, as CI has)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass  # full
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_fails_before_training(full_disk):
    result = run_cli("run", "--model", "tiny_cnn", "--steps", "1", "--output", str(full_disk / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"larsbench: error: --output: cannot write results to {full_disk / 'out'} (No space left on device); choose a writable folder"
    )
    assert not (full_disk / "out" / "results.jsonl").exists()
