"""Workloads: models, data, optimizers (LARS, LAMB and SGD baselines, registered by name in
``optimizers``) and LR schedules.

Nothing here knows which distributed backend runs it.
"""
