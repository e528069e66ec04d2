#!/usr/bin/env bash
# The GPU check: one script, about 8 minutes on one GPU, with full-size architectures and random weights
# (no checkpoint can be downloaded on a lent GPU machine either). It measures
#   1. each model transform's images/s in bf16 through the real transform code and the batched runner, the
#      runner's wait share (the share of the loop spent waiting for the DataLoader) and peak GPU memory
#      (benchmarks/bench_neural.py, one fresh process per transform);
#   2. captioning tokens/s with the LLaVA-1.5-7B architecture in bf16 (benchmarks/bench_captions.py);
#   3. the recipe=paper training step rate, ConvNeXt-T at 224, batch 128 (benchmarks/gpu_check.py train);
# and prints rows for benchmarks/results/transforms.md (benchmarks/gpu_check.py rows).
#
#   benchmarks/gpu_check.sh                 # on a machine with one CUDA GPU
#   benchmarks/gpu_check.sh --smoke         # tiny architectures on the CPU: checks the script in about a minute,
#                                           # measures nothing (tests/test_gpu_check.py runs it)
#
# Environment: PYTHON (default .venv/bin/python), TRANSFORMS (default "seg depth object_det sam vae imagenet_cls";
# object_crops and object_context run the object_det network), OUT (default a fresh folder under /tmp; the JSON of every step
# and rows.md are left there). Each step has its own time cap (`timeout`), so one slow model cannot take the
# others' time; a step that fails or runs out of time is reported as not measured, and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$OUT"
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1

if (( SMOKE )); then
  DEVICE=cpu
  NEURAL=(--tiny --device cpu --dtypes float32 --batches 2 --images 4 --max-seconds 20 --workers 0)
  CAPTIONS=(--size tiny --device cpu --batch-sizes 2 --images 4 --max-new-tokens 4)
  TRAIN=(--smoke --device cpu --seconds 1)
  NEURAL_CAP=300; CAPTIONS_CAP=120; TRAIN_CAP=120
else
  DEVICE=cuda
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --smoke')" || exit 2
  # 7 transforms x (interpreter + model build ~15-25 s, then at most 20 s of batches): about 4.5 minutes
  NEURAL=(--device cuda --dtypes bfloat16 --batches 32 --images 256 --max-seconds 20)
  # LLaVA-1.5-7B random bf16 weights built on the GPU, then 2 batch sizes x 32 images x 32 new tokens
  CAPTIONS=(--size real --device cuda --batch-sizes 8 32 --images 32 --max-new-tokens 32)
  TRAIN=(--device cuda --seconds 20)
  NEURAL_CAP=300; CAPTIONS_CAP=150; TRAIN_CAP=60
fi
read -r -a TRANSFORMS <<< "${TRANSFORMS:-seg depth object_det sam vae imagenet_cls}"

echo "GPU check ($([[ $SMOKE == 1 ]] && echo SMOKE: tiny models on the CPU, nothing measured || echo full size, bf16)); output in $OUT"
start=$(date +%s)
timeout "$NEURAL_CAP" "$PYTHON" benchmarks/bench_neural.py "${NEURAL[@]}" --transforms "${TRANSFORMS[@]}" \
  --json "$OUT/neural.json" > "$OUT/neural.log" 2>&1 || echo "model transforms: failed or out of time (see $OUT/neural.log)"
timeout "$CAPTIONS_CAP" "$PYTHON" benchmarks/bench_captions.py "${CAPTIONS[@]}" --out "$OUT/captions.json" \
  > "$OUT/captions.log" 2>&1 || echo "captioning: failed or out of time (see $OUT/captions.log)"
timeout "$TRAIN_CAP" "$PYTHON" benchmarks/gpu_check.py train "${TRAIN[@]}" --json "$OUT/train.json" \
  > "$OUT/train.log" 2>&1 || echo "training step: failed or out of time (see $OUT/train.log)"
"$PYTHON" benchmarks/gpu_check.py rows "$OUT" | tee "$OUT/rows.md"
echo "device $DEVICE; $(( $(date +%s) - start )) s in all; load average $(cut -d' ' -f1-3 /proc/loadavg)"
