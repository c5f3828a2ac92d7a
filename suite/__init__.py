"""larsbench: benchmark large-batch distributed training (LARS vs SGD) across backends."""

__version__ = "0.1.0"
