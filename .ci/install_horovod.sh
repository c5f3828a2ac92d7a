#!/usr/bin/env bash
# Installs Horovod (PyTorch, gloo, CPU operations over gloo; GPU operations over NCCL where a CUDA
# toolkit is present) into an existing virtual environment.
#
#   bash .ci/install_horovod.sh PATH_TO_VENV_PYTHON
#
# horovod 0.28.1 is the last release and only ships as an sdist whose CMake pins C++14 (C++11 for
# its CUDA kernels), while torch >= 2.1 needs C++17 and torch >= 2.14 needs C++20. So the sdist is
# patched (the same change as upstream PR #3998, merged after 0.28.1 and never released) and built
# here. The wheel is cached, keyed by everything its extension was compiled against, so later runs
# only install it.
#
# Environment:
#   LARSBENCH_WHEEL_CACHE       wheel cache folder (default ~/.cache/larsbench/wheels)
#   HOROVOD_CMAKE               cmake to use (must be 3.13 to 3.x)
#   HOROVOD_BUILD_CUDA_CC_LIST  GPU architectures for horovod's CUDA kernels (default 90)
#   CUDA_HOME                   CUDA toolkit for those kernels (default: /usr/local/cuda, then the
#                               toolkit of the nvcc on PATH); none found means a CPU-only build
#   HOROVOD_NCCL_HOME           NCCL for the GPU operations (default: a system NCCL, else the
#                               nvidia-nccl wheel torch depends on); with a toolkit and no NCCL the
#                               build stops: Horovod's CUDA gradients would go through host memory
set -euo pipefail

HOROVOD_VERSION=0.28.1

