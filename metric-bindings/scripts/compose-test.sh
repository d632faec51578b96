#!/usr/bin/env bash
# make compose-test: the README's container path, run the way a user runs it, on a real Docker engine.
#   engine -> images -> fresh copy -> build -> the README's `docker compose up` line -> checks -> down -v
# The same script in every folder of the workspace. What belongs to this folder (its images and their local
# equivalents, its README line, what the job must print) is in scripts/compose-job.sh, sourced below.
# It runs in a fresh copy of the folder's files under its own compose project name: the folder's .env, data
# and downloads are never read, written, moved or deleted, and a stack of yours keeps running.
#
#   scripts/compose-test.sh [--no-cache] [--keep]
#     --no-cache   build every image without Docker's layer cache, as on a fresh machine
#     --keep       leave the stack and the copy afterwards (prints how to remove them)
# Exit 0 passed, 1 failed (a line says why). Without a Docker engine and without root it skips (exit 0),
# except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

folder=$(pwd)
name=$(basename "$folder")
state=$folder/.compose-test                 # this folder's engine state, logs and image ledger
ledger=$state/temporary-tags                # official names given to local equivalents for this run
export DOCKER_ENGINE_STATE=$state/engine
export COMPOSE_PROJECT_NAME=$name-compose-test
no_cache=0 keep=0
for arg in "$@"; do
  case $arg in
    --no-cache) no_cache=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compose-test: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
build_flags=()
[ "$no_cache" = 1 ] && build_flags+=(--no-cache)

T0=$SECONDS
TP=$SECONDS
phase() { printf '\n== compose-test [%4d s] %s\n' $((SECONDS - T0)) "$*"; TP=$SECONDS; }
ok() { printf '   ok: %s (%d s)\n' "$*" $((SECONDS - TP)); }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }
indent() { sed -u 's/^/   | /'; }

copy=""                                     # the fresh copy, set in phase "copy"
compose() { (cd "$copy/$name" && docker compose "$@"); }

# image_or_local OFFICIAL LOCAL_TAG BUILD_FUNCTION
# The official image when it is here or can be pulled; otherwise BUILD_FUNCTION builds LOCAL_TAG (the local
# equivalent) and OFFICIAL names it for this run only (the ledger lists it; the tear-down removes the name).
image_or_local() {
  local official=$1 local_tag=$2 build=$3
  if docker image inspect "$official" >/dev/null 2>&1 || timeout 120 docker pull -q "$official" >/dev/null 2>&1; then
    echo "   $official: the official image"
    return 0
  fi
  local log
  log=$state/build-$(echo "$local_tag" | tr '/:' '__').log
  echo "   $official: no registry answers, building the local equivalent $local_tag"
  "$build" "$local_tag" >"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "building $local_tag failed"; }
  docker tag "$local_tag" "$official"
  echo "$official $(docker image inspect -f '{{.Id}}' "$local_tag")" >>"$ledger"
}

# Remove the official names this folder gave to local equivalents, where they still point at them. While
# another compose-test of the workspace runs (shared lock), the names stay for it and the next run removes them.
remove_temporary_tags() {
  [ -s "$ledger" ] || return 0
  flock -xn 9 || { echo "   another compose-test is running: its images keep their names until the next run"; return 0; }
  local official id
  while read -r official id; do
    [ "$(docker image inspect -f '{{.Id}}' "$official" 2>/dev/null)" = "$id" ] && docker rmi --no-prune "$official" >/dev/null
  done <"$ledger"
  rm -f "$ledger"
}

engine_started=0
stack_up=0
tear_down() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$keep" = 1 ] && [ -n "$copy" ]; then
    phase "kept: the stack runs as project $COMPOSE_PROJECT_NAME in $copy/$name"
    echo "   remove it with: (cd $copy/$name && docker compose down -v) && rm -rf $copy"
  else
    if [ "$stack_up" = 1 ]; then
      phase "tear down: docker compose down -v"
      compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test: warning: docker compose down failed" >&2
      type job_tear_down >/dev/null 2>&1 && job_tear_down
    fi
    [ -n "$copy" ] && rm -rf "$copy"
    remove_temporary_tags
    if [ "$engine_started" = 1 ]; then
      phase "stopping the dockerd this run started"
      scripts/docker-engine.sh down
    fi
  fi
  if [ "$rc" = 0 ]; then echo "compose-test: PASSED in $((SECONDS - T0)) s"
  else echo "compose-test: FAILED (exit $rc) after $((SECONDS - T0)) s" >&2; fi
  exit "$rc"
}
trap tear_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$state"
# A shared lock for the length of the run: image names given for a run stay while any run of the workspace
# may use them.
exec 9>"${TMPDIR:-/tmp}/workspace-compose-test.lock"
flock -s 9

