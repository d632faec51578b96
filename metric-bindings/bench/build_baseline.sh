#!/usr/bin/env bash
# Build this folder's extension as it was at a git revision, for `make bench BASELINE=<rev>`: the source from
# `git archive`, compiled by pip (scikit-build-core) into build/baseline/<commit>/ beside the scipy-openblas32
# our venv runs, and reused on later runs. Prints the path of its _core*.so.
set -euo pipefail
rev=${1:?usage: bench/build_baseline.sh <git revision>}
cd "$(dirname "$0")/.."
sha=$(git rev-parse --verify --quiet "$rev^{commit}") ||
  { echo "build_baseline: '$rev' is not a commit here (see: git log --oneline -- .)" >&2; exit 2; }
prefix=$(git rev-parse --show-prefix)
git cat-file -e "$sha:${prefix}pyproject.toml" 2>/dev/null ||
  { echo "build_baseline: this folder has no pyproject.toml at $rev: pick a later commit" >&2; exit 2; }
dir=build/baseline/${sha:0:12}
find_so() { compgen -G "$dir/site/metric_bindings/_core*.so" | head -n 1; }
if [ -z "$(find_so)" ]; then
  echo "build_baseline: building metric-bindings at ${sha:0:12} into $dir (about a minute, once)" >&2
  rm -rf "$dir" && mkdir -p "$dir/src"
  git -C "$(git rev-parse --show-toplevel)" archive "$sha:$prefix" | tar -x -C "$dir/src"
  openblas=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('scipy-openblas32'))")
  .venv/bin/uv pip install --python .venv/bin/python --quiet --no-deps --target "$dir/site" \
    "$dir/src" "scipy-openblas32==$openblas" >&2
fi
so=$(find_so)
[ -n "$so" ] || { echo "build_baseline: the build of $rev left no _core*.so in $dir/site" >&2; exit 1; }
echo "$PWD/$so"
