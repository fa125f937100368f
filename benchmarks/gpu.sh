#!/usr/bin/env bash
# Every GPU figure and target in one command, under 5 minutes on one GPU by construction: the parts run one
# after another, each under a time limit; the limits sum to 275 s, and no part runs past BUDGET_S (290 s) from
# the start, start-up checks included (a part is stopped at its limit, and killed 5 s later if it has not
# ended: 295 s at worst). A part that overruns keeps what it printed, and fails its line of the summary.
# Whatever a part leaves running (DataLoader workers, subprocesses) is killed when it ends; Ctrl-C stops the
# part, prints the summary so far and exits.
#
#   bash benchmarks/gpu.sh [--all] [--dry-run] [OUT_DIR]   # figures also written to OUT_DIR (runs/gpu-<date>)
#
#   --all      then, outside the 5 minutes: the gpu-marked tests (pytest -m gpu, 180 s), the README job with
#              trainer=gpu end to end (60 s), and torch.compile of the README job's network (90 s: its first
#              compilation alone can take a minute): about 10 minutes in all
#   --dry-run  print the parts, their limits and their sums, and exit (no GPU needed)
#
# The parts: the pipeline (the step alone against the step fed by the DataModule, synthetic and a JPEG folder
# decoded by PIL workers and by nvJPEG, data.decode=cpu|gpu) for eccv16_full at 256 px and for the README job's
# unet_bins at 64 px (Lightning's own cost per step); the speed keys per precision, layout and TF32 for both
# at 256 px and batch 64; the per-network throughput and MFU with hints_unet against colorization-pytorch's
# hint loop; unet_bins at batch 256.
# The limits are estimates from the one H200 measurement on record (docs/benchmarks.md, "GPU"): e.g. eccv16_full
# bf16 at 1393 img/s is 46 ms a step, and the pipeline times 4 fits of 165 steps and 3 data passes of 185 batches
# at that size. No run of this script on a GPU has been timed yet.
#
# On an offline machine without kornia/omegaconf, run ../shared/tools/device-prep.sh --all here first (the app
# and video tests need starlette, uvicorn and av too) and put the prefix it prints before this command. Each part
# prints its own last line `target: PASS|FAIL (...)`; the summary at the end repeats them, and the exit status is
# 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=290
all=0 dry=0 out=
for arg in "$@"; do
    case $arg in
        --all) all=1 ;;
        --dry-run) dry=1 ;;
        -*) echo "unknown option $arg (valid: --all, --dry-run, an output folder)" >&2; exit 2 ;;
        *) out=$arg ;;
    esac
done
out=${out:-runs/gpu-$(date -u +%Y%m%d-%H%M)}
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
workers=$(( $(nproc) > 16 ? 15 : $(nproc) - 1 ))
status=0 planned=0
deadline=$((SECONDS + BUDGET_S))

current= interrupted=0
trap 'interrupted=1; [ -n "$current" ] && kill -INT -- -"$current" 2>/dev/null' INT TERM

