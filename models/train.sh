#!/usr/bin/env bash
# Trains the detect task's ONNX models: sets up models/.venv (Python 3.11, the pinned
# models/requirements.txt), then runs models/train.py with any arguments given, e.g.
#
#   models/train.sh                                   # data/lab -> models/
#   models/train.sh --data data/lab/run1 --heldout nmap-version,benign-dns --out /tmp/m
#
# Idempotent: the virtualenv is created once and reinstalled only when requirements.txt
# changes. Runs from the repository root, so relative paths are relative to it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
venv=models/.venv

say() { echo "train.sh: $*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ ! -x "$venv/bin/python" ]]; then
    python=$(find_python) || { say "needs Python 3.11 (Debian 12's python3); set PYTHON=..."; exit 1; }
    say "creating $venv with $python"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
            say "installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
            "$python" -m venv "$venv"
        else
            say "python3 -m venv failed: install Debian's python3-venv"
            exit 1
        fi
    fi
fi

stamp="$venv/.requirements.sha256"
want=$(sha256sum models/requirements.txt | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "installing models/requirements.txt into $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r models/requirements.txt
    echo "$want" > "$stamp"
fi

# A fixed hash seed as well, although train.py orders everything explicitly.
export PYTHONHASHSEED=0
exec "$venv/bin/python" models/train.py "$@"
