#!/usr/bin/env bash
# Builds the `omen` Python package (crates/omen-py: PyO3 + maturin) from source and
# installs it, with numpy and pytest, into a virtual environment (idempotent):
#
#   scripts/setup-python.sh                     # .venv-omen at the repository root
#   scripts/setup-python.sh --venv .venv-peers  # into another environment (setup-peers.sh does this)
#   PYTHON=python3.12 scripts/setup-python.sh
#
# The build reuses the workspace's target/ directory, so after `cargo build --release`
# it compiles only the extension crate. Exits non-zero, naming the step, on failure.
set -euo pipefail

MATURIN_VERSION="1.16.0"
NUMPY_VERSION="2.2.6"
PYTEST_VERSION="8.4.2"
H5PY_VERSION="3.16.0"   # the HDF5 CLI tests write ann-benchmarks files with h5py (binary wheel)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-omen"
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) venv="$(cd "$root" && realpath -m "$2")"; shift 2 ;;
        *) echo "setup-python: unknown argument $1" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python3}"

die() {
    echo "setup-python: error: $*" >&2
    exit 1
}

command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON=...)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: the package is built from source"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup-python: creating $venv"
    "$python" -m venv "$venv" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check)

# numpy is pinned only where none is installed yet (the peers' environment pins its own).
if ! "$py" -c "import numpy" >/dev/null 2>&1; then
    "${pip[@]}" "numpy==$NUMPY_VERSION" || die "installing numpy failed"
fi
"${pip[@]}" "maturin==$MATURIN_VERSION" || die "installing maturin failed"
# pytest likewise: the peers' environment pins its own.
if ! "$py" -c "import pytest" >/dev/null 2>&1; then
    "${pip[@]}" "pytest==$PYTEST_VERSION" || die "installing pytest failed"
fi
if ! "$py" -c "import h5py" >/dev/null 2>&1; then
    "${pip[@]}" --only-binary=:all: "h5py==$H5PY_VERSION" "numpy==$NUMPY_VERSION" || die "installing h5py failed"
fi

echo "setup-python: building and installing crates/omen-py into $venv"
# No build isolation: maturin comes from the environment, at the pinned version.
PATH="$venv/bin:$PATH" CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" \
    "${pip[@]}" --no-build-isolation --force-reinstall --no-deps "$root/crates/omen-py" \
    || die "building the omen package failed"

"$py" -c "import omen; print(f'omen {omen.__version__} (kernels: {omen.simd_isa()})')" \
    || die "the installed omen package does not import"
echo "setup-python: ready: $venv"
