#!/bin/sh
# One-shot bucket setup (run by the `createbuckets` service, minio/mc image). Idempotent: safe on every `up`.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3CKPT_BUCKET"
mc version enable "local/$S3CKPT_BUCKET"
# A non-root key for the trainer, allowed only on this bucket.
sed "s/BUCKET/$S3CKPT_BUCKET/g" /setup/trainer-policy.json > /tmp/trainer-policy.json
mc admin policy create local s3ckpt-trainer /tmp/trainer-policy.json
mc admin user add local "$TRAINER_ACCESS_KEY" "$TRAINER_SECRET_KEY"
mc admin policy attach local s3ckpt-trainer --user "$TRAINER_ACCESS_KEY" 2>/dev/null || true
echo "bucket $S3CKPT_BUCKET ready (versioning on), trainer key $TRAINER_ACCESS_KEY limited to it"
