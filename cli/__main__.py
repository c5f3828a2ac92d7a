"""``python -m larsbench`` is the ``larsbench`` command."""

import sys

from larsbench.main import main

sys.exit(main())
