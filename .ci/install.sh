#!/usr/bin/env bash
# Sets up .venv at the repository root with larsbench and all three backends (DDP, DeepSpeed,
# Horovod), from the package registries alone. Safe to run again: an existing .venv is updated
# in place and a Horovod wheel built earlier on this machine is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "larsbench needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch and torchvision are pinned as a pair (constraints): torchvision's compiled ops only load
# against the torch build they were made for.
.venv/bin/python -m pip install --quiet -c .ci/constraints.txt -e '.[test,deepspeed]'
# Horovod is compiled against the torch just installed (a few minutes the first time).
bash .ci/install_horovod.sh .venv/bin/python
.venv/bin/python -m pip install --quiet -c .ci/constraints.txt -e '.[test,deepspeed,horovod]'
.venv/bin/python - <<'PY'
import deepspeed, horovod, torch, torchvision
print(f"larsbench env ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"deepspeed {deepspeed.__version__}, horovod {horovod.__version__}")
PY
