#!/usr/bin/env bash
# Every GPU figure and target in one command (about 5 minutes on one H200): the gpu-marked tests, the
# pipeline (step alone vs fed by the DataModule, synthetic and a JPEG folder decoded by PIL workers and by
# nvJPEG, data.decode=cpu|gpu), the speed keys per precision,
# layout and TF32 for eccv16_full at 256 px and the quick-start unet_bins, the per-network throughput
# and MFU with hints_unet against colorization-pytorch's hint loop, unet_bins at batch 256, and the quick-start
# job end to end.
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # figures also written to OUT_DIR (default runs/gpu-<date>)
#
# On an offline machine without kornia/omegaconf, run ../shared/tools/device-prep.sh --all here first (the app
# and video tests need starlette, uvicorn and av too) and put
# the prefix it prints before this command. Each part prints its own last line `target: PASS|FAIL (...)`;
# the summary at the end repeats them, and the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$out"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
py=$(command -v python3 || command -v python)
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
workers=$(( $(nproc) > 16 ? 15 : $(nproc) - 1 ))
status=0

part() {  # part NAME TIMEOUT_S COMMAND...: run, tee to OUT/NAME.txt, keep its target line
    local name=$1 limit=$2; shift 2
    echo; echo "=== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    local rc=${PIPESTATUS[0]}
    local target
    target=$(grep -E '^target: |passed|failed' "$out/$name.txt" | tail -1)
    [ "$rc" -eq 124 ] && target="FAIL (over ${limit} s)"
    [ "$rc" -ne 0 ] && status=1
    printf '%-22s %4ds  rc=%-3s %s\n' "$name" $((SECONDS - start)) "$rc" "$target" >> "$out/summary.txt"
}

part gpu_tests 180 "$py" -m pytest -m gpu -q -p no:cacheprovider tests/
part pipeline 240 "$py" benchmarks/pipeline.py --device cuda --workers "$workers"
part speed_eccv16_256 90 "$py" benchmarks/speed_keys.py --device cuda --experiment eccv16_full \
    --set data.size=256 net.width=64 data.batch_size=64 --rounds 2 --steps 5 --skip speed.compile=true
part speed_unet_bins 60 "$py" benchmarks/speed_keys.py --device cuda --experiment unet_bins --rounds 2 --steps 10
part throughput 60 "$py" benchmarks/throughput.py --device cuda --experiment hints_unet unet_bins eccv16_full \
    --steps 10
# the small U-Nets' bf16 steps ran at 2-5% of peak at batch 32-64: the README job's network at a larger batch
part unet_bins_b256 40 "$py" benchmarks/throughput.py --device cuda --experiment unet_bins --size 64 --batch 256 \
    --steps 20
part readme_job 90 "$py" -m colorlab.fit experiment=unet_bins trainer=gpu data.num_workers="$workers" \
    logger=none run_dir="$out/readme_job"

echo; echo "=== summary ($out/summary.txt)"; cat "$out/summary.txt"
exit $status
