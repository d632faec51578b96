#!/usr/bin/env bash
# `make compose-test`: the container path end to end on a real Docker engine.
#  1. an engine answers (scripts/docker-engine.sh starts one as root when missing);
#  2. a fresh .env from .env.example (a .env of yours is put back afterwards);
#  3. the images exist: the pinned official MinIO images are pulled, or, when no registry answers, local
#     equivalents are built from source (compose/local-images.Dockerfile); the trainer image is built;
#  4. `docker compose up -d --wait`: MinIO healthy, bucket set up by the mc image, the trainer training;
#  5. the trainer is killed mid-run, brought up again, resumes, and its final loss and weights are bit-identical
#     to an uninterrupted run's; its key is refused outside its bucket;
#  6. the distributed compose file (4 nodes x 2 drives) comes up; a save and a verified load through other nodes;
#  7. always `down -v` (also on failure and Ctrl-C), and stop a dockerd only if step 1 started it.
# Its own project names and free ports: it never touches a `docker compose up` of yours nor a native MinIO.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=s3ckpt-compose-test
DIST_PROJECT=s3ckpt-compose-test-dist
MINIO_OFFICIAL=minio/minio:RELEASE.2025-09-07T16-13-09Z
MC_OFFICIAL=minio/mc:RELEASE.2025-08-13T08-35-41Z
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
HOST_CA=/etc/ssl/certs/ca-certificates.crt
KILL_AFTER=100   # kill the trainer once this checkpoint is saved
export DOCKER_ENGINE_STATE="${XDG_RUNTIME_DIR:-/tmp}/s3ckpt-compose-test-dockerd"

t0=$SECONDS
tphase=$SECONDS
phase() {
  echo "== [$((SECONDS - t0))s total, last phase $((SECONDS - tphase))s] $*"
  tphase=$SECONDS
}
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

COMPOSE_FILES=(-f docker-compose.yaml)
compose() { docker compose -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }
# the `trainer` service's container (not the one-off `run` containers of the same service)
trainer_cid() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter label=com.docker.compose.service=trainer --filter label=com.docker.compose.oneoff=False
}
# its output, one message a line (its progress bar, on stderr, redraws lines with \r)
trainer_log() { docker logs "$trainer_id" 2>&1 | tr '\r' '\n'; }
dist() { docker compose -p "$DIST_PROJECT" -f docker-compose.distributed.yaml "$@"; }

work=$(mktemp -d /tmp/s3ckpt-compose-test.XXXXXX)   # build and trainer logs
engine_up=0
env_written=0
env_backup=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$engine_up" = 1 ]; then
    echo "== tearing down (docker compose down -v)"
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    dist down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
  if [ -n "$env_backup" ]; then mv -f "$env_backup" .env; elif [ "$env_written" = 1 ]; then rm -f .env; fi
  scripts/docker-engine.sh down || true
  if [ "$rc" = 0 ]; then echo "== compose-test passed in $((SECONDS - t0))s"; else
    echo "== compose-test FAILED (exit $rc) after $((SECONDS - t0))s" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- 1. engine -------------------------------------------------------------------------------------------
phase "engine"
rc=0
scripts/docker-engine.sh up || rc=$?
if [ "$rc" = 3 ]; then trap - EXIT; echo "compose-test: skipped (no Docker engine)"; exit 0; fi
[ "$rc" = 0 ] || exit "$rc"
engine_up=1
compose down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of an interrupted earlier run
dist down -v --remove-orphans >/dev/null 2>&1 || true

# --- 2. fresh .env (before the builds: compose reads it for them too) ----------------------------------
phase "fresh .env"
if [ -f .env ]; then env_backup=$(mktemp .env.compose-test-backup.XXXXXX); cp .env "$env_backup"; fi
env_written=1
cp .env.example .env
while IFS='=' read -r key value; do   # the settings this script needs itself
  case "$key" in MINIO_ROOT_USER|MINIO_ROOT_PASSWORD|S3CKPT_BUCKET|TRAINER_ACCESS_KEY) printf -v "$key" '%s' "$value" ;; esac
done < .env
# the test's own ports and images override .env (the environment wins over .env in compose)
MINIO_PORT=$(free_port); MINIO_CONSOLE_PORT=$(free_port); export MINIO_PORT MINIO_CONSOLE_PORT
echo "   MinIO will listen on 127.0.0.1:$MINIO_PORT (console $MINIO_CONSOLE_PORT)"

