import textwrap

import pytest

from larsbench.suite.config import bundled_experiment, build_spec, load_experiment
from larsbench.core.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def spec(**values):
    return build_spec([("defaults", values)])


def test_defaults_resolve_global_batch_and_lr():
    s = spec(world_size=2, micro_batch_size=8, accumulation_steps=4)
    assert s.global_batch_size == 64
    assert s.lr == 2.0  # LARS default base LR
    assert spec(optimizer="sgd").lr == 0.1


def test_experiment_layers_sweep_and_flags(tmp_path):
    path = write(
        tmp_path,
        """
        name: demo
        defaults: {model: tiny_cnn, micro_batch_size: 4}
        runs:
          - {world_size: 1}
          - {world_size: 2, accumulation_steps: 2}
        sweep:
          optimizer: [lars, sgd]
        """,
    )
    exp = load_experiment(path, {"seed": 7})
    assert exp.name == "demo"
    assert [(r.world_size, r.optimizer, r.global_batch_size) for r in exp.runs] == [
        (1, "lars", 4), (1, "sgd", 4), (2, "lars", 16), (2, "sgd", 16),
    ]
    assert {r.seed for r in exp.runs} == {7}


def test_identical_cells_are_run_once(tmp_path):
    path = write(tmp_path, "defaults: {model: tiny_cnn}\nsweep: {optimizer: [lars, sgd]}\n")
    assert len(load_experiment(path, {"optimizer": "sgd"}).runs) == 1


def test_bundled_default_shows_every_headline_metric():
    """All three backends, each on two world sizes with the same per-worker batch (a weak-scaling
    efficiency per backend), on the CPU, with a target so time to accuracy is measured."""
    exp = load_experiment(bundled_experiment())
    assert {r.backend for r in exp.runs} == {"ddp", "deepspeed", "horovod"}
    for backend in ("ddp", "deepspeed", "horovod"):
        mine = [r for r in exp.runs if r.backend == backend]
        assert sorted(r.world_size for r in mine) == [1, 2]
        assert len({r.micro_batch_size * r.accumulation_steps for r in mine}) == 1
    assert all(r.device == "cpu" and r.target_top1 is not None and r.dataset == "generated" for r in exp.runs)


@pytest.mark.parametrize(
    ("yaml_text", "key", "words"),
    [
        ("defaults: {modle: resnet50}\n", "defaults.modle", "did you mean 'model'"),
        ("defaults: {image_size: -3}\n", "defaults.image_size", "greater than 0"),
        ("defaults: {image_size: '32'}\n", "defaults.image_size", "valid integer"),
        ("defaults: {image_size: true}\n", "defaults.image_size", "valid integer"),
        ("runs:\n  - {model: vgg}\n", "runs[0].model", "unknown model 'vgg'"),
        ("defaults: {backend: mpi}\n", "defaults.backend", "unknown backend 'mpi'"),
        ("defaults: {optimizer: adam}\n", "defaults.optimizer", "unknown optimizer 'adam'; choose one of"),
        ("defaults: {model: alexnet, image_size: 32}\n", "defaults.image_size", "at least 63 px"),
        (
            "defaults: {world_size: 2, micro_batch_size: 4, global_batch_size: 10}\n",
            "defaults.global_batch_size",
            "share (10 / 2 = 5) is not a multiple of micro_batch_size 4",
        ),
        ("defaults: {world_size: 2, global_batch_size: 33}\n", "defaults.global_batch_size", "over world_size 2"),
        (
            "defaults: {world_size: 2, micro_batch_size: 4, accumulation_steps: 2, global_batch_size: 32}\n",
            "defaults.global_batch_size",
            "2 × 4 × 2 = 16",
        ),
        ("defaults: {dataset: imagefolder}\n", "data_dir", "needs data_dir"),
        ("defaults: {dataset: imagefolder, data_dir: /nonexistent}\n", "defaults.data_dir", "not a directory"),
        ("defaults: {micro_batch_size: 600, synthetic_samples: 512}\n", "defaults.synthetic_samples", "fewer than one global batch"),
        ("defaults: {warmup_epochs: 2, epochs: 1}\n", "defaults.warmup_epochs", "shorter than training"),
        ("defaults: {data_loader: tpu}\n", "defaults.data_loader", "'cpu' or 'gpu'"),
        ("defaults: {data_loader: gpu, device: cpu, dataset: generated}\n", "defaults.data_loader", "device is 'cpu'"),
        ("defaults: {data_loader: gpu, device: cuda}\n", "defaults.data_loader", "synthetic data has none"),
        ("sweep: {optimizer: lars}\n", "sweep.optimizer", "list of values"),
        ("runs: []\n", "runs", "non-empty list"),
        ("colour: red\n", "exp.yaml", "unknown key 'colour'"),
        ("- a\n- b\n", "exp.yaml", "YAML mapping"),
        ("defaults: {model: [unclosed\n", "exp.yaml", "not valid YAML at line"),
        ("", "exp.yaml", "empty"),
    ],
)
def test_bad_experiments_name_the_key(tmp_path, yaml_text, key, words):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert info.value.key.endswith(key), info.value
    assert words in info.value.message, info.value
    assert "\n" not in str(info.value)


