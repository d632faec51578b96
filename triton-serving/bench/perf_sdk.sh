#!/usr/bin/env bash
# perf_analyzer inside the Triton SDK container (compose service `sdk`), against the compose server "triton".
# Uses the same input data files as `make perf` (build/perf/inputs-<seq>.json for the forms, text-<seq>.json for
# their <form>_text models; written by `triton-serving perf --write-inputs-only`), so container and native
# figures are comparable. The tokenizer model is a step of the _text models, not measured on its own.
set -euo pipefail
GRPC=${TRITON_GRPC_URL:-triton:8001}
HTTP=${TRITON_HTTP_URL:-triton:8000}
SEQS=${PERF_SEQ_LENS:-16 64 128}
CONC=${PERF_CONCURRENCY:-1:8}
OUT=/workspace/build/perf/sdk
mkdir -p "$OUT"
for _ in $(seq 60); do curl -fsS "http://$HTTP/v2/health/ready" >/dev/null && break; sleep 5; done
curl -fsS "http://$HTTP/v2/health/ready" >/dev/null || { echo "error: Triton at $HTTP is not ready" >&2; exit 1; }
MODELS=${PERF_MODELS:-$(curl -fsS -X POST "http://$HTTP/v2/repository/index" \
  | python3 -c 'import json,sys; print(" ".join(m["name"] for m in json.load(sys.stdin)
    if m.get("state")=="READY" and m["name"].startswith("minilm_")))')}
for m in $MODELS; do
  for s in $SEQS; do
    case "$m" in *_text) data=/workspace/build/perf/text-$s.json ;; *) data=/workspace/build/perf/inputs-$s.json ;; esac
    [ -f "$data" ] || { echo "error: $data missing; run 'make perf-inputs' on the host first" >&2; exit 1; }
    echo "== $m seq=$s concurrency=$CONC"
    perf_analyzer -m "$m" -u "$GRPC" -i grpc --input-data "$data" -b 1 \
      --concurrency-range "$CONC" --measurement-interval 2000 --stability-percentage 10 --max-trials 10 \
      --percentile 95 -f "$OUT/$m-seq$s.csv"
  done
done
echo "CSV files in build/perf/sdk/"
