#!/usr/bin/env bash
# On a lent GPU: Base, "w/o upgradation" and "full" on CUHK01 at the paper's input size
# (configs/cuhk01_gcr_gpu.yml), then the w/o model exported as a bundle. Base and w/o run side by
# side on the one GPU; full needs the w/o model's test rank-1 (raw -> protected) as MODEL.VAL_R1.
#
#   usage: [FULL_MARGIN=0.3] [DATA_ROOT=../shared/data] scripts/device_issue4.sh OUT_DIR [KEY VALUE ...]
#   (overrides go to every run; DATA_ROOT is passed as DATASETS.ROOT_DIR, an override of it wins)
# "full" is the method's rule (docs/method.md); "full_margin" freezes only encoders within
# (1 - FULL_MARGIN)·ε of M (MODEL.UPGRADE_MARGIN, ours: the variant that beat Base on the CPU,
# docs/experiments/04-upgrade-margin-four-seeds.md).
#   smoke on a CPU: scripts/device_issue4.sh /tmp/d4 MODEL.DEVICE cpu SOLVER.MAX_EPOCHS 1 \
#                     SOLVER.MAX_ITERS_PER_EPOCH 2 MODEL.NGF 8 MODEL.NDF 8 INPUT.IMG_SIZE "[64, 32]"
# Untested on a GPU so far: no GPU was lent when it was written (see docs/results.md, section 5).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: $0 OUT_DIR [KEY VALUE ...]}
shift
PY=${PY:-python}
CFG=configs/cuhk01_gcr_gpu.yml
DATA=(DATASETS.ROOT_DIR "${DATA_ROOT:-../shared/data}")  # before "$@", so that an override wins
mkdir -p "$OUT"
echo "[device_issue4] $(date -u +%FT%TZ) Base and w/o upgradation, side by side"
$PY -m training --config_file "$CFG" "${DATA[@]}" "$@" MODEL.MODE C OUTPUT_DIR "$OUT/base" > "$OUT/base.log" 2>&1 &
base=$!
$PY -m training --config_file "$CFG" "${DATA[@]}" "$@" OUTPUT_DIR "$OUT/wosu" > "$OUT/wosu.log" 2>&1 &
wosu=$!
status=0
wait $base || { echo "[device_issue4] Base failed: tail of $OUT/base.log"; tail -n 20 "$OUT/base.log"; status=1; }
wait $wosu || { echo "[device_issue4] w/o failed: tail of $OUT/wosu.log"; tail -n 20 "$OUT/wosu.log"; exit 1; }
R1=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['results']['raw->protected']['rank1'])" \
     "$OUT/wosu/metrics.json")
MARGIN=${FULL_MARGIN:-0.3}
echo "[device_issue4] $(date -u +%FT%TZ) full (the method's rule) and full with upgrade margin $MARGIN, side by side," \
     "MODEL.VAL_R1 $R1 (the w/o model's test rank-1 raw->protected)"
$PY -m training --config_file "$CFG" "${DATA[@]}" "$@" DATASETS.NAMES "('cuhk01_val')" MODEL.VAL_R1 "$R1" \
    OUTPUT_DIR "$OUT/full" > "$OUT/full.log" 2>&1 &
full=$!
$PY -m training --config_file "$CFG" "${DATA[@]}" "$@" DATASETS.NAMES "('cuhk01_val')" MODEL.VAL_R1 "$R1" \
    MODEL.UPGRADE_MARGIN "$MARGIN" OUTPUT_DIR "$OUT/full_margin" > "$OUT/full_margin.log" 2>&1 &
full_margin=$!
wait $full || { echo "[device_issue4] full failed: tail of $OUT/full.log"; tail -n 20 "$OUT/full.log"; status=1; }
wait $full_margin || { echo "[device_issue4] full_margin failed"; tail -n 20 "$OUT/full_margin.log"; status=1; }
$PY -m training.export --run "$OUT/wosu" --out "$OUT/bundle_wosu" --key-file "$OUT/keys/wosu.key" > "$OUT/export.log" 2>&1
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("base", "wosu", "full", "full_margin"):
    if not (out / name / "metrics.json").is_file():
        print(f"[device_issue4] {name:11s} no metrics.json (see {out / name}.log)")
        continue
    m = json.loads((out / name / "metrics.json").read_text())
    r1 = " / ".join(f"{100 * m['results'][s]['rank1']:.1f}" for s in
                    ("raw->raw", "raw->protected", "protected->raw", "protected->protected"))
    img = m.get("image_metrics", {})
    extra = " ".join(f"{k} {v['psnr']:.2f}/{v['ssim']:.3f}" for k, v in img.items())
    print(f"[device_issue4] {name:11s} rank-1 {r1}  {extra}")
PY
exit $status
