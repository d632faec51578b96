#!/usr/bin/env bash
# Make sure the images docker-compose.yaml names exist: pull the pinned official ones; when a pull fails (no
# registry), build the local equivalents in docker/local/ FROM debian:bookworm-slim instead.
# Prints the .env settings to use, e.g. "NGINX_IMAGE=nginx:1.22.1-alpine PYTHON_IMAGE=file-server-local/...".
set -euo pipefail
cd "$(dirname "$0")/.."

official() { sed -n "s/^$1=//p" .env.example; }

# ensure VAR DOCKERFILE LOCAL_TAG: print VAR=<official image> if present or pullable, else build LOCAL_TAG.
ensure() {
  local var=$1 dockerfile=$2 local_tag=$3 image
  image=$(official "$var")
  [ -n "$image" ] || { echo "compose-images: $var missing from .env.example" >&2; exit 1; }
  if docker image inspect "$image" >/dev/null 2>&1 || timeout 120 docker pull -q "$image" >/dev/null 2>&1; then
    echo "$var=$image"
    return
  fi
  echo "compose-images: cannot pull $image: building the local equivalent $local_tag" >&2
  # The classic builder: BuildKit on this engine may resolve FROM to a stale local base image.
  DOCKER_BUILDKIT=0 docker build -q -t "$local_tag" -f "docker/local/$dockerfile" docker/local >/dev/null 2>"$tmp" \
    || { cat "$tmp" >&2; echo "compose-images: building $local_tag failed" >&2; exit 1; }
  echo "$var=$local_tag"
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
ensure NGINX_IMAGE nginx.Dockerfile file-server-local/nginx:1.22.1
ensure PYTHON_IMAGE python.Dockerfile file-server-local/python:3.11
