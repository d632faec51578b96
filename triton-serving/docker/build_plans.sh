#!/usr/bin/env bash
# Entry point of the compose `plans` service (nvcr.io/nvidia/tensorrt:24.10-py3, the TensorRT of the same
# NGC release as tritonserver:24.10-py3: a plan only loads in the TensorRT version that built it).
# It runs build/trt/build_plans.sh, the trtexec commands written by `triton-serving repo` (make repo) on the host,
# and writes build/repository-gpu/minilm_trt_{fp32,fp16,int8}/1/model.plan. Plans already newer than their
# ONNX are kept, so `docker compose up` builds them once.
set -euo pipefail
cd "${WORKSPACE:-/workspace}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no NVIDIA GPU visible (nvidia-smi); TensorRT plans must be built on the GPU that serves them" >&2
  exit 3
fi
script=build/trt/build_plans.sh
if [ ! -f "$script" ]; then
  echo "error: $script is missing; run 'make repo' on the host first (it exports the ONNX forms)" >&2
  exit 2
fi
fresh=1
for m in fp32 fp16 int8; do
  plan=build/repository-gpu/minilm_trt_$m/1/model.plan
  if [ ! -s "$plan" ] || [ "$plan" -ot build/onnx/fp32/model.onnx ]; then fresh=0; fi
done
if [ "$fresh" = 1 ] && [ "${FORCE_PLANS:-0}" != 1 ]; then
  echo "plans up to date (FORCE_PLANS=1 to rebuild)"
  exit 0
fi
export PATH="/usr/src/tensorrt/bin:$PATH"
bash "$script"
ls -l build/repository-gpu/minilm_trt_*/1/model.plan
