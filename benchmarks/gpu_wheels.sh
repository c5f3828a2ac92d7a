#!/usr/bin/env bash
# Fetches exactly the wheels of benchmarks/gpu_wheels.txt into DIR (emptied of wheels first),
# for the GPU machine: CPython 3.12, manylinux x86_64. Binary and pure wheels come from the
# package index; a line marked "sdist" is built here from its source release into a
# py3-none-any wheel (DeepSpeed: its ops compile on first use, none is prebuilt).
#   bash benchmarks/gpu_wheels.sh .whl      # then carry .whl to the GPU machine
# PYTHON (default .venv/bin/python) builds the sdists: it needs torch and setuptools.
set -euo pipefail
dir=${1:?usage: bash benchmarks/gpu_wheels.sh DIR}
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
list=benchmarks/gpu_wheels.txt
mkdir -p "$dir"
rm -f "$dir"/*.whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
count=0
while read -r spec how; do
    [[ -z $spec || $spec == \#* ]] && continue
    count=$((count + 1))
    if [[ ${how:-} == sdist ]]; then
        "$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$dir" "$spec"
    else
        "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" --dest "$dir" "$spec"
    fi
done <"$list"
wheels=$(find "$dir" -maxdepth 1 -type f -name '*.whl' | wc -l)
if ((wheels != count)); then
    echo "gpu_wheels: $list names $count packages but $dir holds $wheels wheels" >&2
    exit 1
fi
size=$(du -sk "$dir" | cut -f1)
ls -1 "$dir"
echo "gpu_wheels: $wheels wheels, $((size / 1024)) MiB in $dir"
if ((size > 40 * 1024)); then
    echo "gpu_wheels: over 40 MiB: the working tree travelling with them must stay under 64 MiB" >&2
    exit 1
fi
