"""Scaling reports, regression checks and history, built from result records only.

load          records → DataFrame; a run's setting (the spec's measure fields + hardware) → repeat groups
scaling       weak / strong scaling efficiency against a declared baseline world size
attribution   the step time lost to scaling, split into data wait, compute and exposed communication
study         large-batch study: recipes by global batch, the time-to-accuracy frontier
telemetry     layer-wise telemetry side files: per-layer trust ratio and effective LR
comm          ``larsbench comm`` records: bus bandwidth against message size
predict       step time, throughput, efficiency and time to accuracy at unseen scales (predict_comm: an
              all-reduce's time on an allocation; predict_rcp: MLPerf's reference convergence points;
              predict_cli: the ``predict`` sub-command)
roofline      the step time a run's network and compute allow, and the likely causes of a gap
mlperf        MLCommons' compliance checker on the event logs, the summarizer's olympic score
plots         PNG plots of one workload (matplotlib, Agg); study_plots, telemetry_plots, history_plots likewise
study_report  the study and layer-wise telemetry sections of the report
render        report blocks → Markdown and self-contained HTML
report        assembles report.md, report.html and the plots
compare       like-for-like, direction-aware regression check that asks the noise first (Welch's t-test)
baseline      baseline files for compare (ok records, written atomically)
history_store nights and settings of many results files; changepoints: persistent steps in a series
history       the series over nights, their steps and what changed; history_report writes it
cli           the ``report``, ``compare``, ``baseline save`` and ``history`` sub-commands
"""
