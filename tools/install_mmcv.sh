#!/usr/bin/env bash
# Install mmcv 2.1.0 with compiled ops into the given Python's environment.
#
# mmcv publishes no wheel for torch 2.14.1, so this script, in order:
#   1. does nothing if mmcv==2.1.0 with its compiled ops already imports;
#   2. installs a matching wheel from a wheelhouse: $MMEPSA_WHEELHOUSE, then
#      ./.wheelhouse/torch-<torch version>/ (where step 3 keeps its builds), then
#      ../shared/wheels/torch-<torch version>/;
#   3. else installs the build requirements (setuptools<82, wheel, ninja) and
#      builds a wheel from the registry's source archive: MMCV_WITH_OPS=1,
#      --no-build-isolation, -std=c++20 in place of the -std=c++17 that mmcv
#      2.1.0's setup.py hard-codes (torch >= 2.10 headers need C++20), CUDA ops
#      when nvcc and a GPU are present (FORCE_CUDA=1), CPU ops otherwise. About
#      11 minutes and 3 GB of RAM on 2 cores. The wheel is kept in
#      ./.wheelhouse/torch-<torch version>/ for the next run.
#
# Usage: tools/install_mmcv.sh [PYTHON]     (default: .venv/bin/python)
# A CPU-ops wheel is not used where CUDA ops are wanted (nvcc + GPU present),
# unless MMEPSA_MMCV_CPU_OK=1.
set -euo pipefail

MMCV_VERSION=2.1.0
PY=${1:-.venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

has_mmcv_ops() {
    "$PY" - <<EOF 2>/dev/null
import mmcv, sys
from mmcv.ops import nms  # noqa: F401  (fails when ops were not compiled)
sys.exit(0 if mmcv.__version__ == '$MMCV_VERSION' else 1)
EOF
}

if has_mmcv_ops; then
    echo "[install_mmcv] mmcv $MMCV_VERSION with ops already installed"
    exit 0
fi

TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
ARCH=$(uname -m)
WANT_CUDA=0
if command -v nvcc >/dev/null 2>&1 && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    WANT_CUDA=1
fi

OWN_HOUSE="$ROOT/.wheelhouse/torch-$TORCH_VERSION"
CANDIDATES=()
[ -n "${MMEPSA_WHEELHOUSE:-}" ] && CANDIDATES+=("$MMEPSA_WHEELHOUSE")
CANDIDATES+=("$OWN_HOUSE" "$ROOT/../shared/wheels/torch-$TORCH_VERSION")

for house in "${CANDIDATES[@]}"; do
    wheel=$(ls "$house"/mmcv-"$MMCV_VERSION"-"$PY_TAG"-"$PY_TAG"-linux_"$ARCH".whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] || continue
    # A wheel we built ourselves records whether it has CUDA ops beside it.
    if [ "$WANT_CUDA" = 1 ] && [ "${MMEPSA_MMCV_CPU_OK:-0}" != 1 ] && ! [ -f "$wheel.cuda" ]; then
        echo "[install_mmcv] skipping $wheel: CUDA ops wanted, wheel not marked as CUDA build"
        continue
    fi
    echo "[install_mmcv] installing $wheel (torch $TORCH_VERSION, $PY_TAG, $ARCH)"
    "$PY" -m pip install --no-deps "$wheel"
    if has_mmcv_ops; then
        exit 0
    fi
    echo "[install_mmcv] $wheel does not import against this torch; trying the next source" >&2
    "$PY" -m pip uninstall -y mmcv >/dev/null
done

echo "[install_mmcv] building mmcv $MMCV_VERSION from source for torch $TORCH_VERSION (CUDA ops: $WANT_CUDA); this takes minutes (docs/install.md)"
BUILD_DIR=$(mktemp -d)
trap 'rm -rf "$BUILD_DIR"' EXIT
# The build requirements first, and no build isolation even for the download:
# pip prepares the source archive's metadata by running mmcv's setup.py, which
# imports pkg_resources (gone in setuptools 82). In an isolated build
# environment (what pip uses when `wheel` is missing) it would get the newest
# setuptools and die there.
"$PY" -m pip install "setuptools>=77,<82" wheel ninja
"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$BUILD_DIR" "mmcv==$MMCV_VERSION"
tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
grep -q -- '-std=c++17' "$SRC/setup.py" || { echo "[install_mmcv] mmcv's setup.py has no -std=c++17 to replace; refusing to guess" >&2; exit 1; }
sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
mkdir -p "$OWN_HOUSE"
export MMCV_WITH_OPS=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ "$WANT_CUDA" = 1 ]; then export FORCE_CUDA=1; fi
"$PY" -m pip wheel --no-build-isolation --no-deps -w "$OWN_HOUSE" "$SRC"
wheel=$(ls "$OWN_HOUSE"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
if [ "$WANT_CUDA" = 1 ]; then touch "$wheel.cuda"; fi
"$PY" -m pip install --no-deps "$wheel"
has_mmcv_ops || { echo "[install_mmcv] the built mmcv does not import its ops" >&2; exit 1; }
echo "[install_mmcv] installed $wheel"
