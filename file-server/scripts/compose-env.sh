#!/usr/bin/env bash
# Write a fresh .env from .env.example, with KEY=VALUE arguments replacing settings (in place, also a commented
# "# KEY=" example line) or adding them at the end.
#   scripts/compose-env.sh POOL_UID=1000 POOL_GID=1000 NGINX_IMAGE=...
# BUILD_CA_FILE defaults to the host's CA bundle when there is one: pip in the client build then trusts what the
# host trusts (a TLS-intercepting proxy's CA included); it is a build secret, never stored in the image.
set -euo pipefail
cd "$(dirname "$0")/.."

ca=/etc/ssl/certs/ca-certificates.crt
if [ -s "$ca" ]; then set -- BUILD_CA_FILE="$ca" "$@"; fi

for pair in "$@"; do
  [[ $pair =~ ^[A-Z_][A-Z0-9_]*= ]] || { echo "compose-env: not KEY=VALUE: $pair" >&2; exit 2; }
done
awk '
  BEGIN { for (i = 1; i < ARGC; i++) { k = ARGV[i]; sub(/=.*/, "", k); set[k] = ARGV[i]; order[i] = k }
          n = ARGC; ARGC = 1 }
  { k = $0; sub(/^# ?/, "", k); sub(/=.*/, "", k)
    if ((k in set) && !(k in done)) { print set[k]; done[k] = 1 } else print }
  END { for (i = 1; i < n; i++) if (!(order[i] in done)) print set[order[i]] }
' "$@" <.env.example >.env.tmp
mv .env.tmp .env
