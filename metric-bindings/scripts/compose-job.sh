# metric-bindings' part of `make compose-test`, sourced by scripts/compose-test.sh (the workspace's harness).
# The job: `demo` (the retrieval demo) then `test` (the Python suite against the installed wheel), one image.
# shellcheck shell=bash

JOB_UP=(docker compose up --exit-code-from test --abort-on-container-failure)
JOB_TIMEOUT=900
# The image holds no compiler and no torch: far below this.
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-1500000000}

build_python_local() {
  docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$1" -f docker/python-local.Dockerfile docker
}

job_images() {
  local official
  official=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
  [ -n "$official" ] || fail "no 'ARG PYTHON_IMAGE=<image>' default in Dockerfile"
  image_or_local "$official" metric-bindings-python-local:3.11-bookworm build_python_local
}

job_check() {
  grep -q "top-5 precision" "$UP_LOG" || fail "the demo printed no retrieval result"
  grep -Eq "[0-9]+ passed" "$UP_LOG" || fail "the test service printed no pytest summary"
  [ "$UP_RC" = 0 ] || fail "'${JOB_UP[*]}' exited $UP_RC (the test service failed)"
  local image size
  image=$(compose config --images | sort -u)
  [ "$(wc -l <<<"$image")" = 1 ] || fail "the services should share one image, not: $(echo "$image")"
  size=$(docker image inspect -f '{{.Size}}' "$image")
  echo "   $image: $((size / 1000000)) MB (budget $((MAX_IMAGE_BYTES / 1000000)) MB)"
  [ "$size" -le "$MAX_IMAGE_BYTES" ] || fail "$image is $((size / 1000000)) MB, over the budget"
}

# The dask profile's line (README): a scheduler, 2 workers and the job, whose top-k must match one machine's.
DASK_UP=(docker compose --profile dask up --exit-code-from dask-job dask-job)

job_scenarios() {
  # The README's line returns the test service's status: a failing test service must fail it.
  cat >"$copy/$name/failing-test.yaml" <<'YAML'
services:
  demo:
    command: ["python", "-m", "metric_bindings", "--clips", "2000", "--queries", "8", "--dim", "64"]
  test:
    command: ["python", "-c", "import sys; print('a failing test service'); sys.exit(3)"]
YAML
  local rc=0
  (cd "$copy/$name" && timeout 300 "${JOB_UP[@]:0:2}" -f docker-compose.yaml -f failing-test.yaml \
    "${JOB_UP[@]:2}") >"$state/up-failing.log" 2>&1 || rc=$?
  [ "$rc" = 3 ] || fail "with a test service that exits 3, '${JOB_UP[*]}' exited $rc (log: $state/up-failing.log)"
  echo "   a test service exiting 3 makes the line exit 3"

  grep -qF -- "${DASK_UP[*]}" README.md || fail "README.md does not give the dask line: ${DASK_UP[*]}"
  echo "   ${DASK_UP[*]}"
  rc=0
  (cd "$copy/$name" && timeout --kill-after=30 600 "${DASK_UP[@]}") 2>&1 | tee "$state/up-dask.log" | indent \
    || rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || fail "'${DASK_UP[*]}' exited $rc (log: $state/up-dask.log)"
  grep -q "blocks on 2 workers" "$state/up-dask.log" || fail "the dask job did not run on 2 workers"
  grep -q "same indices as one machine: yes" "$state/up-dask.log" || fail "the dask job's top-k differs"
  # The job shuts the cluster down; the scheduler and workers take a few seconds to exit after it.
  local waited
  for waited in $(seq 30); do
    [ -z "$(compose --profile dask ps -q)" ] && break
    sleep 1
  done
  [ -z "$(compose --profile dask ps -q)" ] || fail "the dask profile's services still run ${waited} s after its job ended"
  echo "   the dask profile's top-k on 2 workers matches one machine's"
}

# The dask profile's services are not in a plain `docker compose down`.
job_tear_down() {
  compose --profile dask down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test: warning: dask down failed" >&2
}
