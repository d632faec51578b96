#!/usr/bin/env bash
# need.sh COMMAND=DEBIAN_PACKAGE ...: make sure each command is on PATH (or in /usr/sbin). As root the missing
# packages are installed with apt-get; otherwise one line names them and the command that installs them.
# Each make target calls it with only the commands it runs, so no target asks for a tool it does not use.
set -euo pipefail

missing=()
for pair in "$@"; do
  cmd=${pair%%=*} pkg=${pair#*=}
  command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${missing[*]} -- run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } \
  || { echo "apt-get install -y ${missing[*]} failed" >&2; exit 1; }
