"""``python -m larsbench`` is the ``larsbench`` command."""

import sys

from larsbench.cli import main

sys.exit(main())
