"""Slurm integration: sbatch scripts and job arrays for every backend.

``larsbench slurm [EXPERIMENT.yaml] [run flags] [Slurm options] --output DIR [--submit] [--wait]``

Modules: ``script`` (the pure renderer; its signature defines the options), ``options``
(validation, sources, allocation shapes), ``sweep`` (experiment → one script per shape, with its
runs file), ``comm`` (``--comm``: a collectives job per shape), ``submit`` (sbatch/squeue),
``job`` (helpers the script calls inside the job), ``cli`` (the sub-command).
``local_cluster.sh`` starts a real single-node Slurm for the tests, and with ``--nodes N`` one of
N nodes in network namespaces (``local_nodes.sh``; both share ``cluster_lib.sh``).

Contract between a generated script and ``larsbench.suite.worker``:

- ``srun`` starts every rank as ``python -m larsbench.suite.worker --spec-json SPEC --run-id RUN_ID
  --results DIR/results.jsonl --experiment NAME``; ranks find rank, world size, local rank,
  master address and port in Slurm's variables (``larsbench.core.environment``).
- ``RUN_ID`` is ``<cluster>-<job id>`` (``<cluster>-<array job id>_<index>`` in an array): the
  same after a requeue, so a requeued run finds its checkpoint and resumes.
- ``#SBATCH --signal=B:USR1@<signal_seconds>``: Slurm signals the batch script, which passes
  USR1 to ``srun`` and so to every rank. Ranks checkpoint and exit with
  ``larsbench.core.preemption.EXIT_PREEMPTED`` (75). On 75, or any failure after USR1, the script
  runs ``scontrol requeue $SLURM_JOB_ID`` (``--requeue`` is in the header) unless
  ``SLURM_RESTART_COUNT`` reached ``max_requeues``; then it records the run as ``preempted``.
- Before ``srun``, ``python -m larsbench.slurm.job prepare`` forgets an earlier start's rank files
  and fails the run (a ``failed`` record, exit 2) when the allocation is not the shape asked for.
- Beside ``srun``, ``python -m larsbench.slurm.job watch`` kills it ``stop_margin_seconds`` after a
  rank left an error (or every rank on the first node ended): a node srun cannot reach never
  lets it end.
- Any other non-zero exit without a record for ``RUN_ID``: ``python -m larsbench.slurm.job finalize``
  appends a ``failed`` record, with the nodes that do not answer and their ranks, ranks that died
  silently, and the ranks' error lines.
- Exported for provenance: ``LARSBENCH_ALLOCATION`` (JSON: nodes, ntasks_per_node and the
  resources asked for); Slurm itself sets ``SLURM_RESTART_COUNT`` after a requeue.
"""
