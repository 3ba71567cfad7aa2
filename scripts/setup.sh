#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine (run as root or with sudo available).
#   - Debian packages: FFmpeg, GStreamer RTSP server (tests), OpenCV's sample video (opencv-doc)
#   - a Python virtual environment (default: ~/.cache/privreid/venv, override with PRIVREID_VENV)
#   - exactly one OpenCV (headless 4.x) even though Ultralytics asks for opencv-python
# Prints the path of the environment's python on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PRIVREID_VENV:-$HOME/.cache/privreid/venv}"
data_dir="${PRIVREID_DATA:-$HOME/.cache/privreid/data}"
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

apt_pkgs=(ffmpeg python3 python3-venv python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools
          gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# OpenCV's sample video. Docker-style images often exclude /usr/share/doc, so unpack the .deb ourselves.
mkdir -p "$data_dir"
if [ ! -s "$data_dir/vtest.avi" ]; then
  if [ -s /usr/share/doc/opencv-doc/examples/data/vtest.avi ]; then
    cp /usr/share/doc/opencv-doc/examples/data/vtest.avi "$data_dir/vtest.avi"
  else
    echo "[setup] fetching vtest.avi from Debian's opencv-doc package" >&2
    tmp="$(mktemp -d)"
    [ -n "$(ls /var/lib/apt/lists/*Packages* 2>/dev/null)" ] || $sudo_cmd apt-get update -qq
    (cd "$tmp" && apt-get download opencv-doc >&2 && dpkg -x opencv-doc_*.deb root)
    found="$(find "$tmp/root" -name vtest.avi | head -n 1)"
    [ -n "$found" ] || { echo "[setup] vtest.avi not found in opencv-doc" >&2; exit 1; }
    cp "$found" "$data_dir/vtest.avi"
    rm -rf "$tmp"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv" >&2
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python requirements into $venv (first run takes several minutes)" >&2
  "$py" -m pip install -q --upgrade pip >&2 || true
  # Plain ultralytics (an older set-up) and ultralytics-opencv-headless own the same files: remove it first.
  if "$py" -m pip show -q ultralytics >/dev/null 2>&1; then
    "$py" -m pip uninstall -q -y ultralytics >&2
  fi
  "$py" -m pip install -q -r "$here/requirements.txt" >&2
  # Something may still have pulled opencv-python; both wheels write the same cv2 package. Keep headless 4.x only.
  if "$py" -m pip show -q opencv-python >/dev/null 2>&1; then
    "$py" -m pip uninstall -q -y opencv-python >&2
    "$py" -m pip install -q --force-reinstall --no-deps "opencv-python-headless>=4.8,<5" >&2
  fi
  "$py" -c "import cv2; assert cv2.__version__.startswith('4'), cv2.__version__; cv2.HOGDescriptor()"
  echo "$want" > "$stamp"
fi
# The `privreid` command (pyproject.toml), pointing at this checkout: cheap, and redone when the venv
# last pointed at another clone.
if [ "$(cd / && "$py" -c 'import privreid, os; print(os.path.dirname(os.path.dirname(privreid.__file__)))' 2>/dev/null)" != "$here" ] \
   || [ ! -x "$venv/bin/privreid" ]; then
  "$py" -m pip install -q --no-deps --no-build-isolation -e "$here" >&2 2>/dev/null \
    || echo "[setup] warning: could not install the privreid command (python -m privreid still works)" >&2
fi
echo "$py"
