#!/usr/bin/env bash
# Creates (idempotently) the Python environment `.venv-peers` at the repository root
# with the peer libraries the benchmark harness runs side by side with Omen:
# FAISS (faiss-cpu), hnswlib and USearch, at the versions ANCHORS.md was measured with.
#
#   scripts/setup-peers.sh            # create or complete the environment
#   PYTHON=python3.12 scripts/setup-peers.sh
#
# Exits non-zero, naming the step, if anything fails. Safe to run again: a step
# whose package is already at the pinned version is skipped by pip.
set -euo pipefail

FAISS_VERSION="1.15.1"
HNSWLIB_VERSION="0.8.0"
USEARCH_VERSION="2.26.6"
NUMPY_VERSION="2.2.6"
PYBIND11_VERSION="2.13.6"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-peers"
python="${PYTHON:-python3}"

die() {
    echo "setup-peers: error: $*" >&2
    exit 1
}

command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON=...)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup-peers: creating $venv"
    "$python" -m venv "$venv" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
fi
py="$venv/bin/python"
pip=("$py" -m pip install --quiet --disable-pip-version-check)

# Build-time requirements of hnswlib's source distribution go in first, so it can be
# built without build isolation against exactly these.
"${pip[@]}" "numpy==$NUMPY_VERSION" "pybind11==$PYBIND11_VERSION" setuptools wheel \
    || die "installing numpy/pybind11/setuptools failed"

if ! "${pip[@]}" "faiss-cpu==$FAISS_VERSION"; then
    echo "setup-peers: warning: faiss-cpu==$FAISS_VERSION is not available; installing the newest faiss-cpu" >&2
    "${pip[@]}" faiss-cpu || die "installing faiss-cpu failed"
fi

"${pip[@]}" "usearch==$USEARCH_VERSION" || die "installing usearch==$USEARCH_VERSION failed"

# hnswlib 0.8.0 ships no wheel for recent CPython: it is compiled here from its sdist
# (needs a C++ compiler). Skip when the pinned version already imports.
if ! "$py" -c "import hnswlib, importlib.metadata as m; assert m.version('hnswlib') == '$HNSWLIB_VERSION'" >/dev/null 2>&1; then
    command -v "${CXX:-g++}" >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
        || die "hnswlib $HNSWLIB_VERSION is built from source and needs a C++ compiler (apt-get install g++)"
    echo "setup-peers: building hnswlib $HNSWLIB_VERSION from source (a minute or two)"
    "${pip[@]}" --no-build-isolation "hnswlib==$HNSWLIB_VERSION" \
        || die "building hnswlib==$HNSWLIB_VERSION failed"
fi

"$py" - <<'EOF' || die "the installed peers do not import"
import importlib.metadata as m
import faiss, hnswlib, usearch, numpy  # noqa: F401  (import check)
for name in ("faiss-cpu", "hnswlib", "usearch", "numpy"):
    print(f"{name} {m.version(name)}")
print(f"faiss compile options: {faiss.get_compile_options()}")
EOF
echo "setup-peers: ready: $venv"
