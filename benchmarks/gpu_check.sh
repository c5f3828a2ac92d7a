#!/usr/bin/env bash
# The GPU check (docs/gpu.md): on a bare machine with one CUDA GPU and no network, install the
# wheels carried in .whl/ and larsbench from this tree, then in one go, each stage under its
# own time limit, continuing after a failed one:
#   a. tests    the CUDA-only tests (pytest -m gpu), host-synchronisation checks included
#   b. train    ResNet-50 training throughput, 224 px synthetic, bf16 + channels_last,
#               eager and torch.compile'd, fused SGD, LARS and LARS's Triton kernels
#   c. lars     LARS.step() (every GPU variant) against fused SGD's, and a sync check
#   d. harness  the suite's Trainer.advance against a bare DDP loop on one GPU (NCCL)
#   e. runs     larsbench run --device cuda through DDP and DeepSpeed, records, report
#   f. loaders  data_loader cpu (16 workers) against gpu on a generated JPEG set
# and print a summary table. Everything lands in $OUT: gpu_check.log (this output),
# summary.txt, summary.json and gpu_check.tar.gz (stage logs, records, event logs, report).
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine (about 6 minutes on an H200)
#   bash benchmarks/gpu_check.sh --dry-run   # the same stages on the CPU at toy sizes, no wheels
#                                            # (or GPU_CHECK_DRY_RUN=1)
# GPU_CHECK_BUDGET (seconds, default 450) bounds the whole check: later stages get what is left.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

DRY=${GPU_CHECK_DRY_RUN:-0}
[[ ${1:-} == --dry-run ]] && DRY=1
BUDGET=${GPU_CHECK_BUDGET:-450}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
OUT=${OUT:-$WORK/out}
mkdir -p "$WORK/logs" "$WORK/notes" "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
tee=$!
if ((DRY)); then
    PY=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
else
    PY=${PYTHON:-python3}
fi
export DRY WORK PY PYTHONUNBUFFERED=1 LARSBENCH_DATA_CACHE=$WORK/data-cache

log() { printf '[%s +%3ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$WORK/stages.tsv"; }
# A stage's remark (what it left out, and why), shown in the summary.
note() { printf '%s; ' "$*" >>"$WORK/notes/$STAGE"; echo "$*"; }
export -f note

skip_stage() {
    record "$1" skipped 0 "$2"
    log "stage $1: skipped: $2"
}

run_stage() { # name, cap in seconds, function
    local name=$1 cap=$2 fn=$3 left limit started rc status
    left=$((BUDGET - SECONDS))
    if ((left < 20)); then
        skip_stage "$name" "no time left in the ${BUDGET} s budget"
        return
    fi
    limit=$((cap < left ? cap : left))
    log "stage $name: start (limit ${limit} s)"
    started=$SECONDS
    # timeout signals the whole process group: launchers and their ranks end with the stage
    STAGE=$name timeout -k 10 "$limit" bash -c "$fn" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    case $rc in
    0) status=ok ;;
    124 | 137) status="timeout (${limit} s)" ;;
    *) status="failed (exit $rc)" ;;
    esac
    record "$name" "$status" $((SECONDS - started)) "$(cat "$WORK/notes/$name" 2>/dev/null)"
    tail -n 12 "$WORK/logs/$name.log" | sed 's/^/    /'
    log "stage $name: $status in $((SECONDS - started)) s"
}

# -- the stages (each runs in its own bash under timeout) -----------------------------------

stage_tests() {
    local files
    mapfile -t files < <(grep -rl --include='test_*.py' 'pytest.mark.gpu' tests | sort)
    echo "files with CUDA-only tests: ${files[*]}"
    "$PY" -m pytest -q -p no:cacheprovider -m gpu -o addopts= -ra "${files[@]}"
}

stage_train() {
    local size=(--model resnet50 --batch 256 --image-size 224 --modes eager compiled --warmup 10 --steps 30)
    if ((DRY)); then
        size=(--model tiny_cnn --batch 8 --image-size 16 --modes eager --warmup 1 --steps 2 --device cpu)
        note "compiled mode left out of the dry run: torch.compile takes minutes on a CPU"
    fi
    "$PY" benchmarks/gpu_throughput.py "${size[@]}" --precision bf16 --channels-last \
        --optimizers sgd lars lars-triton --optimizer-rounds 0 --json "$WORK/throughput.json"
}

stage_lars() {
    local size=(--model resnet50 --rounds 50)
    ((DRY)) && size=(--model tiny_cnn --rounds 3 --device cpu)
    "$PY" -m benchmarks.gpu_lars_step "${size[@]}" --json "$WORK/lars_step.json"
}

stage_harness() {
    local size=(--harness-device cuda --harness-model resnet50 --harness-image-size 224 --harness-micro-batch 64 --harness-rounds 4)
    ((DRY)) && size=(--harness-device cpu --harness-model tiny_cnn --harness-image-size 16 --harness-micro-batch 4 --harness-rounds 2)
    # exit status 1 is a missed target: the summary judges it; the figures must exist
    "$PY" -m benchmarks.run --skip-lars --skip-zero --harness-ranks 1 "${size[@]}" --json "$WORK/harness.json"
    test -s "$WORK/harness.json"
}

