# shellcheck shell=bash
# file-server's part of make compose-test (sourced by scripts/compose-test.sh, the workspace's shared harness).
# The job: pool -> nginx healthy -> client downloads the whole pool through the published port and verifies
# every file. Scenarios: a file changed on the server side is named and the client exits 1.

# The README's line. --attach client: its summary is what the user reads (nginx logs a line per file).
JOB_UP=(docker compose up --exit-code-from client --attach client)
JOB_TIMEOUT=600
POOL_COUNT=1000                     # docker-compose.yaml's default: the copy has no .env

build_local() {  # build_local DOCKERFILE TAG: a local equivalent FROM the harness's Debian base
  # The classic builder: BuildKit on this engine may resolve FROM to a stale local base image.
  DOCKER_BUILDKIT=0 docker build -t "$2" --build-arg BASE_IMAGE="$BASE_IMAGE" -f "docker/local/$1" docker/local
}
build_nginx() { build_local nginx.Dockerfile "$1"; }
build_python() { build_local python.Dockerfile "$1"; }

# The pinned official images, read where they are pinned (compose file and Dockerfile defaults).
job_images() {
  local nginx python
  nginx=$(sed -n 's/.*NGINX_IMAGE:-\([^}]*\)}.*/\1/p' docker-compose.yaml)
  python=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
  [ -n "$nginx" ] && [ -n "$python" ] || fail "cannot read the pinned images from docker-compose.yaml / Dockerfile"
  image_or_local "$nginx" file-server-local/nginx:1.22.1 build_nginx
  image_or_local "$python" file-server-local/python:3.11 build_python
}

# Lines of nginx's access log that are pool files served to our client.
served_files() {
  compose logs --no-color "$1" | grep -c '"GET /[^ ]*\.txt HTTP/1\.1" 200 .*fileserver-fetch/' || true
}

job_check() {
  [ "$UP_RC" = 0 ] || fail "'${JOB_UP[*]}' exited $UP_RC, expected 0 (every file verified)"
  grep -q "verified $POOL_COUNT/$POOL_COUNT files against the manifest" "$UP_LOG" \
    || fail "the client did not print 'verified $POOL_COUNT/$POOL_COUNT files against the manifest'"
  local served
  served=$(served_files nginx)
  [ "$served" -ge "$POOL_COUNT" ] || fail "nginx logged $served file downloads by the client, expected $POOL_COUNT"
  echo "   nginx served $served files; the client verified $POOL_COUNT/$POOL_COUNT"
  [ ! -e "$copy/$name/data" ] || fail "compose created $copy/$name/data on the host (the pool belongs in a volume)"
  local net
  net=$(compose config --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"]["client"].get("network_mode", ""))')
  [ "$net" = host ] || fail "the client service is not on the host network (network_mode: '$net')"
}

# pool_sh 'COMMAND': a shell in the pool volume (the pool service's image and user, no network).
pool_sh() { compose run --rm --no-deps -T --entrypoint sh pool -c "$1"; }

job_scenarios() {
  echo "   one file changed on the server side is named and the client exits 1"
  compose up -d --wait nginx >/dev/null 2>&1 || fail "docker compose up -d --wait nginx failed"
  local victim rc out others
  victim=$(pool_sh 'sed -n "1s/^[0-9a-f]\{64\} [ *]//p" /data/pool/SHA256SUMS')
  [ -n "$victim" ] || fail "cannot read the first entry of the pool's SHA256SUMS"
  # Same size, same inode: only the first byte differs, as with silent corruption on disk.
  pool_sh "printf X | dd of='/data/pool/$victim' bs=1 count=1 conv=notrunc status=none" \
    || fail "cannot change $victim in the pool volume"
  rc=0
  out=$(compose run --rm --no-deps -T client 2>&1) || rc=$?
  echo "$out" | tail -n 4 | indent
  [ "$rc" = 1 ] || fail "the client exited $rc after $victim changed, expected 1"
  grep -qF "MISMATCH $victim" <<<"$out" || fail "the client did not name the changed file $victim"
  others=$(grep -c '^\(MISMATCH\|MISSING\|FAILED\) ' <<<"$out" || true)
  [ "$others" = 1 ] || fail "the client named $others file(s), expected only $victim"
}
