"""FLOP counts held to the published ones, and the peak table matched on exact GPU names."""

from __future__ import annotations

import pytest

from larsbench.loop.flops import table_peak_tflops, training_flops_per_image

# torchvision's model cards: forward multiply-adds at 224 px ("GFLOPS" there counts MACs).
PUBLISHED_FORWARD_GMAC = {"resnet50": 4.09, "alexnet": 0.71}


@pytest.mark.parametrize("model", ["resnet50", "alexnet"])
def test_a_training_step_counts_three_forward_passes_of_the_published_count(model, tmp_path, monkeypatch):
    monkeypatch.setenv("LARSBENCH_CACHE", str(tmp_path))
    published = 3 * 2 * PUBLISHED_FORWARD_GMAC[model] * 1e9  # forward + backward (twice forward), 2 FLOPs per MAC
    counted = training_flops_per_image(model, 1000, 224)
    assert counted == pytest.approx(published, rel=0.05)
    assert (tmp_path / "flops.json").exists()
    assert training_flops_per_image(model, 1000, 224) == counted  # from the cache, unchanged


def test_the_peak_table_matches_exact_gpu_names_only():
    assert table_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert table_peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert table_peak_tflops("NVIDIA L40S", "bf16") == 362.05
    # Names that contain a listed one are other GPUs: no table peak rather than a wrong one.
    for other in ("NVIDIA H100 NVL", "NVIDIA A10G", "NVIDIA L40", "NVIDIA L4 Pro"):
        assert table_peak_tflops(other, "bf16") is None, other
    assert table_peak_tflops(None, "bf16") is None and table_peak_tflops("NVIDIA H100 80GB HBM3", "int8") is None
