#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. CI calls this through .ci/run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="$(bash "$here/scripts/setup.sh" | tail -n 1)"
cd "$here"
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
# lint and format first: seconds, and a failure here names the file and line
ruff="$(dirname "$py")/ruff"
"$ruff" check .
"$ruff" format --check .
# types of the core packages (the file list and settings are pyproject.toml's [tool.mypy])
"$(dirname "$py")/mypy"
"$py" -m pytest -q -p no:cacheprovider --timeout=600 "$@" tests
