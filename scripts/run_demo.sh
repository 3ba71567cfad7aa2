#!/usr/bin/env bash
# Set up (idempotent) and run the main job on embedded defaults: OpenCV's sample video (vtest.avi),
# the default detector and anonymizer, an embedded Kafka broker and the matching service; then audit
# the output with a detector the run did not use and print the verdict.
# Output: runs/demo/ (anonymized video, observations, summaries, matches, audit/). Extra args go to run_pipeline.py.
# Exit status: the pipeline's (0 clean, 1 a camera ended with an error, 2 bad arguments). The audit's verdict is
# printed (and kept in runs/demo/audit/audit.json); a failing audit is reported loudly, not as a failed demo.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$here/scripts/setup.sh" | tail -n 1)"
data_dir="${PRIVREID_DATA:-$HOME/.cache/privreid/data}"
shared="${PRIVREID_SHARED_DATA:-$here/../shared/data}"
cd "$here"
kafka=(--kafka embedded)
if [ ! -f models/demo/bundle.yaml ]; then
  # Re-ID features come from the learned bundle's network; without it there is nothing to publish.
  echo "[demo] models/demo is missing: running without Kafka (mosaic anonymizer)" >&2
  kafka=()
fi
status=0
"$py" run_pipeline.py --source "$data_dir/vtest.avi" --output runs/demo "${kafka[@]}" "$@" || status=$?
[ "$status" = 0 ] || exit "$status"

# The audit needs persons found independently of the run: a detector the run did not use.
used="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["detector"])' runs/demo/vtest.summary.json)"
yolo="$shared/detector_models/ultralytics/yolov8n_int8_openvino_model"
ssd="$shared/detector_models/intel/pedestrian-detection-adas-0002/FP16/pedestrian-detection-adas-0002.xml"
auditor="${PRIVREID_AUDIT_DETECTOR:-}"
conf="${PRIVREID_AUDIT_CONF:-0.25}"   # YOLO's own default; the SSD's is 0.5 (benchmarks/privacy_recall.py)
if [ -z "$auditor" ]; then
  case "$used" in
    hog*) if [ -e "$yolo" ]; then auditor="$yolo"; fi ;;
    *) if [ -e "$ssd" ]; then auditor="$ssd"; conf=0.5; else auditor=hog; conf=0.5; fi ;;
  esac
fi
if [ -z "$auditor" ]; then
  echo "[demo] audit skipped: the run used '$used' and no other detector is on this machine" \
       "(set PRIVREID_AUDIT_DETECTOR to a model Ultralytics loads, or an OpenVINO SSD .xml)" >&2
  exit 0
fi
# vtest's reviewed empty scene: the auditor's boxes are judged on what differs from it (a sign post the
# auditor calls a person is set aside and counted); PRIVREID_AUDIT_SCENE= (empty) audits without it.
scene="${PRIVREID_AUDIT_SCENE-configs/audit_scenes/vtest.yml}"
scene_args=()
if [ -n "$scene" ]; then scene_args=(--empty-scene "$scene"); fi
echo "[demo] auditing runs/demo/vtest.mp4 with $auditor (the run used $used)${scene:+, against the reviewed empty scene $scene}" >&2
"$py" -m anonymizer.audit --raw "$data_dir/vtest.avi" --anonymized runs/demo/vtest.mp4 \
    --detector "$auditor" --conf "$conf" --out runs/demo/audit "${scene_args[@]}" \
  || echo "[demo] AUDIT FAILED: the output shows some persons recognizably; the misses are listed in" \
          "runs/demo/audit/audit.json and shown in runs/demo/audit/misses.png (docs/privacy-recall.md)" >&2
