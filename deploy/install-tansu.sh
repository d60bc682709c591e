#!/usr/bin/env bash
# Installs tansu, the Kafka-compatible development broker, unless it is already there.
# Takes 10-20 minutes the first time (it is compiled from crates.io).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
if command -v tansu >/dev/null 2>&1; then
  exit 0
fi
echo "Installing tansu (cargo install --locked tansu --features dynostore,libsql)..." >&2
cargo install --locked tansu --features dynostore,libsql
