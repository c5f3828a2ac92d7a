import pytest

from larsbench.backends.base import Backend
from larsbench.backends.deepspeed import DeepSpeedBackend, engine_config
from larsbench.backends.ddp import DDPBackend
from larsbench.backends.horovod import HorovodBackend
from larsbench.suite.config import build_spec
from larsbench.core.errors import ConfigError


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeeds_zero_stage_comes_from_optimizer_sharding_alone(stage):
    with pytest.raises(ConfigError) as info:
        DeepSpeedBackend.check_options({"zero_optimization": {"stage": stage}}, "lars")
    assert info.value.key == "backend_config.zero_optimization.stage"
    assert "set optimizer_sharding" in info.value.message
    DeepSpeedBackend.check_options({"zero_optimization": {"reduce_bucket_size": 1000}}, "lars")  # its other settings pass


@pytest.mark.parametrize(("sharding", "stage"), [("none", 0), ("zero1", 1), ("zero2", 2)])
def test_deepspeed_runs_the_zero_stage_of_optimizer_sharding(sharding, stage):
    config = engine_config(4, 1, 2, {"zero_optimization": {"reduce_bucket_size": 1000}}, sharding=sharding)
    assert config["zero_optimization"] == {"reduce_bucket_size": 1000, "stage": stage}
    assert config.get("zero_allow_untested_optimizer", False) == (stage > 0)


def test_deepspeed_zero_over_gloo_reduces_gradients_with_one_all_reduce_unless_told_otherwise():
    assert engine_config(4, 1, 2, None, sharding="zero1", device_type="cpu")["zero_optimization"]["reduce_scatter"] is False
    assert "reduce_scatter" not in engine_config(4, 1, 2, None, sharding="zero1", device_type="cuda")["zero_optimization"]
    assert "reduce_scatter" not in engine_config(4, 1, 2, None, sharding="none", device_type="cpu")["zero_optimization"]
    own = {"zero_optimization": {"reduce_scatter": True}}
    assert engine_config(4, 1, 2, own, sharding="zero2", device_type="cpu")["zero_optimization"]["reduce_scatter"] is True


@pytest.mark.parametrize(
    ("run", "words"),
    [
        ({"backend": "horovod", "optimizer_sharding": "zero1"}, "the horovod backend cannot shard optimizer state"),
        ({"backend": "ddp", "optimizer_sharding": "zero2"}, "ZeroRedundancyOptimizer, which is ZeRO-1"),
        ({"backend": "ddp", "optimizer_sharding": "zero3"}, "'none', 'zero1' or 'zero2'"),
        ({"backend": "deepspeed", "optimizer_sharding": "zero1", "channels_last": True}, "cannot be channels_last"),
    ],
)
def test_sharding_a_backend_cannot_do_is_refused_naming_the_setting(run, words):
    with pytest.raises(ConfigError) as info:
        build_spec([("defaults", {"model": "tiny_cnn", **run})])
    assert info.value.key == "defaults.optimizer_sharding" and words in info.value.message
    assert "\n" not in str(info.value)


def test_an_optimizer_without_the_shards_trait_is_refused_sharding(monkeypatch):
    import dataclasses

    from larsbench.workloads import optimizers

    whole_layers_only = dataclasses.replace(optimizers.OPTIMIZERS["lars"], shards=False)
    monkeypatch.setitem(optimizers.OPTIMIZERS, "lars", whole_layers_only)
    with pytest.raises(ConfigError) as info:
        build_spec([("defaults", {"model": "tiny_cnn", "backend": "deepspeed", "optimizer_sharding": "zero1"})])
    assert info.value.key == "defaults.optimizer_sharding" and "cannot step sharded state" in info.value.message


@pytest.mark.parametrize(("backend", "sharding"), [("ddp", "zero1"), ("deepspeed", "zero1"), ("deepspeed", "zero2")])
def test_sharding_a_backend_can_do_is_accepted_for_every_optimizer(backend, sharding):
    for optimizer in ("lars", "sgd"):
        spec = build_spec([("defaults", {"model": "tiny_cnn", "backend": backend, "optimizer": optimizer,
                                         "optimizer_sharding": sharding})])  # fmt: skip
        assert spec.optimizer_sharding == sharding and f"optimizer_sharding={sharding}" in spec.label


@pytest.mark.parametrize("key", ["train_batch_size", "gradient_accumulation_steps", "optimizer", "scheduler"])
def test_deepspeed_refuses_settings_the_run_owns(key):
    with pytest.raises(ConfigError, match="sets this from the run"):
        DeepSpeedBackend.check_options({key: 1}, "lars")


def test_deepspeed_engine_config_never_clips_silently():
    config = engine_config(4, 2, 8, None)
    assert config["gradient_clipping"] == 0.0  # DeepSpeed's own default is 1.0
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"], config["train_batch_size"]) == (4, 2, 64)
    assert config["zero_optimization"] == {"stage": 0} and "zero_allow_untested_optimizer" not in config
    user = engine_config(4, 2, 8, {"gradient_clipping": 1.0, "bf16": {"enabled": True}})
    assert user["gradient_clipping"] == 1.0 and user["bf16"] == {"enabled": True}


def test_ddp_options_are_ddp_arguments():
    DDPBackend.check_options({"bucket_cap_mb": 50, "gradient_as_bucket_view": True}, "lars")
    with pytest.raises(ConfigError) as info:
        DDPBackend.check_options({"bucket_size": 50}, "lars")
    assert info.value.key == "backend_config.bucket_size"


def test_horovod_takes_no_options():
    with pytest.raises(ConfigError, match="takes no backend_config"):
        HorovodBackend.check_options({"x": 1}, "lars")


def test_an_unknown_horovod_wait_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("LARSBENCH_HOROVOD_WAIT", "busy")
    with pytest.raises(ConfigError) as info:
        HorovodBackend().setup(None, None, 60.0)  # refused before anything starts
    assert info.value.key == "LARSBENCH_HOROVOD_WAIT" and "spin" in info.value.message and "sleep" in info.value.message


def test_config_errors_point_at_the_backend_config_in_the_experiment():
    with pytest.raises(ConfigError) as info:
        build_spec([("defaults", {"backend": "deepspeed", "backend_config": {"zero_optimization": {"stage": 3}}})])
    assert info.value.key == "defaults.backend_config.zero_optimization.stage"


def test_missing_library_is_one_line_with_the_install_command():
    class Missing(Backend):
        name = "missing"
        requires = ("larsbench_no_such_library.sub", "pip install larsbench-no-such-library")

    with pytest.raises(ConfigError) as info:
        Missing.check_available()
    assert info.value.key == "backend"
    assert "pip install larsbench-no-such-library" in info.value.message and "\n" not in str(info.value)


def test_horovod_without_nccl_on_cuda_is_refused_unless_allowed(monkeypatch):
    """CUDA gradients through host memory would not compare fairly with NCCL backends."""
    from larsbench.backends.horovod import HorovodBackend

    monkeypatch.setattr(HorovodBackend, "host_staged_on_cuda", classmethod(lambda cls: "built without NCCL"))
    run = {"backend": "horovod", "model": "tiny_cnn", "device": "cuda"}
    with pytest.raises(ConfigError) as info:
        build_spec([("defaults", run)])
    assert info.value.key == "defaults.backend" and "allow_host_transport: true" in info.value.message
    assert build_spec([("defaults", {**run, "allow_host_transport": True})]).allow_host_transport
    assert build_spec([("defaults", {**run, "device": "cpu"})]).backend == "horovod"  # CPU tensors: gloo is the transport
