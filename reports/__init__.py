"""Scaling reports and regression comparison, built from result records only.

load      records → DataFrame; runs with identical settings but seed → repeat groups
scaling   weak / strong scaling efficiency against a declared baseline world size
study     large-batch study: recipes by global batch, the time-to-accuracy frontier
telemetry LARS telemetry side files: per-layer trust ratio and effective LR
plots     PNG plots of one workload (matplotlib, Agg); study_plots and telemetry_plots likewise
study_report  the study and LARS telemetry sections of the report
render    report blocks → Markdown and self-contained HTML
report    assembles report.md, report.html and the plots
compare   like-for-like, direction-aware regression check with noise-aware tolerances
baseline  baseline files for compare (ok records, written atomically)
cli       the ``report``, ``compare`` and ``baseline save`` sub-commands
"""