# --- 3. images (MinIO's and the trainer's built side by side: one waits on the CPU, the other on the network)
phase "images"
[ -s "$HOST_CA" ] && export BUILD_CA_FILE="$HOST_CA"   # builds behind a TLS-intercepting proxy need it
minio_build=""
no_cache=()   # COMPOSE_TEST_NO_CACHE=1: build without the layer cache, to time a first build
[ "${COMPOSE_TEST_NO_CACHE:-}" = 1 ] && no_cache=(--no-cache)
if timeout 60 docker pull -q "$MINIO_OFFICIAL" >/dev/null 2>&1 && timeout 60 docker pull -q "$MC_OFFICIAL" >/dev/null 2>&1; then
  export MINIO_IMAGE="$MINIO_OFFICIAL" MC_IMAGE="$MC_OFFICIAL"
  echo "   official images pulled"
else
  export MINIO_IMAGE=s3ckpt-local/minio:RELEASE.2025-09-07T16-13-09Z MC_IMAGE=s3ckpt-local/mc:RELEASE.2025-08-13T08-35-41Z
  echo "   no registry answers: building local equivalents $MINIO_IMAGE and $MC_IMAGE from source"
  docker compose -f compose/local-images.yaml build "${no_cache[@]}" >"$work/local-images.log" 2>&1 &
  minio_build=$!
fi
export TORCH_INDEX_URL="$TORCH_CPU_INDEX" TRAINER_IMAGE=s3ckpt-compose-test/trainer:local
if ! SSL_CERT_FILE="$HOST_CA" python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" \
      "$TORCH_CPU_INDEX/torch/" >/dev/null 2>&1; then
  # No CPU wheels: rather than PyPI's CUDA build (~3 GB more to download, a ~7 GB image), the image is built
  # without torch and the trainer imports the torch that the host venv (`make test`'s) already has.
  TORCH_INDEX_URL=""
  HOST_SITE_PACKAGES=$(.venv/bin/python -c 'import os, sys, torch; assert sys.version_info[:2] == (3, 11)
print(os.path.dirname(os.path.dirname(torch.__file__)))') \
    || fail "PyTorch's CPU index is unreachable and .venv has no Python 3.11 torch to mount instead (make test builds it)"
  export HOST_SITE_PACKAGES
  COMPOSE_FILES+=(-f compose/torch-from-host.yaml)
  echo "   PyTorch's CPU index is unreachable: the trainer image has no torch, it uses $HOST_SITE_PACKAGES"
fi
compose build "${no_cache[@]}" trainer >"$work/trainer.log" 2>&1 || { tail -n 30 "$work/trainer.log" >&2; fail "building the trainer image failed"; }
phase "trainer image built (torch from ${TORCH_INDEX_URL:-the host venv})"
if [ -n "$minio_build" ]; then
  wait "$minio_build" || { tail -n 30 "$work/local-images.log" >&2; fail "building the local MinIO/mc images failed"; }
  phase "local MinIO and mc images built"
fi

# --- 4. up -------------------------------------------------------------------------------------------------
phase "docker compose up -d --wait"
if ! compose up -d --wait; then
  compose logs createbuckets >&2 || true
  fail "docker compose up -d --wait did not come up healthy (createbuckets: exit $(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -aq createbuckets)" 2>/dev/null))"
fi
compose logs --no-log-prefix createbuckets | grep -q "bucket $S3CKPT_BUCKET ready" \
  || fail "createbuckets did not report the bucket ready"
trainer_id=$(trainer_cid)
[ "$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$trainer_id" | grep '^S3CKPT_ACCESS_KEY=')" \
  = "S3CKPT_ACCESS_KEY=$TRAINER_ACCESS_KEY" ] || fail "the trainer does not use the bucket-limited key"

# --- 5. kill mid-run, resume, compare with an uninterrupted run ------------------------------------------
phase "training; killing the trainer after checkpoint $KILL_AFTER"
seen=0
for _ in $(seq 300); do
  if trainer_log | grep -q "checkpoint step $KILL_AFTER saved"; then seen=1; break; fi
  [ "$(docker inspect -f '{{.State.Running}}' "$trainer_id")" = true ] || break
  sleep 1
done
[ "$seen" = 1 ] || { trainer_log | tail -n 20 >&2; fail "the trainer never saved checkpoint $KILL_AFTER"; }
compose kill trainer >/dev/null 2>&1
docker wait "$trainer_id" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$trainer_id")" = 137 ] || fail "the trainer was not killed mid-run"
! trainer_log | grep -q "done: " || fail "the trainer had already finished: no kill mid-run"
saved_before=$(trainer_log | grep -o 'checkpoint step [0-9]* saved' | tail -n 1 | grep -o '[0-9]*')
echo "   killed (exit 137) after checkpoint $saved_before"

