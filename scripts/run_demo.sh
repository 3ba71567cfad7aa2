#!/usr/bin/env bash
# Set up (idempotent) and run the main job on embedded defaults: OpenCV's sample video (vtest.avi),
# the default detector and anonymizer, an embedded Kafka broker and the matching service.
# Output: runs/demo/ (anonymized video, observations, summaries, matches). Extra args go to run_pipeline.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$here/scripts/setup.sh" | tail -n 1)"
data_dir="${PRIVREID_DATA:-$HOME/.cache/privreid/data}"
cd "$here"
kafka=(--kafka embedded)
if [ ! -f models/demo/bundle.yaml ]; then
  # Re-ID features come from the learned bundle's network; without it there is nothing to publish.
  echo "[demo] models/demo is missing: running without Kafka (mosaic anonymizer)" >&2
  kafka=()
fi
exec "$py" run_pipeline.py --source "$data_dir/vtest.avi" --output runs/demo "${kafka[@]}" "$@"
