# triton-serving's part of `make compose-test` (sourced by scripts/compose-test.sh; see its contract there).
# The job: export -> triton (CPU, healthy) -> compare -> perf, one `docker compose up` that exits with perf's status.

# shellcheck disable=SC2034  # read by compose-test.sh
JOB_UP=(docker compose up --exit-code-from perf)
JOB_TIMEOUT=2400   # a fresh machine: the export and the forms (~5 min on 2 cores), drift, compare, perf

# PyTorch's CPU index is the default of the tools image; where it cannot be reached, PyPI's (CUDA) torch.
if ! curl -fsS -o /dev/null --max-time 20 https://download.pytorch.org/whl/cpu/torch/; then
  export TORCH_INDEX_URL=https://pypi.org/simple
  echo "   download.pytorch.org unreachable: the tools image takes torch from PyPI (the CUDA build, ~3 GB)"
fi

# Build a local equivalent with compose's builder (the engine's CLI may have no buildx): the folder is the
# context (its .dockerignore keeps it to docker/ and the package); the harness's BUILD_CA_FILE is a build secret.
build_local() {  # TAG DOCKERFILE
  docker compose -p "$name-local-images" --project-directory . -f - build <<YAML
services:
  local:
    image: $1
    build:
      context: .
      dockerfile: $2
      args: {BASE_IMAGE: "$BASE_IMAGE"}
      secrets: [build_ca]
secrets:
  build_ca: {file: ${BUILD_CA_FILE:-/dev/null}}
YAML
}
build_tritonserver() { build_local "$1" docker/tritonserver-local.Dockerfile; }
build_sdk() { build_local "$1" docker/tritonserver-sdk-local.Dockerfile; }

job_images() {
  image_or_local nvcr.io/nvidia/tritonserver:24.10-py3 triton-serving/tritonserver-local:24.10-py3 build_tritonserver
  image_or_local nvcr.io/nvidia/tritonserver:24.10-py3-sdk triton-serving/tritonserver-sdk-local:24.10-py3-sdk build_sdk
}

# The up's output (perf's lines) must hold the in-process drift table (it alone has torch and int8_trt), the
# served comparison (norms) and perf_analyzer's table (seq, concurrency, status), each with a row for every CPU
# form, and perf_analyzer must have measured the server. A point it could not measure steadily (a loaded
# machine) is reported, not failed: timings are not what this test asserts.
job_check() {
  [ "$UP_RC" = 0 ] || fail "'${JOB_UP[*]}' exited $UP_RC (see its output above; docker compose logs export compare)"
  local form row=' +\| \| ' point='[0-9]+ \| [0-9]+ \| [0-9.]+ \|'
  for form in torch int8_trt; do
    grep -Eq "perf-1$row$form \| [0-9.]+e[-+][0-9]+ \|" "$UP_LOG" || fail "the drift table has no row for $form"
  done
  for form in onnx onnx_fp16 onnx_int8 openvino; do
    grep -Eq "perf-1$row$form \| [0-9.]+e[-+][0-9]+ \|" "$UP_LOG" || fail "the served comparison has no row for $form"
    grep -Eq "perf-1$row$form \| $point" "$UP_LOG" || fail "the perf table has no row for minilm_$form"
  done
  grep -Eq "perf-1$row(onnx|onnx_fp16|onnx_int8|openvino) \| $point.*\| ok" "$UP_LOG" \
    || fail "perf_analyzer measured no point of the served forms"
  if grep -q 'not measured' "$UP_LOG"; then echo "   note: perf: $(grep -m1 -o '[0-9]* point(s) not measured' "$UP_LOG")"; fi
}