# The uninterrupted run of the same job (run 'reference') trains beside the resumed one: one core each.
run_trainer() { compose run --rm --no-deps -T trainer "$@"; }
phase "docker compose up trainer (resumes; at full speed now), and an uninterrupted run beside it"
run_trainer s3ckpt-train --run reference --throttle 0 --no-progress >"$work/reference.log" 2>&1 &
reference=$!
TRAINER_THROTTLE=0 compose up -d trainer >/dev/null 2>&1
trainer_id=$(trainer_cid)
docker wait "$trainer_id" >/dev/null
trainer_log > "$work/trainer.log"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$trainer_id")" = 0 ] || { tail -n 20 "$work/trainer.log" >&2; fail "the resumed trainer failed"; }
grep -q "resumed from step $saved_before " "$work/trainer.log" \
  || fail "the trainer did not resume from checkpoint $saved_before: $(grep -E -o '(resumed from step [0-9]*|starting run)' "$work/trainer.log" | tail -n 1)"
grep -o "done: .*" "$work/trainer.log" | sed "s/^/   resumed:       /"
wait "$reference" || { tail -n 20 "$work/reference.log" >&2; fail "the uninterrupted run failed"; }
grep -o "done: .*" "$work/reference.log" | sed "s/^/   uninterrupted: /"
phase "comparing the two runs"
run_trainer s3ckpt verify all --run digits >/dev/null || fail "the resumed run's checkpoints do not verify"
python3 - "$(run_trainer s3ckpt show latest --run digits)" "$(run_trainer s3ckpt show latest --run reference)" <<'EOF' || fail "the resumed run differs from the uninterrupted one"
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:3])
def model_sha(m):  # the saved weights' size and SHA-256 (of each part), from the manifest
    return [(o["size"], o.get("sha256") or o["part_sha256"]) for o in m["objects"] if o["name"] == "model"]
if not model_sha(a) or not model_sha(b):
    sys.exit("no model object in a manifest")
for what, x, y in [("step", a["metadata"]["step"], b["metadata"]["step"]),
                   ("final loss", a["metadata"]["loss"], b["metadata"]["loss"]),
                   ("model weights SHA-256", model_sha(a), model_sha(b))]:
    print(f"   {what}: killed+resumed {x!r} / uninterrupted {y!r}")
    if x != y:
        sys.exit(f"{what} differs")
EOF

phase "the trainer's key is refused outside its bucket"
other=s3ckpt-compose-test-other
compose run --rm --no-deps -T -e S3CKPT_ACCESS_KEY="$MINIO_ROOT_USER" -e S3CKPT_SECRET_KEY="$MINIO_ROOT_PASSWORD" \
  trainer s3ckpt init --bucket "$other" >/dev/null || fail "the root key could not create a second bucket"
if out=$(run_trainer s3ckpt list --bucket "$other" 2>&1); then
  fail "the trainer's key could list bucket $other: it is not limited to $S3CKPT_BUCKET ($out)"
fi
echo "   listing bucket $other with the trainer's key: $out"
compose down -v --remove-orphans >/dev/null 2>&1

# --- 6. distributed MinIO ----------------------------------------------------------------------------------
phase "distributed MinIO (4 nodes x 2 drives): up -d --wait"
dist up -d --wait || fail "the distributed compose file did not come up healthy"
host_torch=()
[ -z "$TORCH_INDEX_URL" ] && host_torch=(-v "$HOST_SITE_PACKAGES:/opt/host-site-packages:ro" -e PYTHONPATH=/opt/host-site-packages)
on_node() {  # on_node NODE CMD...: the trainer image on the distributed network, talking to MinIO node NODE
  local node=$1; shift
  docker run --rm --network "${DIST_PROJECT}_default" "${host_torch[@]}" -e S3CKPT_ENDPOINT="http://$node:9000" \
    -e S3CKPT_ACCESS_KEY="$MINIO_ROOT_USER" -e S3CKPT_SECRET_KEY="$MINIO_ROOT_PASSWORD" \
    -e S3CKPT_BUCKET="$S3CKPT_BUCKET" "$TRAINER_IMAGE" "$@"
}
phase "save through minio1, verified load through minio3 and minio4"
on_node minio1 s3ckpt init >/dev/null || fail "cannot create the bucket on the distributed MinIO"
on_node minio1 s3ckpt-train --run dist --steps 20 --ckpt-every 10 --no-progress >/dev/null \
  || fail "training with checkpoints against the distributed MinIO failed"
on_node minio3 s3ckpt verify all --run dist | sed 's/^/   /' \
  || fail "the checkpoints saved on the distributed MinIO do not verify"
out=$(on_node minio4 s3ckpt-train --run dist --steps 20 --resume must --no-progress) \
  || fail "loading the checkpoint from the distributed MinIO failed"
grep -q "^resumed from step 20 " <<<"$out" || fail "the load did not find step 20: $out"
echo "   $(head -n 1 <<<"$out")"
phase "done"
