import json
import warnings

import pytest
import torch

from larsbench.core.errors import ConfigError
from larsbench.loop import checkpoint


def test_round_trip_restores_state_and_rng(tmp_path):
    torch.manual_seed(1)
    folder = checkpoint.save(tmp_path, 7, 0, 1, {"step": 7, "w": torch.arange(3.0)}, lambda: None)
    expected = torch.rand(4)  # what the RNG would give next, after the save
    torch.rand(100)  # move it on
    main, own = checkpoint.load(checkpoint.latest_valid(tmp_path, 1), 0)
    checkpoint.set_rng_state(own["rng"])
    assert main["step"] == 7 and torch.equal(main["w"], torch.arange(3.0))
    assert torch.equal(torch.rand(4), expected)
    assert folder.name == "step-000000007"


def test_a_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    checkpoint.save(tmp_path, 10, 0, 1, {"step": 10}, lambda: None)
    newest = checkpoint.save(tmp_path, 20, 0, 1, {"step": 20}, lambda: None)
    data = bytearray((newest / "main.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "main.pt").write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = checkpoint.latest_valid(tmp_path, 1)
    assert chosen.name == "step-000000010"
    assert any("corrupt" in str(w.message) for w in caught)


def test_a_partial_checkpoint_is_ignored(tmp_path):
    checkpoint.save(tmp_path, 10, 0, 1, {"step": 10}, lambda: None)
    partial = tmp_path / "step-000000030"
    partial.mkdir()
    (partial / "main.pt").write_bytes(b"half a checkpoint")  # the writer died before COMPLETE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert checkpoint.latest_valid(tmp_path, 1).name == "step-000000010"
    assert any("incomplete" in str(w.message) for w in caught)


def test_a_missing_rank_file_or_other_world_size_is_refused(tmp_path):
    folder = checkpoint.save(tmp_path, 10, 0, 1, {"step": 10}, lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert checkpoint.latest_valid(tmp_path, 2) is None  # written by 1 rank
        (folder / "rank0.pt").unlink()
        assert checkpoint.latest_valid(tmp_path, 1) is None


def test_only_the_two_newest_complete_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, 0, 1, {"step": step}, lambda: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000003", "step-000000004"]
    assert not list(tmp_path.rglob(".*tmp*"))  # no temporary files left behind


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert checkpoint.latest_valid(tmp_path / "nothing", 1) is None


def test_resuming_with_other_settings_is_refused():
    import dataclasses

    import pytest

    from larsbench.core.errors import ConfigError
    from larsbench.core.spec import RunSpec
    from larsbench.loop.trainer import _SpecGuard

    saved = RunSpec(model="resnet50", micro_batch_size=8, data_workers=1, log_every_steps=10).to_dict()

    def resume_with(**changes) -> None:
        _SpecGuard(dataclasses.replace(RunSpec(**saved), **changes)).load_state_dict(saved)

    resume_with(checkpoint_every_steps=5, collective_timeout_sec=30.0)  # bookkeeping: nothing measured changes
    for changes in ({"micro_batch_size": 16}, {"data_workers": 4}, {"seed": 1}):
        with pytest.raises(ConfigError) as info:
            resume_with(**changes)
        (name,) = changes
        assert info.value.key == "--run-id" and name in info.value.message


def test_a_checkpoint_missing_a_part_is_refused_with_one_line(tmp_path):
    import pytest

    from larsbench.core.errors import ConfigError

    checkpoint.save(tmp_path, 5, 0, 1, {"spec": {}, "model": {}}, lambda: None)  # an older layout
    saver = checkpoint.Checkpointer(tmp_path, 0, 1, lambda: None)
    assert saver.find()
    with pytest.raises(ConfigError) as info:
        saver.restore(["model", "optimizer", "progress"])
    assert info.value.key == "--run-id" and "optimizer, progress" in info.value.message


class Part:
    def __init__(self, value):
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_each_rank_saves_and_restores_its_own_shard(tmp_path):
    # Two ranks share a folder: each saves its own shard, rank 0 the common parts; a barrier
    # that does nothing is enough when the ranks take turns (rank 1 first, rank 0 completes).
    savers = {rank: checkpoint.Checkpointer(tmp_path, rank, 2, lambda: None) for rank in (1, 0)}
    for rank, saver in savers.items():
        saver.register(progress=Part(f"step 5 (rank {rank})"))
        saver.register_rank(optimizer=Part(f"shard of rank {rank}"))
        saver.save(5)
    for rank in (0, 1):
        resumer = checkpoint.Checkpointer(tmp_path, rank, 2, lambda: None)
        progress, shard = Part(None), Part(None)
        resumer.register(progress=progress)
        resumer.register_rank(optimizer=shard)
        assert resumer.find()
        resumer.restore(["progress", "optimizer"])
        assert (progress.value, shard.value) == ("step 5 (rank 0)", f"shard of rank {rank}")


def test_a_checkpoint_without_a_rank_shard_is_refused_naming_it(tmp_path):
    saver = checkpoint.Checkpointer(tmp_path, 0, 1, lambda: None)
    saver.register(optimizer=Part("whole"))
    saver.save(3)
    resumer = checkpoint.Checkpointer(tmp_path, 0, 1, lambda: None)
    resumer.register_rank(optimizer=Part(None))
    assert resumer.find()
    with pytest.raises(ConfigError, match="holds no optimizer"):
        resumer.restore(["optimizer"])


def test_a_checkpoint_from_before_rank_parts_still_restores_its_rng(tmp_path):
    torch.manual_seed(3)
    folder = checkpoint.save(tmp_path, 2, 0, 1, {"step": 2}, lambda: None)
    expected = torch.rand(2)
    torch.manual_seed(3)
    (folder / "rank0.pt").write_bytes(checkpoint._torch_bytes(checkpoint.rng_state()))  # what older versions wrote
    manifest = json.loads((folder / "COMPLETE").read_text())
    manifest["files"]["rank0.pt"] = checkpoint._digest(folder / "rank0.pt")
    (folder / "COMPLETE").write_text(json.dumps(manifest))
    torch.rand(50)
    _, own = checkpoint.load(checkpoint.latest_valid(tmp_path, 1), 0)
    checkpoint.set_rng_state(own["rng"])
    assert torch.equal(torch.rand(2), expected) and own["parts"] == {}
