"""larsbench: benchmark large-batch distributed training (LARS vs SGD) across PyTorch DDP,
DeepSpeed and Horovod, locally and on Slurm.

The repository's top-level folders install as ``larsbench.*`` (this one, ``cli/``, is the
package root); their imports run one way (checked by the import contract in ``pyproject.toml``)::

    larsbench.main                         the ``larsbench`` command
    larsbench.slurm | larsbench.reports    sbatch scripts and jobs | reports from records
    larsbench.suite                        experiments, the local launcher, one rank's entry
    larsbench.loop                         the training loop, meters, checkpoints, records
    larsbench.workloads | larsbench.backends
    larsbench.core                         errors, run spec, cluster environment, precision, files
"""

__version__ = "0.1.0"
