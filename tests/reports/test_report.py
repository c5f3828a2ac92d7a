import re

from report_records import record, write


def runs():
    return [
        record(world_size=1, seed=0, throughput_images_per_sec=100.0),
        record(world_size=1, seed=1, throughput_images_per_sec=110.0),
        record(world_size=2, seed=0, throughput_images_per_sec=180.0, time_to_accuracy_sec=7.0),
        record(world_size=2, micro_batch_size=4, throughput_images_per_sec=150.0),
        record(world_size=4, status="failed", error="rank3: NCCL timeout"),
        record(world_size=2, micro_batch_size=16, optimizer="sgd", base_lr=0.1, status="diverged", diverged_at_step=7),
        record(world_size=2, micro_batch_size=16, optimizer="sgd", base_lr=0.1, scaling_rule="linear", final_top1=0.3,
               time_to_accuracy_sec=None, epochs_to_accuracy=None),
    ]  # fmt: skip


def test_report_writes_markdown_html_and_embedded_plots(tmp_path, cli):
    code, out = cli("report", write(tmp_path / "results.jsonl", runs()), "-o", tmp_path / "out")
    assert code == 0, out
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    pngs = sorted((tmp_path / "out").glob("*.png"))
    # Two recipes with accuracy make a large-batch study: its per-recipe plots replace top-1 and TTA vs batch.
    names = ("efficiency", "frontier", "step-split", "study-top1", "throughput")
    assert [p.name for p in pngs] == [f"w1-tiny-cnn-{n}.png" for n in names]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    for p in pngs:
        assert f"]({p.name})" in md
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html and "http" not in html.replace("http-equiv", "")

    # The main table: repeats with spread, efficiencies, and every run that did not finish ok.
    # 105 ± t(0.975, 1) · 7.07 / √2 = 105 ± 63.5; CV 7.07 / 105
    assert "| ddp | lars+warmup0.5 | 1 | 8 = 1×8×1 | 2/2 | 105.0 [41.5–168.5] | 6.7% | — | 1.00 (N₀) | 1.00 (N₀) |" in md
    assert "| ddp | lars+warmup0.5 | 2 | 16 = 2×8×1 | 1/1 | 180.0 | — | — | 0.86 | — |" in md  # 180 / (2 × 105)
    assert "| ddp | lars+warmup0.5 | 2 | 8 = 2×4×1 | 1/1 | 150.0 | — | — | — | 0.71 |" in md  # 150 / (2 × 105)
    assert "failed: rank3: NCCL timeout" in md
    assert "diverged (diverged at step 7)" in md
    assert "not reached (40%)" in md  # the SGD linear run missed the target
    assert "| 0/1 | — |" in md
    assert "Data wait, compute (timed on a copy of the model" in md
    assert "## Runs that did not finish ok" in md and "rank3: NCCL timeout" in md.split("did not finish ok")[1]


def test_missing_baseline_is_stated_and_single_world_sizes_are_explained(tmp_path, cli):
    records = [record(world_size=2, throughput_images_per_sec=180.0, compute_fraction=0.6, comm_fraction=0.2),
               record(world_size=4, throughput_images_per_sec=320.0, compute_fraction=0.5, comm_fraction=0.3)]  # fmt: skip
    code, _ = cli("report", write(tmp_path / "r.jsonl", records), "-o", tmp_path / "out", "--baseline-world-size", "1")
    assert code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Efficiency baseline N₀: 1 (--baseline-world-size)" in md
    assert "no run at the baseline world size N₀=1 (present: N=2, 4); efficiency not computed" in md
    assert "no baseline" in md  # in the main table's weak-efficiency column
    assert "Not computed: no global batch was run at more than one world size." in md
    assert "No scaling efficiency vs workers plot" in md
    assert "exposed communication (the rest of the step) along the critical rank" in md


def test_a_report_of_failed_runs_only_says_why_nothing_is_plotted(tmp_path, cli):
    records = [record(world_size=n, status="failed", error=f"rank0: boom {n}") for n in (1, 2)]
    code, out = cli("report", write(tmp_path / "r.jsonl", records), "-o", tmp_path / "out")
    assert code == 0 and "0 plot(s)" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "the baseline run at N₀=1 has no throughput (status: failed); efficiency not computed" in md
    assert "No throughput vs workers plot: no setting with a measured throughput" in md
    assert md.count("failed: rank0: boom") == 2 and "| 0/1 |" in md


