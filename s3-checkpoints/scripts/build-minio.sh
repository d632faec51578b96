#!/usr/bin/env bash
# scripts/build-minio.sh [minio|mc]: build MinIO's server (default) or its client from source with `go install`,
# pinned to the commits of the official images that docker-compose.yaml names, and print the binary's path.
# The server is what the tests and the demo run natively; both go into the local equivalents of the official
# images where no registry answers (scripts/compose-job.sh). MinIO's tags are not semver, so the Go module proxy
# serves the releases only as pseudo-versions. Binaries are static (CGO_ENABLED=0, as MinIO's own releases) and
# cached OUTSIDE the clone, so reruns, CI and fresh clones skip the build (a few minutes each).
# The server is not built when MINIO_BIN=/path/to/minio (an executable) is set or a `minio` is on PATH.
set -euo pipefail
what=${1:-minio}
case $what in
  minio)  # minio/minio:RELEASE.2025-09-07T16-13-09Z, commit 07c3a429bfed433e49018cb0f78a52145d4bedeb
    release=RELEASE.2025-09-07T16-13-09Z module=github.com/minio/minio version=v0.0.0-20250907161309-07c3a429bfed
    module_sum=""
    if [ -n "${MINIO_BIN:-}" ]; then
      [ -x "$MINIO_BIN" ] || { echo "error: MINIO_BIN=$MINIO_BIN is not an executable file" >&2; exit 1; }
      echo "$MINIO_BIN"; exit 0
    fi ;;
  mc)  # minio/mc:RELEASE.2025-08-13T08-35-41Z. The checksum database has no entry for this pseudo-version, so
       # the module's own hash is pinned here and checked instead.
    release=RELEASE.2025-08-13T08-35-41Z module=github.com/minio/mc version=v0.0.0-20250813083541-7394ce0dd2a8
    module_sum="h1:9tuRE4iEaDkuxatxe7pddYYh1SX5mT0/D0haofZFeTY=" ;;
  *) echo "usage: $0 [minio|mc]" >&2; exit 2 ;;
esac
# "-static": an earlier version of this script cached a cgo build under the release's name alone.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/s3-checkpoints/$what-$release-static"
bin="$cache/$what"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
if [ "$what" = minio ] && [ -z "${MINIO_BIN+set}" ] && command -v minio >/dev/null 2>&1; then command -v minio; exit 0; fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' not found: install Go >= 1.24 (https://go.dev/dl), or set MINIO_BIN to a minio server binary" >&2
  exit 1
fi
mkdir -p "$cache"
echo ">> building $what $release ($version) with go install: first time only, a few minutes" >&2
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -p=2"   # -p 2: the machine has 2 shared cores
if [ -n "$module_sum" ]; then
  export GONOSUMDB=$module
  sum=$(go mod download -json "$module@$version" | sed -n 's/.*"Sum": "\(.*\)".*/\1/p')
  [ "$sum" = "$module_sum" ] || { echo "error: $module@$version has hash $sum, pinned $module_sum" >&2; exit 1; }
fi
tmp=$(mktemp -d "$cache/build.XXXXXX")
GOBIN="$tmp" go install -trimpath "$module@$version" >&2
mv "$tmp/$what" "$bin"   # atomic publish: a killed build never leaves a half binary at $bin
rmdir "$tmp"
echo "$bin"
