#!/usr/bin/env bash
# `make compose-test`: the compose CPU profile brought up for real and checked from the host.
#   engine  scripts/docker-engine.sh up (exit 3 = no engine and not allowed to start one: skip, except in CI)
#   images  pull the official tritonserver 24.10 image, or build its local stand-in when the pull fails; then
#           build the cpu profile's image on top of it (and check that it really derives from it)
#   repo    make repo: build/repository-cpu, the native path's repository, mounted read-only into the container
#           (run in the background while the images build: both are minutes on a fresh machine)
#   .env    a fresh copy of .env.example (profile cpu; TRITON_*_PORT from the environment override its ports)
#   up      docker compose up -d --wait: healthy = /v2/health/ready inside the container
#   check   the server on the published 127.0.0.1 ports serves exactly the repository's forms, and
#           triton-compare passes on all of them over gRPC and HTTP
#   down    docker compose down -v, always (also on failure and Ctrl-C); dockerd stopped only if we started it
set -euo pipefail
cd "$(dirname "$0")/.."

OFFICIAL=nvcr.io/nvidia/tritonserver:24.10-py3
LOCAL=${TRITON_LOCAL_IMAGE:-triton-serving/tritonserver-local:24.10-py3}
CPU_IMAGE=triton-serving/tritonserver-cpu:24.10-py3
REPOSITORY=build/repository-cpu
OUT=build/compose-test
PY=.venv/bin/python
WAIT_S=${COMPOSE_WAIT_S:-240}
# COMPOSE_TEST_NO_CACHE=1 builds both images without Docker's build cache (to time a fresh machine)
build_flags=(--quiet)
[ "${COMPOSE_TEST_NO_CACHE:-0}" = 1 ] && build_flags+=(--no-cache)

t0=$SECONDS
phase() { printf '\n== [%4ds] %s\n' $((SECONDS - t0)) "$*"; }
die() { echo "compose-test: FAIL: $*" >&2; exit 1; }