def test_report_bad_input_exits_2(tmp_path, cli):
    code, out = cli("report", tmp_path / "nope.jsonl", "-o", tmp_path / "out")
    assert code == 2 and "RESULTS: " in out and "no such results file" in out


def test_repeats_show_their_confidence_interval_cv_and_olympic_mean(tmp_path, cli):
    """Five clean repeats give the interval; a sixth whose step times shifted mid-window (flagged
    unstable by the record builder) is left out of the timings and named, never averaged in."""
    values = [100.0, 104.0, 96.0, 102.0, 98.0]  # mean 100, std 3.16
    ready = [[0.05] * 20, [0.07] * 20]  # rank 1 is ready last at every step, 40% after rank 0: a straggler
    records = [record(seed=i, world_size=2, throughput_images_per_sec=v, hosts=["node6", "node7"],
                      ready_sec=ready if i == 3 else None) for i, v in enumerate(values)]  # fmt: skip
    records.append(record(seed=5, world_size=2, throughput_images_per_sec=60.0, disturbed=True))
    assert records[-1]["unstable"] and records[3]["straggler"]["rank"] == 1
    code, _ = cli("report", write(tmp_path / "r.jsonl", records), "-o", tmp_path / "out")
    assert code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    # 100 ± t(0.975, 4) · 3.162 / √5 = 100 ± 3.93; olympic mean drops 96 and 104: (98 + 100 + 102) / 3
    assert "| 6/6 | 100.0 [96.1–103.9] | 3.2% | 100.0 |" in md
    assert "ok; unstable ×1 (left out of timings); straggler |" in md
    reasons = "; ".join(records[-1]["unstable_reasons"])
    assert f"Unstable (1 of 6 run(s); left out of throughput and the other timings), ddp · lars+warmup0.5 · N=2 · B=16: {reasons}." in md
    assert "Straggler, ddp · lars+warmup0.5 · N=2 · B=16: rank 1 on node7 (40% slower on its own)." in md
    code, _ = cli("report", tmp_path / "r.jsonl", "-o", tmp_path / "pooled", "--include-unstable")
    pooled = (tmp_path / "pooled" / "report.md").read_text()
    assert code == 0 and "| 6/6 | 93.3 [" in pooled and "included (--include-unstable)" in pooled
    write(tmp_path / "d.jsonl", records[-1:])  # every run disturbed: its figure stands, marked
    assert cli("report", tmp_path / "d.jsonl", "-o", tmp_path / "disturbed")[0] == 0
    assert "| 1/1 | 60.0 (every run disturbed) |" in (tmp_path / "disturbed" / "report.md").read_text()


def split(world_size: int, data: float, compute: float, comm: float, **extra) -> dict:
    step = data + compute + comm
    return record(world_size=world_size, data_wait_sec_per_step=data, compute_sec_per_step=compute,
                  exposed_comm_sec_per_step=comm, step_time_mean_sec=step, compute_fraction=compute / step,
                  comm_fraction=comm / step, throughput_images_per_sec=8 * world_size / step, **extra)  # fmt: skip


def test_lost_scaling_efficiency_is_attributed_to_its_parts(tmp_path, cli):
    # weak scaling, per-worker batch 8: at N=2 the step grows by 40 ms, 30 of them exposed communication
    records = [split(1, 0.010, 0.100, 0.000), split(2, 0.016, 0.104, 0.030)]
    code, _ = cli("report", write(tmp_path / "r.jsonl", records), "-o", tmp_path / "out")
    assert code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("#### Where scaling efficiency goes")[1]
    assert "| 2 | 0.73 | 150.0 | 110.0 | +6.0 (15%) | +4.0 (10%) | +30.0 (75%) |" in section
    assert "at 2 ranks (N₀ = 1) (efficiency 0.73), 75% of the lost step time is exposed communication; 15% data wait, 10% compute." in section
    assert (tmp_path / "out" / "w1-tiny-cnn-attribution.png").read_bytes().startswith(b"\x89PNG")