stage_runs() {
    local size=(--model resnet50 --image-size 224 --num-classes 1000 --synthetic-samples 2560 --micro-batch 256
        --steps 30 --timing-warmup-steps 10 --device cuda) backends=(ddp deepspeed) failed=0 backend
    if ((DRY)); then
        size=(--model tiny_cnn --image-size 16 --num-classes 10 --synthetic-samples 32 --micro-batch 8
            --steps 2 --timing-warmup-steps 0 --device cpu)
    fi
    for backend in "${backends[@]}"; do
        "$PY" -m larsbench run --backend "$backend" --world-size 1 --dataset synthetic --precision bf16 --channels-last \
            "${size[@]}" --no-report --output "$WORK/runs" || failed=1
    done
    "$PY" -m larsbench report "$WORK/runs" -o "$WORK/report" || failed=1
    return "$failed"
}

stage_loaders() {
    # 13,000 train JPEGs of 320 px (ImageNet has 1,300 per class): 100 steps are 2 epochs
    local classes=10 set=(--train-per-class 1300 --val-per-class 10 --image-size 320)
    local size=(--model resnet50 --image-size 224 --micro-batch 256 --steps 100 --timing-warmup-steps 10 --device cuda)
    local loaders=("cpu 16" "gpu 4") failed=0 loader workers
    if ((DRY)); then
        classes=2 set=(--train-per-class 8 --val-per-class 2 --image-size 20 --parts 1)
        size=(--model tiny_cnn --image-size 16 --micro-batch 4 --steps 2 --timing-warmup-steps 0 --device cpu)
        loaders=("cpu 0")
        note "data_loader gpu left out of the dry run: it decodes with nvjpeg on a CUDA device"
    fi
    "$PY" -m benchmarks.gpu_data "$WORK/jpegs" --classes "$classes" "${set[@]}" || return 1
    for loader in "${loaders[@]}"; do
        read -r loader workers <<<"$loader"
        "$PY" -m larsbench run --data-loader "$loader" --data-workers "$workers" --dataset imagefolder \
            --data-dir "$WORK/jpegs" --num-classes "$classes" --eval-every-epochs 1000 --precision bf16 --channels-last \
            "${size[@]}" --no-report --output "$WORK/loaders" || failed=1
    done
    return "$failed"
}
export -f stage_tests stage_train stage_lars stage_harness stage_runs stage_loaders

# -- setup ------------------------------------------------------------------------------------

log "GPU check$( ((DRY)) && echo ' (dry run)'): python $PY, work folder $WORK, output $OUT, budget ${BUDGET} s"
ready=1
if ((DRY)); then
    skip_stage setup "dry run: uses this environment, installs nothing"
else
    started=$SECONDS
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        log "no wheels in .whl/: make them with 'bash benchmarks/gpu_wheels.sh .whl' and carry .whl"
        ready=0
    elif ! timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl; then
        ready=0
    fi
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
    if ((ready)) && ! timeout 180 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --no-compile \
        --upgrade --target /tmp/site .; then
        ready=0
    fi
    if ((ready)) && ! timeout 120 "$PY" -c 'import deepspeed, larsbench.main, mlperf_logging, pydantic, torch, torchvision, triton
print(f"imports: larsbench (from {larsbench.main.__file__}), torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"triton {triton.__version__}, deepspeed {deepspeed.__version__}, pydantic {pydantic.VERSION}; "
      f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else None}")'; then
        ready=0
    fi
    record setup "$( ((ready)) && echo ok || echo failed)" $((SECONDS - started)) ""
    log "setup: $( ((ready)) && echo ok || echo 'failed: every stage is skipped')"
fi

STAGES=("a.tests 100 stage_tests" "b.train 200 stage_train" "c.lars 80 stage_lars" "d.harness 80 stage_harness"
    "e.runs 120 stage_runs" "f.loaders 150 stage_loaders")
# On the GPU the stages run one at a time (they time the device); a dry run times nothing and
# runs three at a time: on two cores that halves its wall time (its processes spend part of
# theirs waiting on launchers and rendezvous).
JOBS=$( ((DRY)) && echo "${GPU_CHECK_JOBS:-3}" || echo 1)
# one thread per process there: OpenMP threads of several stages spinning on two cores waste them
((DRY)) && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
running=() # stage processes by pid: a bare `wait` would also wait for the tee behind this output
for entry in "${STAGES[@]}"; do
    read -r name cap fn <<<"$entry"
    if ((!ready)); then
        skip_stage "$name" "setup failed"
    elif ((DRY)) && [[ $name == a.tests ]]; then
        skip_stage "$name" "needs CUDA: every test it selects is marked gpu and skips without a device"
    elif ((JOBS > 1)); then
        while ((${#running[@]} >= JOBS)); do
            wait -n "${running[@]}"
            for i in "${!running[@]}"; do kill -0 "${running[$i]}" 2>/dev/null || unset "running[$i]"; done
        done
        run_stage "$name" "$cap" "$fn" &
        running+=($!)
    else
        run_stage "$name" "$cap" "$fn"
    fi
done
((${#running[@]})) && wait "${running[@]}"

# -- summary and what comes back --------------------------------------------------------------

summary_flags=(--out "$OUT")
((DRY)) && summary_flags+=(--dry-run)
"$PY" -m benchmarks.gpu_summary "$WORK" "${summary_flags[@]}" || log "the summary could not be written"
tar -czf "$OUT/gpu_check.tar.gz" -C "$WORK" --exclude=jpegs --exclude=data-cache --exclude=out . 2>/dev/null ||
    log "the tarball could not be written"
log "done in $SECONDS s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
! grep -qE $'\t(failed|timeout)' "$WORK/stages.tsv"
status=$?
exec >&- 2>&-
wait "$tee" 2>/dev/null
exit $status
