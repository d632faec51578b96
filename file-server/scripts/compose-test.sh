#!/usr/bin/env bash
# make compose-test: the container path end to end, on a real Docker engine.
#   engine -> images -> fresh .env -> build client -> up -d --wait nginx -> checks -> down -v (always)
# Checks: the pool files on the host belong to the pool user; the client service, outside nginx's network,
# downloads the whole pool through the published port and exits 0; after one pool file is changed on the
# server side, the client names exactly that file and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

T0=$SECONDS
DATA=run/compose-test          # POOL_DATA for this test: the user's data/pool is never touched
LOG=run/compose-test.log       # build output, shown only on failure
SAVED=run/compose-test.env.saved  # a user's own .env, put back afterwards
# Its own compose project: a stack that `make up` runs (project file-server) is left alone.
export COMPOSE_PROJECT_NAME=file-server-test
engine_started=0
compose_up=0

phase() { printf '== [%3d s] %s\n' $((SECONDS - T0)) "$*"; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$compose_up" = 1 ]; then
    phase "tear down: docker compose down -v"
    docker compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test: docker compose down -v failed" >&2
  fi
  if [ -f "$SAVED" ]; then mv -f "$SAVED" .env; elif [ "$compose_up" = 1 ]; then rm -f .env; fi
  if [ "$engine_started" = 1 ]; then
    phase "stopping the dockerd this run started"
    scripts/docker-engine.sh down
  fi
  if [ "$rc" = 0 ]; then echo "compose-test: PASSED in $((SECONDS - T0)) s"
  else echo "compose-test: FAILED (exit $rc) after $((SECONDS - T0)) s" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase "engine: a Docker engine with Compose v2"
docker info >/dev/null 2>&1 || engine_was_down=1
rc=0
scripts/docker-engine.sh up || rc=$?
if [ "$rc" = 3 ]; then echo "compose-test: skipped (no Docker engine, see above)"; exit 0; fi
[ "$rc" = 0 ] || fail "no Docker engine (docker-engine.sh up exited $rc)"
[ "${engine_was_down:-0}" = 1 ] && engine_started=1

phase "images: pull the pinned official ones, or build local equivalents"
images=$(scripts/compose-images.sh)
echo "$images" | sed 's/^/   /'

phase "fresh .env from .env.example"
# As root the pool runs as nobody, so the ownership check still tells a user-honouring service from a root one.
uid=$(id -u) gid=$(id -g)
if [ "$uid" = 0 ]; then uid=65534 gid=65534; fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p run
if [ -f "$SAVED" ]; then rm -f .env; elif [ -f .env ]; then mv .env "$SAVED"; fi  # a killed run left .env
compose_up=1                   # from here on, tear down whatever a previous interrupted run left
docker compose down -v --remove-orphans >/dev/null 2>&1 || true
rm -rf "$DATA" && mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown "$uid:$gid" "$DATA"
# shellcheck disable=SC2086  # $images is a list of KEY=VALUE words
scripts/compose-env.sh FILESERVER_PORT="$port" POOL_DATA="./$DATA" POOL_UID="$uid" POOL_GID="$gid" $images
count=$(sed -n 's/^POOL_COUNT=//p' .env)
echo "   port 127.0.0.1:$port, pool $DATA/pool ($count files) as uid $uid:$gid"

phase "build: the client image"
docker compose build client >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; fail "docker compose build client (log: $LOG)"; }

phase "up: docker compose up -d --wait nginx (pool first, then nginx healthy)"
docker compose up -d --wait nginx >>"$LOG" 2>&1 \
  || { docker compose logs --no-color pool nginx | tail -n 20 >&2; fail "docker compose up (log: $LOG)"; }

phase "check: pool files belong to uid $uid:$gid"
pool=$DATA/pool
files=$(find "$pool" -type f | wc -l)
[ "$files" -gt "$count" ] || fail "$pool holds $files files, expected the $count of the pool + manifests"
# `|| true`: head closing the pipe early is not a failure
wrong=$(find "$pool" \( ! -uid "$uid" -o ! -gid "$gid" \) -printf '%u:%g %p\n' | head -n 3 || true)
[ -z "$wrong" ] || fail "pool files not owned by $uid:$gid, e.g.: $wrong"
echo "   $files files, all owned by $uid:$gid"

phase "check: the client (host network, published port only) downloads and verifies the whole pool"
net=$(docker compose config --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"]["client"].get("network_mode", ""))')
[ "$net" = host ] || fail "the client service is not on the host network (network_mode: '$net')"
rc=0
out=$(docker compose run --rm --no-deps -T client 2>&1) || rc=$?
echo "$out" | sed 's/^/   /'
[ "$rc" = 0 ] || fail "the client exited $rc, expected 0 (every file verified)"
served=$(docker compose logs --no-color nginx | grep -c '"GET /[^ ]*\.txt HTTP/1\.1" 200 .*fileserver-fetch/' || true)
[ "$served" -ge "$count" ] || fail "nginx logged $served file downloads by the client, expected $count"
echo "   nginx served $served files to the client"

phase "check: one file changed on the server side is named and the client exits 1"
victim=$(sed -n '1s/^[0-9a-f]\{64\} [ *]//p' "$pool/SHA256SUMS")
[ -f "$pool/$victim" ] || fail "cannot find the first file of $pool/SHA256SUMS"
# Same size, same inode: only the bytes differ (the first one), as with silent corruption on disk.
printf 'X' | dd of="$pool/$victim" bs=1 count=1 conv=notrunc status=none
(cd "$pool" && ! grep -F "  $victim" SHA256SUMS | sha256sum -c --status) || fail "tampering $victim did not change it"
rc=0
out=$(docker compose run --rm --no-deps -T client 2>&1) || rc=$?
echo "$out" | sed 's/^/   /'
[ "$rc" = 1 ] || fail "the client exited $rc after $victim changed, expected 1"
grep -qF "$victim" <<<"$out" || fail "the client did not name the changed file $victim"
others=$(sed 's/^[0-9a-f]\{64\} [ *]//' "$pool/SHA256SUMS" | grep -vxF "$victim" | grep -cF -f - <<<"$out" || true)
[ "$others" = 0 ] || fail "the client named $others file(s) besides $victim"
echo "   the client named $victim and exited 1"