def test_flag_errors_name_the_flag():
    with pytest.raises(ConfigError) as info:
        load_experiment(None, {"micro_batch_size": 0})
    assert info.value.key == "--micro-batch"


def test_missing_file():
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment("/nonexistent/exp.yaml")


@pytest.mark.parametrize(
    "batch, micro, accumulation",
    [(16, 8, 1), (128, 64, 1), (512, 64, 4), (32768, 64, 256)],
)
def test_a_global_batch_resolves_to_micro_batches_and_accumulation(batch, micro, accumulation):
    spec = build_spec([("defaults", {"world_size": 2, "micro_batch_size": 64, "global_batch_size": batch, "synthetic_samples": 32768})])
    assert (spec.micro_batch_size, spec.accumulation_steps, spec.global_batch_size) == (micro, accumulation, batch)
    assert spec.world_size * spec.micro_batch_size * spec.accumulation_steps == batch


def test_repeats_give_every_setting_n_runs_with_their_index():
    from larsbench.suite.config import resolve_experiment

    doc = {"repeats": 3, "defaults": {"model": "tiny_cnn"}, "sweep": {"optimizer": ["lars", "sgd"]}}
    runs = resolve_experiment(doc, {}, "exp.yaml").runs
    assert [(r.optimizer, r.repeat) for r in runs] == [("lars", 0), ("lars", 1), ("lars", 2), ("sgd", 0), ("sgd", 1), ("sgd", 2)]
    assert len({r.label for r in runs}) == 2  # repeats share their setting's label
    assert [r.repeat for r in resolve_experiment(doc, {}, "exp.yaml", repeats=1).runs] == [0, 0]  # --repeats wins


@pytest.mark.parametrize(("doc", "flag", "key"), [({"repeats": 0}, None, "repeats"), ({"repeats": "5"}, None, "repeats"),
                                                  ({}, 0, "--repeats"), ({}, 10**6, "--repeats")])  # fmt: skip
def test_bad_repeats_are_refused_naming_the_key(doc, flag, key):
    from larsbench.suite.config import resolve_experiment

    with pytest.raises(ConfigError) as info:
        resolve_experiment(doc, {}, "exp.yaml", flag)
    assert info.value.key == key and "from 1 to 1000" in info.value.message


def test_the_mlperf_section_reaches_every_run_and_is_validated():
    from larsbench.suite.config import resolve_experiment

    doc = {"mlperf": {"org": "ACME HPC", "division": "closed"}, "defaults": {"model": "tiny_cnn"}, "sweep": {"seed": [0, 1]}}
    assert [r.mlperf for r in resolve_experiment(doc, {}, "exp.yaml").runs] == [{"org": "ACME HPC", "division": "closed"}] * 2
    for bad, key in (({"division": "semi"}, "division"), ({"organisation": "x"}, "organisation"), ({"org": ""}, "org")):
        with pytest.raises(ConfigError) as info:
            resolve_experiment({"mlperf": bad, "defaults": {"model": "tiny_cnn"}}, {}, "exp.yaml")
        assert info.value.key.endswith(f"mlperf.{key}")


def test_the_gpu_loader_is_accepted_for_jpeg_data_on_cuda_or_auto():
    for device in ("cuda", "auto"):
        s = spec(data_loader="gpu", device=device, dataset="generated")
        assert (s.data_loader, s.device) == ("gpu", device)
    assert spec().data_loader == "cpu"
