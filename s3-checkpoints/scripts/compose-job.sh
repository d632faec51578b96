# s3-checkpoints' part of `make compose-test` (sourced by scripts/compose-test.sh, the workspace's harness).
# The job: MinIO + bucket setup + the trainer (train -> checkpoints -> resume), run by the README's line.
# shellcheck shell=bash
JOB_UP=(docker compose up --exit-code-from trainer --attach trainer)
JOB_TIMEOUT=900

MINIO_OFFICIAL=minio/minio:RELEASE.2025-09-07T16-13-09Z
MC_OFFICIAL=minio/mc:RELEASE.2025-08-13T08-35-41Z
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
KILL_AFTER=100   # kill the trainer once this checkpoint is saved

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The run's own ports (a stack of yours on 9000/9001 keeps running) and trainer image name.
MINIO_PORT=$(free_port) MINIO_CONSOLE_PORT=$(free_port) TRAINER_IMAGE=$COMPOSE_PROJECT_NAME/trainer:local
export MINIO_PORT MINIO_CONSOLE_PORT TRAINER_IMAGE
# Users get torch from PyTorch's CPU index. Where it does not answer, this run takes the same torch release from
# PyPI (the CUDA build: a bigger image that trains the same on the CPU), so the image still carries its torch.
if ! curl -fsS --max-time 15 -o /dev/null "$TORCH_CPU_INDEX/torch/" 2>/dev/null; then
  export TORCH_INDEX_URL=https://pypi.org/simple
  echo "   PyTorch's CPU index does not answer: the trainer image takes torch from $TORCH_INDEX_URL for this run"
fi

# The local equivalents' build context: the static binaries `go install` built (cached beside the native path's).
local_images_context() {
  local ctx=$state/local-images
  mkdir -p "$ctx"
  cp "$(scripts/build-minio.sh minio)" "$(scripts/build-minio.sh mc)" "$ctx/"
  echo "$ctx"
}
build_local() {  # build_local TARGET TAG (the classic builder: the engine's CLI may have no buildx)
  DOCKER_BUILDKIT=0 docker build -q -f compose/local-images.Dockerfile --target "$1" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$2" "$(local_images_context)"
}
build_local_minio() { MINIO_BIN="" build_local minio "$1"; }
build_local_mc() { MINIO_BIN="" build_local mc "$1"; }
tag_base() { docker tag "$BASE_IMAGE" "$1"; }   # the trainer's FROM: the harness's Debian base is the same release

job_images() {
  image_or_local "$MINIO_OFFICIAL" s3ckpt-local/minio:RELEASE.2025-09-07T16-13-09Z build_local_minio
  image_or_local "$MC_OFFICIAL" s3ckpt-local/mc:RELEASE.2025-08-13T08-35-41Z build_local_mc
  image_or_local debian:bookworm-slim s3ckpt-local/debian:bookworm-slim tag_base
}

