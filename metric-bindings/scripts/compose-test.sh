#!/usr/bin/env bash
# The container path end to end on a real engine: engine, base image, fresh .env, build, the `demo` and `test`
# services (one-shot, run to completion), the image's size. Always tears down (also on failure and Ctrl-C) and
# stops a dockerd only if this run started it.
#   MAX_IMAGE_BYTES=N  size budget of the image (default 1.5 GB)
#   NO_CACHE=1         build without Docker's layer cache, as on a fresh machine
set -euo pipefail
cd "$(dirname "$0")/.."

max_image_bytes=${MAX_IMAGE_BYTES:-1500000000}
# When the official base image cannot be pulled: a local equivalent (docker/python-local.Dockerfile).
local_python=metric-bindings-python-local:3.11-bookworm
# This folder's own engine state: `docker-engine.sh down` stops only a dockerd that this folder's `up` started.
export DOCKER_ENGINE_STATE=${DOCKER_ENGINE_STATE:-${TMPDIR:-/tmp}/metric-bindings-compose-engine}
pidfile=$DOCKER_ENGINE_STATE/dockerd.pid
build_flags=()
[ "${NO_CACHE:-}" = 1 ] && build_flags+=(--no-cache)

start=$SECONDS
phase_start=$SECONDS
phase() { echo; echo "== compose-test [$((SECONDS - start)) s]: $*"; phase_start=$SECONDS; }
done_phase() { echo "   ok: $* ($((SECONDS - phase_start)) s)"; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

engine_pid_before=$(cat "$pidfile" 2>/dev/null || true)
tear_down() {
  local rc=$?
  trap - EXIT INT TERM
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    phase "tear down: docker compose down -v"
    docker compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test: warning: docker compose down failed" >&2
  fi
  # Only a dockerd whose pid file this run wrote (a dockerd that answered before is left alone).
  local engine_pid_now
  engine_pid_now=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$engine_pid_now" ] && [ "$engine_pid_now" != "$engine_pid_before" ]; then
    echo "   stopping the dockerd this run started (pid $engine_pid_now)"
    scripts/docker-engine.sh down
  fi
  if [ "$rc" = 0 ]; then echo "compose-test: PASS in $((SECONDS - start)) s"; else echo "compose-test: FAILED (exit $rc) after $((SECONDS - start)) s" >&2; fi
  exit "$rc"
}
trap tear_down EXIT
trap 'exit 130' INT TERM

phase "engine"
engine_rc=0
scripts/docker-engine.sh up || engine_rc=$?
case $engine_rc in
  0) done_phase "$(docker version -f 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /')" ;;
  3) echo "compose-test: SKIPPED (no Docker engine; under CI=true this fails)"; exit 0 ;;
  *) fail "no Docker engine (scripts/docker-engine.sh up exited $engine_rc)" ;;
esac

phase "base image"
official_python=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
[ -n "$official_python" ] || fail "no 'ARG PYTHON_IMAGE=<image>' default in Dockerfile"
if timeout 120 docker pull -q "$official_python" >/dev/null 2>&1; then
  export PYTHON_IMAGE=$official_python
  done_phase "pulled $official_python"
else
  echo "   cannot pull $official_python: building the local equivalent $local_python FROM debian:bookworm-slim"
  # Classic builder: no build secret needed (apt over http), and no stale FROM resolution after a rebuild.
  DOCKER_BUILDKIT=0 docker build -q "${build_flags[@]}" -t "$local_python" -f docker/python-local.Dockerfile docker \
    >/dev/null || fail "building $local_python failed"
  export PYTHON_IMAGE=$local_python
  done_phase "built $local_python ($(docker run --rm "$local_python" python --version))"
fi

phase "fresh .env from .env.example"
if [ -f .env ] && ! cmp -s .env .env.example; then
  mv .env .env.before-compose-test
  echo "   your .env was moved to .env.before-compose-test"
fi
cp .env.example .env
done_phase ".env written"

phase "build (the demo service builds the image; test reuses it)"
image=$(docker compose config --images | sort -u)
[ "$(wc -l <<<"$image")" = 1 ] || fail "the services should share one image, not: $(echo $image)"
# Where HTTPS is intercepted, pip inside the build needs the host's CA bundle (a build secret, never in a layer).
[ -s /etc/ssl/certs/ca-certificates.crt ] && export BUILD_CA_FILE=/etc/ssl/certs/ca-certificates.crt
docker compose build "${build_flags[@]}" demo || fail "docker compose build failed"
done_phase "built $image"

phase "image size"
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "   $image: $((size / 1000000)) MB (budget $((max_image_bytes / 1000000)) MB)"
[ "$size" -le "$max_image_bytes" ] || fail "$image is $((size / 1000000)) MB, over the $((max_image_bytes / 1000000)) MB budget"
done_phase "within budget"

phase "demo service"
demo_log=$(mktemp)
docker compose run --rm -T demo | tee "$demo_log" || fail "the demo service exited ${PIPESTATUS[0]}"
grep -q "top-5 precision" "$demo_log" || fail "the demo service printed no retrieval result"
rm -f "$demo_log"
done_phase "demo exited 0"

phase "test service"
docker compose run --rm -T --no-deps test || fail "the test service exited $?"
done_phase "test exited 0"

