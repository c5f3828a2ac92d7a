"""``horovodrun``, with its one slow question answered once per installation:
``python -m larsbench.backends.horovod_run <horovodrun's arguments>``.

Before every launch, horovodrun asks whether Horovod was built with Gloo: it forks a child that
imports torch and Horovod's torch extension only to ask it (1.5 s of every local Horovod run on
the project's 2-vCPU VM, before any rank starts). The answer is a property of the installed
extension, so it is kept in larsbench's cache (``core.cache``), keyed by Horovod's version and
the extension file's path, size and modification time: a rebuilt or reinstalled Horovod is asked
again. Everything else is horovodrun's own command line, run as it is.
"""

from __future__ import annotations

import os
import sys

import horovod
from horovod.common import util
from horovod.runner import launch

from larsbench.core.cache import cached


def extension_key() -> dict[str, object] | None:
    """What the answer depends on, or None when the torch extension is not where Horovod's own
    check looks (horovodrun then asks, and explains, itself)."""
    path = util.get_extension_full_path(horovod.__file__, "torch", "mpi_lib_v2")
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return {"horovod": horovod.__version__, "extension": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def gloo_built_once() -> bool | None:
    key = extension_key()
    if key is None:
        return None
    built, _ = cached("horovod_gloo_built", key, lambda: float(bool(util.gloo_built())))
    return bool(built)


def main() -> int:
    built = gloo_built_once()
    if built:  # a negative answer is left to horovodrun, which says what to reinstall
        launch.gloo_built = lambda verbose=False: True
    sys.argv[0] = "horovodrun"
    return launch.run_commandline()


if __name__ == "__main__":
    sys.exit(main())
