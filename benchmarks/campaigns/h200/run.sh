#!/usr/bin/env bash
# The GPU campaigns of issues 15, 16, 17 and 23 on one H200, one group per call. Not yet run (no GPU was lent
# when they were written): the sizes follow the issues, which aim at 10 minutes a group; every cell has its own
# timeout, and a cell that times out or runs out of memory is recorded as such while the sweep goes on. Records land in leaderboard/results/cuda-h200-GROUP-DATE.json (and in $OUT when set).
#
#   benchmarks/campaigns/h200/run.sh fast-paths | scaledit | ultragen | vggt
#
# On the lent device machine (torch, timm, torchvision, typer, rich, pyyaml are there; diffusers, importlib_metadata
# and platformdirs were not, as of 2026-11; its torch was 2.11, older than pyproject's pin, which `--no-deps`
# skips): first, here,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl diffusers importlib_metadata platformdirs
# then run with carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   pip install --no-deps -e . && benchmarks/campaigns/h200/run.sh scaledit
set -euo pipefail
group=${1:?usage: run.sh fast-paths|scaledit|ultragen|vggt}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
case "$group" in
  fast-paths) files="fast-paths-classification fast-paths-restoration fast-paths-cuda-graphs fast-paths-compiled" ;;
  scaledit) files="scaledit" ;;
  ultragen) files="ultragen" ;;
  vggt) files="vggt flashvggt-long" ;;
  *) echo "error: unknown group '$group' (fast-paths, scaledit, ultragen, vggt)" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
store=$(mktemp -d)/records.sqlite
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for f in $files; do
  echo "== $f"
  bench sweep "$here/$f.yaml" --store "$store" || echo "warning: sweep $f exited with $?" >&2
done
if [ "$group" = fast-paths ]; then
  bench microbench fast-paths --device cuda --dtype bf16 | tee "${OUT:-/tmp}/fast-paths.txt"
fi
result="$root/leaderboard/results/cuda-h200-$group-$(date -u +%F).json"
bench results export --store "$store" --format json --out "$result"
if [ -n "${OUT:-}" ]; then cp "$result" "$OUT/"; fi
echo "records: $result"