# shellcheck source=compose-job.sh
. scripts/compose-job.sh
: "${JOB_UP:?compose-job.sh must set JOB_UP: the docker compose up line of README.md}"
: "${JOB_TIMEOUT:=900}"

phase "engine: a Docker engine with Compose v2"
docker info >/dev/null 2>&1 || engine_started=1
rc=0
scripts/docker-engine.sh up || rc=$?
case $rc in
  0) ok "engine $(docker version -f '{{.Server.Version}}'), compose $(docker compose version --short)" ;;
  3) engine_started=0; echo "compose-test: SKIPPED (no Docker engine; under CI=true this fails)"; exit 0 ;;
  *) engine_started=0; fail "no Docker engine (scripts/docker-engine.sh up exited $rc)" ;;
esac
[ "$engine_started" = 1 ] && [ ! -f "$DOCKER_ENGINE_STATE/dockerd.pid" ] && engine_started=0
BASE_IMAGE=$(scripts/docker-engine.sh base) || fail "no Debian base image for local equivalents"
export BASE_IMAGE
# Where HTTPS is intercepted, builds need the host's CA bundle: a build secret, never a layer of an image.
[ -s /etc/ssl/certs/ca-certificates.crt ] && export BUILD_CA_FILE=/etc/ssl/certs/ca-certificates.crt

phase "images: the pinned official ones, or local equivalents under their names for this run"
if [ -s "$ledger" ] && flock -xn 9; then remove_temporary_tags; flock -s 9; fi  # left by an interrupted run
job_images
ok "images ready"

phase "copy: the folder's files, as a fresh clone has them (no .env, no build outputs)"
copy=$(mktemp -d "${TMPDIR:-/tmp}/$name-compose-test.XXXXXX")
mkdir "$copy/$name"
if git -C "$folder" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked files and new ones not ignored: what a clone of this work tree would hold.
  git -C "$folder" ls-files -z --cached --others --exclude-standard . \
    | (cd "$folder" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$folder" --null -T - -cf - | tar -C "$copy/$name" -xf -
else
  tar -C "$folder" --exclude=./.env --exclude=./.venv --exclude=./build --exclude=./.compose-test -cf - . \
    | tar -C "$copy/$name" -xf -
fi
[ ! -e "$copy/$name/.env" ] || fail "the copy holds a .env: it would not test the plain path"
ok "$(find "$copy/$name" -type f | wc -l) files in $copy/$name"

stack_up=1
compose down -v --remove-orphans >/dev/null 2>&1 || true   # what an interrupted run left

phase "build: docker compose build (the images of this copy, never stale ones)"
compose build "${build_flags[@]}" >"$state/build.log" 2>&1 \
  || { tail -n 40 "$state/build.log" >&2; fail "docker compose build failed (log: $state/build.log)"; }
ok "built"

grep -qF -- "${JOB_UP[*]}" README.md || fail "README.md does not give the line this test runs: ${JOB_UP[*]}"
phase "up: ${JOB_UP[*]}   (the README's line, in the copy)"
UP_LOG=$state/up.log
rc=0
(cd "$copy/$name" && timeout --kill-after=30 "$JOB_TIMEOUT" "${JOB_UP[@]}") 2>&1 | tee "$UP_LOG" | indent || rc=${PIPESTATUS[0]}
[ "$rc" != 124 ] || fail "'${JOB_UP[*]}' did not finish within $JOB_TIMEOUT s"
UP_RC=$rc
export UP_LOG UP_RC

phase "check: the job's result"
job_check
ok "the job's result is right"

if type job_scenarios >/dev/null 2>&1; then
  phase "scenarios"
  job_scenarios
  ok "scenarios passed"
fi
