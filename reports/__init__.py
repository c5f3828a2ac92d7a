"""Scaling reports and regression comparison, built from result records only.

Placeholder until the reports issue: records already load with
``pandas.read_json("results/results.jsonl", lines=True)`` or ``suite.results.read_records``.
"""
