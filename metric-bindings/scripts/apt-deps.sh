#!/usr/bin/env bash
# Make sure the Debian packages named as arguments are installed (apt-get as root; otherwise one line saying
# what to run). Each package is probed by what this folder uses of it, not by a distribution-specific path:
#   g++ cmake ninja-build   the extension's build (and the C++ tests')
#   libgtest-dev            the C++ unit tests only (its headers)
#   qemu-user               the test that runs the default build on an emulated CPU without AVX-512
#   scripts/apt-deps.sh [--check] g++ cmake ninja-build [libgtest-dev]
#     --check   install nothing: exit 1 with the line naming what is missing and how to install it
set -euo pipefail

check_only=0
[ "${1:-}" = --check ] && { check_only=1; shift; }

present() {
  case $1 in
    g++) command -v g++ >/dev/null ;;
    cmake) command -v cmake >/dev/null ;;
    ninja-build) command -v ninja >/dev/null ;;
    libgtest-dev) [ -f /usr/include/gtest/gtest.h ] ;;
    qemu-user) command -v qemu-x86_64 >/dev/null ;;
    *) dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' ;;
  esac
}

missing=()
for pkg in "$@"; do present "$pkg" || missing+=("$pkg"); done
[ ${#missing[@]} = 0 ] && exit 0
if [ "$check_only" = 1 ] || [ "$(id -u)" != 0 ]; then
  echo "metric-bindings: missing apt packages: ${missing[*]} (run: make install as root, or sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "metric-bindings: installing apt packages: ${missing[*]}"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
