#!/usr/bin/env bash
# The `gpu` profile on a lent, offline GPU machine (this workplace's `device` tool), inside a time budget.
#
# On any machine with a GPU and the packages, the one command is `make reproduce PROFILE=gpu`. This script is for
# a bare machine that has Python and a CUDA torch but no internet: it installs the wheels and the data cache
# carried in $CARRY (see tools/gpu_carry.sh), then runs the experiment notebooks in priority order, each capped
# by the time left, and packs figures/, the manifest and the executed notebooks into $OUT/gpu_results.tgz.
# All five took 10.7 min on an H200 (e00 12 s, e01 32 s, e02 138 s, e03 230 s, e04 231 s), more than one 10-minute
# command: split them, e.g. NOTEBOOKS="e02_bpe_study e01_tokens e03_askvhs:235" BUDGET_S=505, then
# NOTEBOOKS="e04_dsmr:200 e00_corpus" BUDGET_S=330; then `python tools/merge_results.py one.tgz two.tgz` here.
set -u
BUDGET_S=${BUDGET_S:-480}                 # seconds for the notebooks, all together
CARRY=${CARRY:-.gpucarry}
NOTEBOOKS=${NOTEBOOKS:-"e00_corpus e03_askvhs:240 e04_dsmr:220 e02_bpe_study e01_tokens"}   # name[:seconds it needs to start]
OUT=${OUT:-runs/gpu_lease}; mkdir -p "$OUT"
deadline=$(( $(date +%s) + BUDGET_S ))
[ -n "${SKIP_INSTALL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 MPLBACKEND=Agg
mkdir -p data/cache && tar xzf "$CARRY/cache.tgz" -C data/cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, miditok, symusic, music21, papermill; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))" || exit 1
for item in $NOTEBOOKS; do
  nb=${item%%:*}; need=30; [ "$nb" = "$item" ] || need=${item#*:}
  left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt "$need" ]; then echo "[gpu] $nb: not run, $left s left (needs $need)"; continue; fi
  timeout -k 5 "$left" python3 -m sage_paper.reproduce --profile gpu --only "$nb" --force
  echo "[gpu] $nb: exit $? ($(( deadline - $(date +%s) )) s left)"
done
tar czf "$OUT/gpu_results.tgz" figures runs/gpu && ls -la "$OUT"
