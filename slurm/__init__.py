"""Slurm integration: sbatch scripts and job arrays for every backend (see the Slurm issue).

``local_cluster.sh`` starts a real single-node Slurm for the tests.
"""
