# Sourced by scripts/dev and scripts/test: make .venv from requirements-dev.txt when it is
# missing or the requirements changed since it was made. Needs Python >= 3.11.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python >= 3.11 is required (python3.12 or python3.11 on PATH)" >&2
  return 1
}

stamp=".venv/.requirements-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  if [ ! -x .venv/bin/python ]; then
    python="$(pick_python)"
    echo "setup: creating .venv with $("$python" --version)" >&2
    "$python" -m venv .venv
  fi
  echo "setup: installing requirements-dev.txt into .venv (once; the agent SDK is ~400 MB)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  rm -f .venv/.requirements-*
  touch "$stamp"
fi
