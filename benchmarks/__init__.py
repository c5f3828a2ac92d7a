"""larsbench's own performance benchmarks (not part of the test suite under ``tests/``).

- ``python -m benchmarks.run``: the ratio targets (LARS step vs SGD and vs a per-parameter loop,
  the suite's DDP step vs a bare DDP loop), each printed against its target.
- ``python -m pytest benchmarks --benchmark-autosave``: pytest-benchmark timings for regression
  checks (``--benchmark-compare --benchmark-compare-fail=mean:10%``).
"""