def test_backends_on_different_transports_are_marked(tmp_path, cli):
    records = [record(backend="ddp", transport="nccl", device="cuda:0", gpu_model="NVIDIA H100 80GB HBM3"),
               record(backend="horovod", transport="gloo (CUDA tensors through host memory)", device="cuda:0",
                      gpu_model="NVIDIA H100 80GB HBM3")]  # fmt: skip
    code, _ = cli("report", write(tmp_path / "r.jsonl", records), "-o", tmp_path / "out")
    assert code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Not like for like: the backends here used different transports (ddp: nccl; horovod: gloo (CUDA tensors through host memory))." in md


def test_plots_drawn_in_parallel_are_the_plots_drawn_one_at_a_time(tmp_path):
    from larsbench.reports.report import build_report

    records = runs()
    one = build_report(records, tmp_path / "one", ["results.jsonl"], draw_workers=1)
    two = build_report(records, tmp_path / "two", ["results.jsonl"], draw_workers=2)
    assert [p.name for p in two.images] == [p.name for p in one.images] and len(one.images) == 5
    for a, b in zip(one.images, two.images):
        assert b.read_bytes() == a.read_bytes(), b.name  # Agg draws the same pixels, wherever it runs
    assert two.html.read_text() == one.html.read_text() and two.markdown.read_text() == one.markdown.read_text()


def test_a_plot_a_child_cannot_write_fails_the_report_with_its_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import pytest

    from larsbench.reports import plots
    from larsbench.reports.report import build_report

    def full_disk(fig, path):  # forked children run the parent's code, this too
        if path.name.endswith("-frontier.png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return drawn(fig, path)

    drawn = plots._save
    monkeypatch.setattr(plots, "_save", full_disk)
    with pytest.raises(OSError) as info:
        build_report(runs(), tmp_path / "out", ["results.jsonl"], draw_workers=2)
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("-frontier.png")
    assert not (tmp_path / "out").exists()  # written whole or not at all
    assert plots._renderers is None


def test_children_never_finalize_what_they_inherit_so_a_live_process_group_cannot_hang_them(tmp_path, monkeypatch):
    """A gloo process group left as garbage in the parent (as a test process leaves one): a child
    that collected it would wait forever in its destructor for gloo threads it does not have."""
    import gc
    import os

    import torch.distributed as dist

    from larsbench.reports import plots
    from larsbench.reports.report import build_report

    store = dist.FileStore(str(tmp_path / "store"), 1)
    gc.disable()  # so the parent itself does not collect the garbage below before forking
    group = dist.ProcessGroupGloo(store, 0, 1)
    cycle = [group]
    cycle.append(cycle)
    del group, cycle  # garbage now: only a collection finalizes it
    parent, drawn_here = os.getpid(), []

    def collecting(fig, path):
        if os.getpid() == parent:
            drawn_here.append(path.name)  # drawn by the parent: its child never answered
        else:
            gc.collect()  # what any allocation in the child may trigger
        return drawing(fig, path)

    drawing = plots._save
    monkeypatch.setattr(plots, "_save", collecting)
    monkeypatch.setattr(plots._Renderers, "TIMEOUT_SEC", 20.0)
    try:
        files = build_report(runs(), tmp_path / "out", ["results.jsonl"], draw_workers=2)
    finally:
        gc.enable()
        gc.collect()  # here, where gloo's threads live
    assert len(files.images) == 5 and all(p.exists() for p in files.images)
    assert drawn_here == []


def test_a_child_killed_while_drawing_fails_the_report_and_says_which_plot(tmp_path, monkeypatch):
    import os
    import signal

    import pytest

    from larsbench.reports import plots
    from larsbench.reports.report import build_report

    def killed(fig, path):  # as the kernel's OOM killer would end it
        if path.name.endswith("-efficiency.png") and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return drawing(fig, path)

    parent, drawing = os.getpid(), plots._save
    monkeypatch.setattr(plots, "_save", killed)
    with pytest.raises(RuntimeError, match=r"drawing w1-tiny-cnn-efficiency\.png stopped without a word"):
        build_report(runs(), tmp_path / "out", ["results.jsonl"], draw_workers=2)
    assert not (tmp_path / "out").exists()
