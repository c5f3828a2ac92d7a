"""Workloads: models, data, optimizers (LARS and SGD baselines) and LR schedules.

Nothing here knows which distributed backend runs it.
"""