part() {  # part NAME LIMIT_S COMMAND...: run under min(LIMIT_S, time left), shown and kept in OUT/NAME.txt
    local name=$1 limit=$2; shift 2
    planned=$((planned + limit))
    if [ "$dry" -eq 1 ]; then printf '%-24s %4d s  ' "$name" "$limit"; printf '%q ' "$@"; echo; return; fi
    [ "$interrupted" -eq 1 ] && exit 130  # Ctrl-C between two parts
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 5 ]; then
        echo; echo "=== $name: no time left"
        printf '%-24s    -   rc=-   FAIL (no time left of the %d s budget)\n' "$name" "$BUDGET_S" >> "$out/summary.txt"
        status=1; return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo; echo "=== $name (at most $limit s): $*"
    local start=$SECONDS
    # timeout runs the part in a process group of its own (pid $current): at the end everything left in it
    # (DataLoader workers, a test's subprocesses) is killed, so nothing runs on into the next part; its output
    # goes to a file, shown by tail until the part ends, so a leftover process cannot hold a pipe open
    : > "$out/$name.txt"
    timeout -k 5 "$limit" "$@" > "$out/$name.txt" 2>&1 &
    current=$!
    tail -n +1 -s 0.2 -f --pid="$current" "$out/$name.txt" &
    local shown=$!
    wait "$current" 2>/dev/null
    local rc=$?
    while kill -0 "$current" 2>/dev/null; do wait "$current" 2>/dev/null; rc=$?; done  # cut short by the trap
    kill -KILL -- -"$current" 2>/dev/null
    wait "$shown" 2>/dev/null
    current=
    if [ "$interrupted" -eq 1 ]; then
        printf '%-24s %4ds  rc=%-3s %s\n' "$name" $((SECONDS - start)) "$rc" "interrupted" >> "$out/summary.txt"
        echo; echo "=== interrupted; summary so far ($out/summary.txt)"; cat "$out/summary.txt"; exit 130
    fi
    local target
    target=$(grep -E '^target: |^[0-9]+ (passed|failed)|^run written to' "$out/$name.txt" | tail -1)
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        target="FAIL (over ${limit} s; its figures so far are in $out/$name.txt)"
    fi
    [ "$rc" -ne 0 ] && status=1
    printf '%-24s %4ds  rc=%-3s %s\n' "$name" $((SECONDS - start)) "$rc" "$target" >> "$out/summary.txt"
}

if [ "$dry" -eq 0 ]; then
    timeout 60 "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing \
to measure')" || exit 2
    mkdir -p "$out" && [ -w "$out" ] || { echo "cannot write to $out" >&2; exit 2; }
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
fi

# -- the figures, within BUDGET_S -------------------------------------------------------------------------------
part pipeline_eccv16_256 115 "$py" benchmarks/pipeline.py --device cuda --workers "$workers"
part pipeline_unet_bins_64 25 "$py" benchmarks/pipeline.py --device cuda --experiment unet_bins --size 64 \
    --batch 32 --precision bf16-mixed --sources synthetic repeated --workers "$workers"
part speed_eccv16_256 60 "$py" benchmarks/speed_keys.py --device cuda --experiment eccv16_full \
    --set data.size=256 net.width=64 data.batch_size=64 --rounds 2 --steps 5 --max-seconds 4 --skip speed.compile=true
part speed_unet_bins_256 30 "$py" benchmarks/speed_keys.py --device cuda --experiment unet_bins \
    --set data.size=256 data.batch_size=64 --rounds 2 --steps 6 --skip speed.compile=true
part throughput 28 "$py" benchmarks/throughput.py --device cuda --experiment hints_unet unet_bins eccv16_full \
    --steps 10
# the small U-Nets' bf16 steps ran at 2-5% of peak at batch 32-64: the README job's network at a larger batch
part unet_bins_b256 17 "$py" benchmarks/throughput.py --device cuda --experiment unet_bins --size 64 --batch 256 \
    --steps 20
figures=$planned

# -- with --all, outside the 5 minutes: does the product work on the GPU, and what compiling costs -----------------
if [ "$all" -eq 1 ]; then
    deadline=$((SECONDS + 330))
    part gpu_tests 180 "$py" -m pytest -m gpu -q -p no:cacheprovider tests/
    part readme_job 60 "$py" -m colorlab.fit experiment=unet_bins trainer=gpu data.num_workers="$workers" \
        logger=none run_dir="$out/readme_job"
    # compilation at the quick-start job's shape, where its cost is paid once per run of 768 steps
    part compile_unet_bins 90 "$py" benchmarks/speed_keys.py --device cuda --experiment unet_bins --rounds 2 \
        --steps 10 --skip optim.fused=true speed.channels_last=true speed.channels_last=false fp32 "fp32 NHWC" \
        "fp32 NCHW" "fp32 NHWC, TF32 off" "fp32 NCHW, TF32 off"
fi

if [ "$dry" -eq 1 ]; then
    echo "figures: $figures s of part limits (no part runs past $BUDGET_S s from the start)"
    [ "$all" -eq 1 ] && echo "with --all: $((planned - figures)) s more"
    [ "$figures" -le "$BUDGET_S" ] || { echo "over the budget"; exit 1; }
    exit 0
fi
echo; echo "=== summary ($out/summary.txt)"; cat "$out/summary.txt"
exit $status
