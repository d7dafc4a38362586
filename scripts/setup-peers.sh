#!/usr/bin/env bash
# Creates (idempotently) the Python environment `.venv-peers` at the repository root
# with the peer libraries the benchmark harness runs side by side with Omen:
# FAISS (faiss-cpu), hnswlib and USearch, and the frontier peers ScaNN (scann), glass
# (pyglass-portable), SymphonyQG (rabitqlib) and Intel SVS (scalable-vs), at the
# versions ANCHORS.md was measured with, plus pytest for bench-suite/peers/test_peers.py.
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
SCANN_VERSION="1.4.2"          # needs numpy~=2.0 and protobuf; tensorflow only with its [tf] extra (not installed)
PROTOBUF_VERSION="5.29.6"       # scann's generated *_pb2 files are protobuf 5.28.3 gencode: same major, not older
PYGLASS_VERSION="2.1.0"        # pyglass-portable: the module `glass`
RABITQLIB_VERSION="0.7.1"      # SymphonyQG (SymqgIndex); needs CPython >= 3.11
SCALABLE_VS_VERSION="0.5.0"    # Intel SVS: the module `svs`; pulls in archspec and toml
PYTEST_VERSION="8.3.5"

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

# The frontier peers: binary wheels only, with numpy pinned on the same command line
# so that no dependency moves it off $NUMPY_VERSION (all four accept numpy 2.2).
# Never install `hnswlib-fast-ip`: it installs as the module `hnswlib` and replaces it.
"${pip[@]}" --only-binary=:all: "numpy==$NUMPY_VERSION" "protobuf==$PROTOBUF_VERSION" \
    "scann==$SCANN_VERSION" "pyglass-portable==$PYGLASS_VERSION" \
    "rabitqlib==$RABITQLIB_VERSION" "scalable-vs==$SCALABLE_VS_VERSION" \
    || die "installing the frontier peers (scann, pyglass-portable, rabitqlib, scalable-vs) failed"

"${pip[@]}" "pytest==$PYTEST_VERSION" || die "installing pytest==$PYTEST_VERSION failed"

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
import scann, glass, rabitqlib, svs, pytest  # noqa: F401
for name in ("faiss-cpu", "hnswlib", "usearch", "numpy", "scann", "protobuf",
             "pyglass-portable", "rabitqlib", "scalable-vs", "pytest"):
    print(f"{name} {m.version(name)}")
print(f"faiss compile options: {faiss.get_compile_options()}")
crept = {d.metadata["Name"].lower() for d in m.distributions()} & {
    "tensorflow", "tensorflow-cpu", "hnswlib-fast-ip"}
assert not crept, f"{sorted(crept)} must not be installed"
EOF
# Omen itself runs through the same adapter (the `python` path): its package, built
# from source (crates/omen-py), goes into this environment too.
bash "$root/scripts/setup-python.sh" --venv "$venv" || die "building the omen Python package failed"
"$py" "$root/bench-suite/peers/omen_peers.py" --list-available \
    | "$py" -c 'import json, sys; bad = {k: v["error"] for k, v in json.load(sys.stdin).items() if not v["available"]}; sys.exit(f"unavailable: {bad}" if bad else 0)' \
    || die "omen_peers.py --list-available reports a peer unavailable"
echo "setup-peers: $(du -sh "$venv" | cut -f1) in $venv"
echo "setup-peers: ready: $venv"
