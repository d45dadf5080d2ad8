#!/usr/bin/env bash
# Install tinyconv the way a user does (a built wheel, not the editable src/ tree) and run it from
# a folder outside the repository: the package data (MCU budget profiles, config recipes) must
# come from the wheel. Called by .ci/run after the tests; needs .venv (scripts/setup.sh).
#
# The wheel goes into a fresh venv with --no-deps; its dependencies (torch, LiteRT, ...) are taken
# from .venv through PYTHONPATH, so nothing is downloaded. PYTHONPATH does not process .pth files,
# so .venv's editable link to src/ is not on the path: the check below proves which copy ran.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tinyconv-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "check_wheel: building the wheel"
.venv/bin/python -m pip wheel -q --no-deps -w "$WORK/dist" . >/dev/null
WHEEL="$(ls "$WORK"/dist/tinyconv-*.whl)"
.venv/bin/python -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WHEEL"

DEPS="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export PYTHONPATH="$DEPS"
PY="$WORK/venv/bin/python"
TINYCONV="$WORK/venv/bin/tinyconv"
mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"  # not the repository: no configs/, no src/ on the path

echo "check_wheel: imports come from the wheel"
"$PY" - "$WORK/venv" <<'EOF'
import sys
from pathlib import Path

import tinyconv
from tinyconv.firmware_sim.budgets import list_budgets
from tinyconv.recipes import list_recipes

where = Path(tinyconv.__file__).resolve()
print(f"  tinyconv {tinyconv.__version__} from {where}")
if not where.is_relative_to(Path(sys.argv[1]).resolve()):
    sys.exit(f"check_wheel: tinyconv was imported from {where}, not from the wheel's venv")
if "esp32s3" not in list_budgets() or "quickstart" not in list_recipes():
    sys.exit(f"check_wheel: package data missing from the wheel: budgets {list_budgets()}, recipes {list_recipes()}")
print(f"  budgets: {', '.join(list_budgets())}; recipes: {', '.join(list_recipes())}")
EOF

echo "check_wheel: tinyconv simulate --budget esp32s3 from $(pwd)"
MODEL="$REPO/../shared/reference_models/mww_v2_hey_jarvis.tflite"
if [ -f "$MODEL" ]; then
  MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
else  # no shared reference models on this machine: a tiny INT8 model written by the package itself
  MODEL="$WORK/tiny.tflite"
  "$PY" -c "import sys; from pathlib import Path; from tinyconv.firmware_sim.synthetic import build_tiny_model; Path(sys.argv[1]).write_bytes(build_tiny_model())" "$MODEL"
fi
"$TINYCONV" simulate "$MODEL" --budget esp32s3 --repeats 3 --out "$WORK/sim" >"$WORK/simulate.txt"
grep -q "esp32s3" "$WORK/simulate.txt" || { cat "$WORK/simulate.txt"; echo "check_wheel: no esp32s3 row"; exit 1; }
grep -E "^\| esp32s3|^Overall" "$WORK/simulate.txt" | sed 's/^/  /'

echo "check_wheel: tinyconv quickstart --print-config uses the packaged recipe"
"$TINYCONV" quickstart --print-config >"$WORK/quickstart.yaml"
"$PY" - "$WORK/quickstart.yaml" "$REPO/src/tinyconv/recipes/quickstart.yaml" <<'EOF'
import sys

import yaml

printed, recipe = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
wrong = [f"{section}.{key}: {printed[section][key]!r} != recipe {value!r}"
         for section, values in recipe.items() for key, value in values.items() if printed[section][key] != value]
if wrong:
    sys.exit("check_wheel: quickstart did not use its recipe: " + "; ".join(wrong))
print(f"  {sum(len(v) for v in recipe.values())} recipe values resolved (model {printed['model']['name']}, width "
      f"{printed['model']['width_multiplier']}, {printed['train']['epochs']} epochs)")
EOF
"$TINYCONV" recipes >"$WORK/recipes.txt"
grep -q "^quickstart" "$WORK/recipes.txt" || { cat "$WORK/recipes.txt"; echo "check_wheel: tinyconv recipes does not list quickstart"; exit 1; }
echo "check_wheel: ok"