compose_up=0
engine_was_up=0
repo_pid=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$repo_pid" ] && kill -0 "$repo_pid" 2>/dev/null; then
    kill -TERM -- "-$repo_pid" 2>/dev/null || true  # its own process group: make and what it runs
    wait "$repo_pid" 2>/dev/null || true
  fi
  if [ "$compose_up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "-- triton-cpu log: errors, models not loaded, last lines"
      docker compose --profile cpu logs --no-color triton-cpu 2>&1 \
        | grep -E '\| E[0-9]{4} |UNAVAILABLE|error:' | cut -c 1-400 | tail -n 15 || true
      docker compose --profile cpu logs --no-color --tail 5 triton-cpu 2>&1 || true
    fi
    phase "down: docker compose down -v"
    docker compose --profile cpu down -v --remove-orphans || rc=1
  fi
  if [ "$engine_was_up" = 0 ]; then bash scripts/docker-engine.sh down || true; fi
  printf '\ncompose-test: %s in %d s\n' "$([ "$rc" = 0 ] && echo PASSED || echo FAILED)" $((SECONDS - t0))
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------- engine
phase "engine: scripts/docker-engine.sh up"
docker info >/dev/null 2>&1 && engine_was_up=1
rc=0
bash scripts/docker-engine.sh up || rc=$?
if [ "$rc" = 3 ]; then trap - EXIT; echo "compose-test: SKIPPED (no Docker engine)"; exit 0; fi
[ "$rc" = 0 ] || die "no Docker engine (scripts/docker-engine.sh up exited $rc)"
[ -f /etc/ssl/certs/ca-certificates.crt ] && export BUILD_CA_FILE=/etc/ssl/certs/ca-certificates.crt

# ------------------------------------------------------------------------------------------ repo (background)
mkdir -p "$OUT"
phase "repo: make repo in the background (log: $OUT/make-repo.log)"
setsid make -s repo >"$OUT/make-repo.log" 2>&1 &
repo_pid=$!

# ---------------------------------------------------------------------------------------------------- images
phase "images: docker pull $OFFICIAL"
if timeout 600 docker pull -q "$OFFICIAL"; then
  base=$OFFICIAL
else
  base=$LOCAL
  phase "images: pull failed, building the local stand-in $LOCAL (docker/tritonserver-local.Dockerfile)"
  TRITON_LOCAL_IMAGE=$LOCAL docker compose -f docker/tritonserver-local.compose.yaml build "${build_flags[@]}" \
    || die "building the local stand-in failed"
fi
export TRITON_BASE_IMAGE=$base
phase "images: building $CPU_IMAGE from $base (docker/triton-cpu.Dockerfile)"
docker compose --profile cpu build "${build_flags[@]}" triton-cpu || die "building the cpu image failed"
# BuildKit may resolve FROM to an older image of the same tag: prove the cpu image sits on the base built above.
layers() { docker image inspect -f '{{ range .RootFS.Layers }}{{ println . }}{{ end }}' "$1" | grep .; }
base_top=$(layers "$base" | tail -n 1)
layers "$CPU_IMAGE" | grep -qx "$base_top" \
  || die "$CPU_IMAGE was not built on the current $base (stale BuildKit cache: docker builder prune, then retry)"

# ------------------------------------------------------------------------------------------------------ repo
phase "repo: waiting for make repo ($REPOSITORY)"
rc=0
wait "$repo_pid" || rc=$?
repo_pid=
if [ "$rc" != 0 ]; then tail -n 20 "$OUT/make-repo.log"; die "make repo failed (exit $rc; log: $OUT/make-repo.log)"; fi
mapfile -t forms < <(for c in "$REPOSITORY"/*/config.pbtxt; do basename "$(dirname "$c")"; done)
[ "${#forms[@]}" -gt 0 ] || die "$REPOSITORY has no model (make repo wrote none)"

# ------------------------------------------------------------------------------------------------------ .env
phase ".env: fresh from .env.example, profile cpu"
cp .env.example .env
export COMPOSE_PROFILES=cpu
env_value() { grep -E "^$1=" .env | tail -n 1 | cut -d= -f2-; }
http_port=${TRITON_HTTP_PORT:-$(env_value TRITON_HTTP_PORT)}
grpc_port=${TRITON_GRPC_PORT:-$(env_value TRITON_GRPC_PORT)}
metrics_port=${TRITON_METRICS_PORT:-$(env_value TRITON_METRICS_PORT)}
for port in "$http_port" "$grpc_port" "$metrics_port"; do
  "$PY" -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$port" \
    2>/dev/null || die "port $port on 127.0.0.1 is in use; free it or set TRITON_HTTP_PORT/GRPC/METRICS"
done

# -------------------------------------------------------------------------------------------------------- up
phase "up: docker compose --profile cpu up -d --wait (ports $http_port/$grpc_port/$metrics_port)"
compose_up=1
docker compose --profile cpu up -d --wait --wait-timeout "$WAIT_S" \
  || die "triton-cpu did not become healthy (/v2/health/ready; waits up to ${WAIT_S}s): see its log below"

# ----------------------------------------------------------------------------------------------------- check
phase "check: the server on 127.0.0.1:$http_port serves exactly the forms of $REPOSITORY"
"$PY" - "127.0.0.1:$http_port" "${forms[@]}" <<'EOF'
import json
import sys
import urllib.request

url, expected = sys.argv[1], sorted(sys.argv[2:])
try:
    with urllib.request.urlopen(f"http://{url}/v2", timeout=10) as r:
        meta = json.load(r)
    req = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        ready = sorted(m["name"] for m in json.load(r) if m.get("state") == "READY")
except (OSError, ValueError) as e:  # URLError is an OSError
    sys.exit(f"compose-test: FAIL: no Triton answers at http://{url} from the host: {e}")
print(f"{meta.get('name')} {meta.get('version')}: READY {', '.join(ready)}")
if ready != expected:
    sys.exit(f"compose-test: FAIL: served forms {ready} != repository forms {expected}")
EOF

phase "check: triton-compare on ${#forms[@]} forms over gRPC and HTTP (127.0.0.1:$grpc_port, 127.0.0.1:$http_port)"
.venv/bin/triton-compare --http-url "127.0.0.1:$http_port" --grpc-url "127.0.0.1:$grpc_port" \
  --forms "${forms[@]}" --protocol both --out-dir "$OUT" \
  || die "triton-compare failed against the container (report in $OUT)"