say() { echo "install_horovod: $*"; }
die() { echo "install_horovod: ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 PATH_TO_VENV_PYTHON"
py=$1
[ -x "$py" ] || die "$py is not an executable Python"

"$py" -c 'import torch' 2>/dev/null \
    || die "torch does not import with $py: install torch first (horovod's extension is built against it)"

# Read the torch build once: the C++ standard, the CUDA kernels and the cache key all follow from it.
torch_info=$("$py" - <<'EOF'
import platform, sys, torch
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
# torch >= 2.14's ATen headers refuse anything below C++20; >= 2.1 needs C++17.
std = 20 if (major, minor) >= (2, 14) else 17
print(torch.__version__, torch.version.cuda or "none",
      f"cp{sys.version_info.major}{sys.version_info.minor}", std, platform.machine())
EOF
)
read -r torch_version torch_cuda py_tag cxx_std machine <<<"$torch_info"

# Debian's cmake 3.25 works; pip's cmake 4.x refuses gloo's old cmake_minimum_required.
cmake_ok() { "$1" --version 2>/dev/null | head -1 | grep -Eq 'version 3\.(1[3-9]|[2-9][0-9])'; }
cmake_bin=""
for c in "${HOROVOD_CMAKE:-}" /usr/bin/cmake "$(command -v cmake || true)"; do
    if [ -n "$c" ] && cmake_ok "$c"; then cmake_bin=$c; break; fi
done
[ -n "$cmake_bin" ] || die "need cmake 3.13..3.x (cmake 4 cannot build gloo): apt-get install cmake, or set HOROVOD_CMAKE"

# With a CUDA build of torch, horovod's CMake compiles its CUDA kernels whenever torch can see a
# toolkit (torch looks at CUDA_HOME, then nvcc on PATH, then /usr/local/cuda); without one it
# builds a CPU-only library, which is all gloo CPU operations need. An nvcc on PATH may be a
# wrapper script outside the toolkit (/usr/local/bin/nvcc here), so a candidate counts only
# with the toolkit's headers beside it.
is_toolkit() { [ -n "$1" ] && [ -x "$1/bin/nvcc" ] && [ -f "$1/include/cuda_runtime.h" ]; }
cuda_home=""
if [ "$torch_cuda" != none ]; then
    nvcc_on_path=$(command -v nvcc || true)
    nvcc_real=$([ -z "$nvcc_on_path" ] || readlink -f "$nvcc_on_path")
    for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda "${nvcc_real%/bin/nvcc}"; do
        if is_toolkit "$d"; then cuda_home=$d; break; fi
    done
fi
# NCCL for Horovod's GPU operations, so that on a GPU cluster Horovod all-reduces CUDA tensors
# over the same transport as DDP and DeepSpeed. The nvidia-nccl wheel ships the header and
# libnccl.so.2 but no libnccl.so to link against: the build stages that name. At run time torch
# has already loaded the same libnccl.so.2.
nccl_home=""
nccl_version=""
if [ -n "$cuda_home" ]; then
    if [ -n "${HOROVOD_NCCL_HOME:-}" ]; then
        nccl_home=$HOROVOD_NCCL_HOME
    elif [ -f /usr/include/nccl.h ] && compgen -G "/usr/lib/*/libnccl.so" >/dev/null; then
        nccl_home=/usr
    else
        wheel_nccl=$("$py" -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null || true)
        if [ -n "$wheel_nccl" ] && [ -f "$wheel_nccl/include/nccl.h" ] && [ -f "$wheel_nccl/lib/libnccl.so.2" ]; then
            nccl_home=$wheel_nccl
        fi
    fi
    [ -n "$nccl_home" ] && [ -f "$nccl_home/include/nccl.h" ] \
        || die "a CUDA toolkit is at $cuda_home but no NCCL was found (no HOROVOD_NCCL_HOME, system NCCL or nvidia-nccl wheel): Horovod's GPU gradients would go through host memory; install NCCL or set HOROVOD_NCCL_HOME"
    nccl_version=$(sed -n 's/^#define NCCL_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' "$nccl_home/include/nccl.h" | head -3 | paste -sd.)
fi
if [ -n "$cuda_home" ]; then
    cc_list=${HOROVOD_BUILD_CUDA_CC_LIST:-90}
    nvcc_version=$("$cuda_home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
    variant="cuda${nvcc_version}-sm${cc_list//,/_}-nccl${nccl_version}"
else
    variant=cpu
fi

# The extension links against torch's C++ ABI, so any change of torch, Python or toolkit must miss.
cache_root=${LARSBENCH_WHEEL_CACHE:-$HOME/.cache/larsbench/wheels}
key="horovod-${HOROVOD_VERSION}_torch-${torch_version}_${py_tag}_${machine}_${variant}"
cache_dir="$cache_root/$key"
say "torch $torch_version, $py_tag, C++$cxx_std, kernels: $variant"

find_wheel() { compgen -G "$cache_dir/horovod-${HOROVOD_VERSION}-*.whl" | head -1 || true; }

# Build prerequisites (no build isolation, so they must be in the venv) and horovod's runtime deps
# (setup.py's require_list; cffi because the PyTorch extension is built).
say "installing build prerequisites"
"$py" -m pip install --quiet setuptools wheel cloudpickle psutil pyyaml packaging 'cffi>=1.4.0'

wheel_file=$(find_wheel)
if [ -n "$wheel_file" ]; then
    say "using cached wheel $wheel_file"
else
    command -v g++ >/dev/null || die "g++ not found: apt-get install g++"
    py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [ -f "$py_include/Python.h" ] || die "Python headers missing ($py_include/Python.h): install python3-dev"

    work=$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")
    log=$(mktemp "${TMPDIR:-/tmp}/horovod-build.XXXXXX.log")
    trap 'rm -rf "$work"' EXIT

    say "downloading horovod $HOROVOD_VERSION sdist"
    "$py" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work" >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "download failed (log: $log)"; }
    tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"

    # Fail loudly if a line to patch is missing rather than build with the old standard.
    patch_line() { # file from to
        grep -Eq "^[[:space:]]*$2[[:space:]]*$" "$src/$1" || die "unexpected sdist: no '$2' in $1"
        sed -i -E "s/^([[:space:]]*)$2[[:space:]]*$/\1$3/" "$src/$1"
    }
    patch_line CMakeLists.txt 'set\(CMAKE_CXX_STANDARD 14\)' "set(CMAKE_CXX_STANDARD $cxx_std)"
    patch_line horovod/torch/CMakeLists.txt 'set\(CMAKE_CXX_STANDARD 14\)' "set(CMAKE_CXX_STANDARD $cxx_std)"
    # nvcc with C++11 fails on gcc 12's headers; the kernels do not include torch, so 17 suffices.
    patch_line horovod/common/ops/cuda/CMakeLists.txt 'set\(CMAKE_CUDA_STANDARD 11\)' 'set(CMAKE_CUDA_STANDARD 17)'

    # GPU collectives are NCCL's or none, whatever the caller's environment says.
    env_unset=(-u HOROVOD_GPU -u HOROVOD_GPU_OPERATIONS -u HOROVOD_GPU_ALLREDUCE -u HOROVOD_GPU_ALLGATHER
               -u HOROVOD_GPU_BROADCAST -u HOROVOD_GPU_ALLTOALL -u HOROVOD_GPU_REDUCESCATTER)
    build_env=(
        HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_CPU_OPERATIONS=gloo
        HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
        HOROVOD_CMAKE="$cmake_bin"
        # setup.py passes -j8 to make unless MAKEFLAGS is set; match the cores instead.
        MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}"
    )
    if [ -n "$cuda_home" ]; then
        if ! compgen -G "$nccl_home/lib/libnccl.so" >/dev/null; then  # the wheel's: link name staged
            mkdir -p "$work/nccl/lib"
            ln -s "$nccl_home/include" "$work/nccl/include"
            ln -s "$nccl_home/lib/libnccl.so.2" "$work/nccl/lib/libnccl.so"
            nccl_home=$work/nccl
        fi
        build_env+=(CUDA_HOME="$cuda_home" HOROVOD_CUDA_HOME="$cuda_home" HOROVOD_BUILD_CUDA_CC_LIST="$cc_list"
                    HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME="$nccl_home" HOROVOD_NCCL_LINK=SHARED)
    elif [ "$torch_cuda" != none ]; then
        # horovod has no switch to skip its CUDA kernels: a CUDA torch turns them on as soon as
        # torch sees any nvcc, and a stray one without a toolkit fails the configure. Hide it.
        env_unset+=(-u CUDA_HOME -u CUDA_PATH -u HOROVOD_CUDA_HOME)
        build_env+=(PATH="$(tr : '\n' <<<"$PATH" | while read -r d; do [ -x "$d/nvcc" ] || echo "$d"; done | paste -sd:)")
    fi

    say "building wheel (several minutes; log: $log)"
    start=$SECONDS
    if ! env "${env_unset[@]}" "${build_env[@]}" \
            "$py" -m pip wheel -v --no-deps --no-build-isolation --use-pep517 -w "$work/dist" "$src" >>"$log" 2>&1; then
        # The first compiler or CMake errors say why; the tail is mostly pip's traceback.
        { echo "----- first errors in $log -----"
          grep -E -m 20 'error:|Error|FAILED' "$log" || true
          echo "----- last 30 lines -----"
          tail -n 30 "$log"; } >&2
        die "horovod build failed after $((SECONDS - start)) s (full log: $log)"
    fi
    built=$(compgen -G "$work/dist/horovod-${HOROVOD_VERSION}-*.whl" | head -1 || true)
    [ -n "$built" ] || die "pip reported success but left no wheel (log: $log)"
    # Move into place only when complete, so a concurrent or interrupted run never sees half a wheel.
    mkdir -p "$cache_dir"
    cp "$built" "$cache_dir/.$(basename "$built").tmp"
    mv "$cache_dir/.$(basename "$built").tmp" "$cache_dir/$(basename "$built")"
    wheel_file=$(find_wheel)
    rm -f "$log"
    say "built in $((SECONDS - start)) s, cached as $wheel_file"
fi

# Force the reinstall: an installed horovod of the same version may have been built against
# another torch, and pip would keep it.
"$py" -m pip install --quiet --no-deps --force-reinstall "$wheel_file"

EXPECT_NCCL=$([ -n "$cuda_home" ] && echo 1 || echo 0) "$py" - <<'EOF' || die "horovod installed but its PyTorch extension does not work (see above)"
import os
import horovod, horovod.torch as hvd  # horovod.torch itself has no __version__
assert hvd.gloo_built(), "horovod was built without gloo"
if os.environ["EXPECT_NCCL"] == "1":
    assert hvd.nccl_built(), "horovod was built without NCCL although a CUDA toolkit is here"
print(f"install_horovod: horovod {horovod.__version__} ready (gloo built: {hvd.gloo_built()}, nccl built: {bool(hvd.nccl_built())})")
EOF
