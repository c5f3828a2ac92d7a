"""Experiments and how they run on this machine: experiment files → validated run specs
(``config``), the local launcher (``launch``), one rank's entry point (``worker``), the ``run``
and ``data`` commands (``cli``) and the end-of-run table (``summary``)."""
