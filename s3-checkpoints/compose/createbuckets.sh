#!/bin/sh
# One-shot bucket setup (run by the `createbuckets` service, minio/mc image). Idempotent: safe on every `up`.
# The official mc image is minimal (mc and a shell; no sed, grep or awk): only shell built-ins and mc here.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3CKPT_BUCKET"
mc version enable "local/$S3CKPT_BUCKET"

# The trainer's policy names the bucket: replace every BUCKET in the template with the shell alone.
fill_bucket() {
  while IFS= read -r line || [ -n "$line" ]; do
    out=""
    while :; do
      case "$line" in
        *BUCKET*) out="$out${line%%BUCKET*}$S3CKPT_BUCKET"; line="${line#*BUCKET}" ;;
        *) break ;;
      esac
    done
    printf '%s\n' "$out$line"
  done
}
policy="${TMPDIR:-/tmp}/trainer-policy.json"
fill_bucket < "${POLICY_TEMPLATE:-/setup/trainer-policy.json}" > "$policy"

# A non-root key for the trainer, allowed only on this bucket.
mc admin policy create local s3ckpt-trainer "$policy"
mc admin user add local "$TRAINER_ACCESS_KEY" "$TRAINER_SECRET_KEY"
mc admin policy attach local s3ckpt-trainer --user "$TRAINER_ACCESS_KEY" 2>/dev/null || true
echo "bucket $S3CKPT_BUCKET ready (versioning on), trainer key $TRAINER_ACCESS_KEY limited to it"
