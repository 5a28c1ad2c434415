#!/usr/bin/env bash
# Make (or bring up to date) one of the project's environments.
#
# Usage: tools/setup_env.sh [VENV [STACK]]
#   VENV   the environment's folder (default: .venv)
#   STACK  the file that pins the torch pair and the build tools (default:
#          requirements/build.txt, the pinned stack); it is installed first
#          and constrains every later step. requirements/torch21.txt is the
#          classic stack CI also tests (make test-compat),
#          requirements/torch-newest.txt the newest torch (make test-newest).
#
# Idempotent: a stamp in VENV records a hash of the requirement files, setup.py
# and these scripts; when nothing changed and the stack imports, it returns in
# seconds. Steps: venv -> torch pair
# -> OpenMMLab stack, tests and optional extras -> mmcv with ops
# (tools/install_mmcv.sh) -> mmepsa in editable mode.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${1:-.venv}
STACK=${2:-requirements/build.txt}
[ -f "$STACK" ] || { echo "[setup] no such stack file: $STACK" >&2; exit 1; }
PY=$VENV/bin/python
STAMP=$VENV/.mmepsa-stamp

want=$( (echo "$STACK"; cat requirements/*.txt setup.py tools/install_mmcv.sh tools/setup_env.sh) | sha256sum | cut -d' ' -f1)
# Without importing anything (fast): the packages are there, mmcv has its
# compiled ops, and mmepsa is this checkout.
installed() {
    "$PY" - "$ROOT" <<'PYCHECK'
import glob, importlib.util, os, sys
names = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmpretrain',
         'mmseg', 'mim', 'mmepsa')
specs = {name: importlib.util.find_spec(name) for name in names}
ok = all(specs.values()) and any(
    glob.glob(os.path.join(folder, '_ext*.so'))
    for folder in specs['mmcv'].submodule_search_locations)
here = os.path.realpath(sys.argv[1]) + os.sep
sys.exit(0 if ok and os.path.realpath(specs['mmepsa'].origin).startswith(here)
         else 1)
PYCHECK
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && installed >/dev/null 2>&1; then
    echo "[setup] $VENV is up to date"
    exit 0
fi

if [ ! -x "$PY" ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
        { echo "[setup] mmepsa's stack is pinned for Python 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
# pip byte-compiles what it installs on one core; byte_compile does the same
# for the whole environment on every core (compileall -j 0: same .pyc files,
# the up-to-date ones skipped, the few sources that do not parse ignored as
# pip ignores them), faster than pip's one core.
pip_install() { "$PY" -m pip install --disable-pip-version-check --no-compile "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }
byte_compile() { "$PY" -m compileall -q -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true; }
# pip's output is filtered above; this checks that each step really succeeded.
check() { "$PY" -c "$1" || { echo "[setup] failed: $2" >&2; exit 1; }; }

echo "[setup] torch pair and build tools ($STACK)"
pip_install -r "$STACK"
byte_compile
check 'import torch, torchvision' "the torch pair of $STACK"

echo "[setup] OpenMMLab stack, tests, optional, deploy and openvino extras"
pip_install -c "$STACK" -r requirements/runtime.txt -r requirements/tests.txt -r requirements/optional.txt -r requirements/deploy.txt -r requirements/openvino.txt -r requirements/mim.txt
pip_install --no-deps -r requirements/mim_nodeps.txt
byte_compile
# nncf is looked for, not imported: beside torch < 2.3 (the classic stack) it
# imports only as mmepsa.deployment.quantize does it.
check 'import importlib.util, mmengine, pycocotools, pytest, onnx, onnxruntime, openvino, mim; assert importlib.util.find_spec("nncf")' 'the OpenMMLab stack install'

# mmcv last: its wheel is installed without dependencies, which the step above
# brought (mmdet, mmpretrain and mmseg do not require mmcv in their metadata).
echo "[setup] mmcv with compiled ops"
bash tools/install_mmcv.sh "$PY"
check 'import mmcv.ops, mmdet.models, mmpretrain.models, mmseg.models' 'mmcv with ops under mmdet, mmpretrain and mmseg'

echo "[setup] mmepsa (editable)"
# setup.py develop rewrites mmepsa/.mim and mmepsa.egg-info in this checkout:
# one environment at a time (.ci/run sets up two at once), by a lock on setup.py.
(
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    pip_install --no-deps --no-build-isolation --no-use-pep517 -e .
) 9<"$ROOT/setup.py"
check 'import mmepsa; print("[setup] mmepsa", mmepsa.__version__, "ready")' 'pip install -e .'
echo "$want" > "$STAMP"
