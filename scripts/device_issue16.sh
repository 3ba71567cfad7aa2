#!/usr/bin/env bash
# On a lent GPU: the mosaic-skip encoder against outside attackers. Per seed, Base with C from the
# public OSNet x0.25 (configs/cuhk01_osnet_cpu.yml), then w/o upgradation with C started from that
# Base run (configs/cuhk01_gcr_osnet_cpu.yml: G = the fixed mosaic 24 plus a zero-initialized
# residual and a scattered recovery payload, both public OSNet exports vetoing every validation),
# four seeds side by side;
# each run exported as a bundle and measured by anonymizer.evaluate_privacy (outside, adaptive and
# recovery attackers, faces) next to mosaic 24 on the same test identities.
#
#   usage: [DATA_ROOT=../shared/data] [SEEDS="0 1 2 3"] [EVAL_ARGS="..."] scripts/device_issue16.sh OUT_DIR [KEY VALUE ...]
#   (overrides go to every training run; DATA_ROOT is passed as DATASETS.ROOT_DIR, an override wins)
#   smoke on a CPU: SEEDS=0 EVAL_ARGS="--max-ids 12 --max-train-ids 12 --adaptive-iters 2 --recovery-iters 2" \
#     scripts/device_issue16.sh /tmp/d16 MODEL.DEVICE cpu SOLVER.MAX_EPOCHS 1 SOLVER.MAX_ITERS_PER_EPOCH 2 \
#     MODEL.G_WARMUP_ITERS 2 MODEL.NGF 8 MODEL.NDF 8
# Untested on a GPU so far: no GPU was lent when it was written (docs/experiments/10-mosaic-skip-encoder.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT_DIR [KEY VALUE ...]}
shift
PY=${PY:-python}
DATA_ROOT=${DATA_ROOT:-../shared/data}
BASE_CFG=configs/cuhk01_osnet_cpu.yml
CFG=configs/cuhk01_gcr_osnet_cpu.yml
GPU=(MODEL.DEVICE cuda SOLVER.CPU_THREADS 4 DATALOADER.NUM_WORKERS 3 SOLVER.AMP off)
mkdir -p "$OUT"
# train NAME CONFIG [KEY VALUE ...]: every seed side by side, OUT/NAME<seed>; fails if any run fails
train() {
  local name=$1 cfg=$2 pids=() status=0
  shift 2
  for seed in ${SEEDS:-0 1 2 3}; do
    echo "[device_issue16] $(date -u +%FT%TZ) training $name, seed $seed"
    # an override naming a seed-dependent folder uses SEED_DIR, replaced here
    $PY -m training --config_file "$cfg" DATASETS.ROOT_DIR "$DATA_ROOT" "${GPU[@]}" \
        SOLVER.SEED "$seed" DATASETS.SPLIT_SEED 0 "${@//SEED_DIR/$OUT/base$seed}" \
        OUTPUT_DIR "$OUT/$name$seed" > "$OUT/$name$seed.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ "$status" = 0 ] || { echo "[device_issue16] a $name run failed:"; tail -n 20 "$OUT/$name"*.log; exit 1; }
}
train base "$BASE_CFG" "$@"
train seed "$CFG" MODEL.PRETRAIN_CHOICE self MODEL.PRETRAIN_DIR SEED_DIR "$@"
for seed in ${SEEDS:-0 1 2 3}; do
  echo "[device_issue16] $(date -u +%FT%TZ) export and privacy evaluation, seed $seed"
  $PY -m training.export --run "$OUT/seed$seed" --out "$OUT/bundle$seed" --key-file "$OUT/recovery$seed.key"
  # shellcheck disable=SC2086  # EVAL_ARGS is a list of options
  $PY -m anonymizer.evaluate_privacy --bundle "$OUT/bundle$seed" --dataset cuhk01 --root "$DATA_ROOT" \
      --recovery-key "$OUT/recovery$seed.key" --baselines mosaic:24 --out "$OUT/privacy$seed" \
      --markdown "$OUT/privacy$seed.md" --figure "$OUT/privacy$seed.png" ${EVAL_ARGS:-} \
      > "$OUT/privacy$seed.log" 2>&1 || { echo "[device_issue16] evaluation failed:"; tail -n 20 "$OUT/privacy$seed.log"; exit 1; }
done
jsons=() labels=()
for seed in ${SEEDS:-0 1 2 3}; do jsons+=("$OUT/privacy$seed/privacy.json"); labels+=("seed $seed"); done
$PY -m anonymizer.privacy_seeds "${jsons[@]}" --labels "${labels[@]}" --out "$OUT/seeds.json" | tee "$OUT/seeds.md"
echo "[device_issue16] $(date -u +%FT%TZ) done: $OUT/privacy*/privacy.json, $OUT/seeds.md"
