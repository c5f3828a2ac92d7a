"""larsbench's own performance benchmarks (not part of the test suite under ``tests/``).

- ``python -m benchmarks.run``: the ratio targets (LARS step vs SGD and vs a per-parameter loop,
  the suite's DDP step vs a bare DDP loop, DeepSpeed ZeRO-1 vs ZeRO-0), each printed against its target.
- ``python -m pytest benchmarks -n 0 --benchmark-autosave``: pytest-benchmark timings for
  regression checks (``--benchmark-compare --benchmark-compare-fail=mean:10%``); ``-n 0`` runs
  them one at a time (the project's pytest settings run two tests at once, and pytest-benchmark
  times nothing under xdist).
- ``bash benchmarks/gpu_check.sh``: every GPU measurement in one run on a bare GPU machine
  (``gpu_throughput``, ``gpu_lars_step``, the harness on NCCL, larsbench runs, ``gpu_data``
  for the loaders, ``gpu_summary``); ``--dry-run`` on a CPU. See docs/gpu.md.
"""