# What the stack itself was configured with (compose's defaults or the environment): one owner, the compose file.
stack_env() { compose config --format json | python3 -c 'import json, sys
print(json.load(sys.stdin)["services"][sys.argv[1]]["environment"][sys.argv[2]])' "$1" "$2"; }
trainer_log() { compose logs --no-log-prefix trainer 2>&1 | tr '\r' '\n'; }   # its bar redraws lines with \r
trainer_exit() { docker inspect -f '{{.State.ExitCode}}' "$(compose ps -aq trainer)"; }
cli() { compose run --rm --no-deps -T trainer "$@"; }   # the trainer image with the trainer's key

job_check() {
  local log
  log=$(tr '\r' '\n' <"$UP_LOG")
  [ "$UP_RC" = 0 ] || fail "'${JOB_UP[*]}' exited with $UP_RC (log: $UP_LOG)"
  grep -q "bucket checkpoints ready (versioning on)" <<<"$(compose logs --no-log-prefix createbuckets)" \
    || fail "createbuckets did not report the bucket ready"
  grep -q "starting run 'digits' from scratch" <<<"$log" || fail "the trainer did not start run 'digits'"
  grep -q "checkpoint step 600 saved" <<<"$log" || fail "the trainer did not save its last checkpoint (step 600)"
  grep -q "done: 600 steps, last loss" <<<"$log" || fail "the trainer did not finish its 600 steps"
  grep -o "done: .*" <<<"$log" | tail -n 1 | sed 's/^/   trainer: /'
}

job_scenarios() {
  phase "scenario: the job's checkpoints are in the bucket and verify (MinIO up again: the up line stopped it)"
  compose up -d --wait minio >/dev/null 2>&1 || fail "MinIO did not come up healthy again"
  [ "$(stack_env trainer S3CKPT_ACCESS_KEY)" != "$(stack_env minio MINIO_ROOT_USER)" ] \
    || fail "the trainer runs with the root key"
  cli s3ckpt verify all --run digits | sed 's/^/   /' || fail "the job's checkpoints do not verify"
  ok "verified"

  phase "scenario: docker compose kill trainer after checkpoint $KILL_AFTER, docker compose up trainer resumes"
  S3CKPT_RUN=killed compose up -d trainer >/dev/null 2>&1 || fail "docker compose up -d trainer failed"
  local log="" saved
  for _ in $(seq 300); do
    log=$(trainer_log)
    grep -q "checkpoint step $KILL_AFTER saved" <<<"$log" && break
    [ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -aq trainer)")" = true ] || break
    sleep 1
  done
  grep -q "checkpoint step $KILL_AFTER saved" <<<"$log" \
    || { tail -n 20 <<<"$log" >&2; fail "the trainer never saved checkpoint $KILL_AFTER"; }
  S3CKPT_RUN=killed compose kill trainer >/dev/null 2>&1
  docker wait "$(compose ps -aq trainer)" >/dev/null
  [ "$(trainer_exit)" = 137 ] || fail "the trainer was not killed (exit $(trainer_exit))"
  log=$(trainer_log)
  ! grep -q "done: " <<<"$log" || fail "the trainer had already finished: no kill mid-run"
  saved=$(grep -o 'checkpoint step [0-9]* saved' <<<"$log" | tail -n 1 | grep -o '[0-9]*')
  echo "   killed (exit 137) after checkpoint $saved"
  (cd "$copy/$name" && S3CKPT_RUN=killed TRAINER_THROTTLE=0 timeout 600 docker compose up trainer) >/dev/null 2>&1 || true
  log=$(trainer_log)
  [ "$(trainer_exit)" = 0 ] || { tail -n 20 <<<"$log" >&2; fail "the resumed trainer failed"; }
  grep -q "resumed from step $saved " <<<"$log" \
    || fail "the trainer did not resume from checkpoint $saved: $(grep -E -o '(resumed from step [0-9]*|starting run.*)' <<<"$log" | tail -n 1)"
  cli s3ckpt verify all --run killed >/dev/null || fail "the resumed run's checkpoints do not verify"
  python3 - "$(cli s3ckpt show latest --run killed)" "$(cli s3ckpt show latest --run digits)" <<'EOF' \
    || fail "the killed and resumed run differs from the job's uninterrupted one"
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
  ok "resumed bit-identically"

  phase "scenario: the trainer's key is refused outside its bucket"
  local other=s3ckpt-compose-test-other out
  cli env S3CKPT_ACCESS_KEY="$(stack_env minio MINIO_ROOT_USER)" S3CKPT_SECRET_KEY="$(stack_env minio MINIO_ROOT_PASSWORD)" \
    s3ckpt init --bucket "$other" >/dev/null || fail "the root key could not create a second bucket"
  if out=$(cli s3ckpt list --bucket "$other" 2>&1); then
    fail "the trainer's key could list bucket $other: it is not limited to its own ($out)"
  fi
  echo "   listing bucket $other with the trainer's key: $out"
  ok "refused"

  phase "scenario: distributed MinIO (4 nodes x 2 drives): a save and verified loads through other nodes"
  MINIO_PORT=$(free_port) MINIO_CONSOLE_PORT=$(free_port) dist up -d --wait >/dev/null 2>&1 \
    || fail "the distributed compose file did not come up healthy"
  on_node minio1 s3ckpt init >/dev/null || fail "cannot create the bucket on the distributed MinIO"
  on_node minio1 s3ckpt-train --run dist --steps 20 --ckpt-every 10 --no-progress >/dev/null \
    || fail "training with checkpoints against the distributed MinIO failed"
  on_node minio3 s3ckpt verify all --run dist | sed 's/^/   /' \
    || fail "the checkpoints saved on the distributed MinIO do not verify"
  out=$(on_node minio4 s3ckpt-train --run dist --steps 20 --resume must --no-progress) \
    || fail "loading the checkpoint from the distributed MinIO failed"
  grep -q "^resumed from step 20 " <<<"$out" || fail "the load did not find step 20: $out"
  echo "   $(head -n 1 <<<"$out")"
  ok "saved through minio1, verified through minio3, loaded through minio4"
}

dist() { (cd "$copy/$name" && docker compose -p "$COMPOSE_PROJECT_NAME-dist" -f docker-compose.distributed.yaml "$@"); }
on_node() {  # on_node NODE CMD...: the trainer image on the distributed network, talking to MinIO node NODE
  local node=$1; shift
  docker run --rm --network "$COMPOSE_PROJECT_NAME-dist_default" -e S3CKPT_ENDPOINT="http://$node:9000" \
    -e S3CKPT_ACCESS_KEY="$(dist_env MINIO_ROOT_USER)" -e S3CKPT_SECRET_KEY="$(dist_env MINIO_ROOT_PASSWORD)" \
    "$TRAINER_IMAGE" "$@"
}
dist_env() { dist config --format json | python3 -c 'import json, sys
print(json.load(sys.stdin)["services"]["minio1"]["environment"][sys.argv[1]])' "$1"; }

job_tear_down() { dist down -v --remove-orphans >/dev/null 2>&1 || true; }
