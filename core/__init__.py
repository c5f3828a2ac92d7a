"""What every other layer stands on, importing nothing of larsbench's: errors, the run spec and
its field roles, the cluster environment, precision, the results store and safe file writes."""
