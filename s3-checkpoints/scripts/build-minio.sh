#!/usr/bin/env bash
# Build the real MinIO server from source with `go install`, pinned to the commit of the last official
# container image (minio/minio:RELEASE.2025-09-07T16-13-09Z). MinIO tags are not semver, so the Go module
# proxy only serves the release as its pseudo-version. The binary is cached OUTSIDE the clone so that
# reruns, CI and fresh clones skip the (several minute) build. Prints the binary path on stdout.
set -euo pipefail
MINIO_RELEASE="RELEASE.2025-09-07T16-13-09Z"
MINIO_GO_VERSION="v0.0.0-20250907161309-07c3a429bfed"   # commit 07c3a429bfed433e49018cb0f78a52145d4bedeb
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/s3-checkpoints/minio-${MINIO_RELEASE}"
BIN="$CACHE/minio"
if [ -n "${MINIO_BIN:-}" ] && [ -x "${MINIO_BIN}" ]; then echo "$MINIO_BIN"; exit 0; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' not found; install Go >= 1.24 (https://go.dev/dl) to build MinIO natively, or use 'make up' (Docker)" >&2
  exit 1
fi
mkdir -p "$CACHE"
echo ">> building MinIO ${MINIO_RELEASE} (${MINIO_GO_VERSION}) with go install; first time only, takes a few minutes" >&2
TMPBIN="$(mktemp -d "$CACHE/build.XXXXXX")"
# -p 2: the machine has 2 shared cores; -trimpath for a reproducible binary.
GOBIN="$TMPBIN" GOFLAGS="${GOFLAGS:-} -p=2" go install -trimpath "github.com/minio/minio@${MINIO_GO_VERSION}" >&2
mv "$TMPBIN/minio" "$BIN"   # atomic publish: a killed build never leaves a half binary at $BIN
rmdir "$TMPBIN"
echo "$BIN"
