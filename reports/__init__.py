"""Scaling reports and regression comparison, built from result records only.

load      records → DataFrame; runs with identical settings but seed → repeat groups
scaling   weak / strong scaling efficiency against a declared baseline world size
plots     PNG plots of one workload (matplotlib, Agg)
render    report blocks → Markdown and self-contained HTML
report    assembles report.md, report.html and the plots
compare   like-for-like, direction-aware regression check with noise-aware tolerances
baseline  baseline files for compare (ok records, written atomically)
cli       the ``report``, ``compare`` and ``baseline save`` sub-commands
"""
