#!/usr/bin/env bash
# PostgreSQL for the ticket service, as a private cluster owned by this checkout (not the
# system service): each checkout gets its own data directory and port, nothing runs as a
# root service, and the tests start their own throwaway clusters (tests/src/postgres.rs).
#
#   deploy/postgres.sh install        installs Debian's postgresql package if no initdb
#   deploy/postgres.sh start DIR PORT initdb DIR if new, start it on 127.0.0.1:PORT,
#                                     create database `tickets`, print its URL (stdout)
#   deploy/postgres.sh stop DIR       stops the cluster in DIR
#
# initdb and postgres refuse to run as root (CI runs as root on a fresh machine), so as
# root the server runs as the `postgres` system user (created by the Debian package) and
# DIR is chowned to it. Only stdout's one URL line is meant for callers; all else goes
# to stderr.
set -euo pipefail

usage() {
  echo "usage: $0 install | start DIR PORT | stop DIR" >&2
  exit 2
}

# The newest installed server's bin directory (Debian keeps each major version apart and
# does not put initdb or pg_ctl on PATH).
bin_dir() {
  local dir
  dir=$(for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then echo "$d"; fi
  done | sort -V | tail -n 1)
  if [ -z "$dir" ]; then
    echo "postgres: no /usr/lib/postgresql/*/bin/initdb; run: deploy/postgres.sh install" >&2
    exit 1
  fi
  echo "$dir"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a server-side command (initdb, pg_ctl) as the postgres user when we are root.
as_pg() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd_install() {
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
  fi
  echo "Installing PostgreSQL (apt-get install postgresql)..." >&2
  local sudo=()
  is_root || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >&2
  # The package may create a `main` cluster and try to start the system service; that
  # is harmless (it uses port 5432 and /var/run/postgresql) and nothing here uses it.
  "${sudo[@]}" apt-get install -y -q postgresql >&2
}

# Creates database `tickets` if missing and prints the URL (the only line on stdout).
ensure_db() {
  local bin=$1 port=$2
  local exists
  exists=$("$bin/psql" -X -h 127.0.0.1 -p "$port" -U postgres -d postgres -At \
    -c "select 1 from pg_database where datname = 'tickets'")
  if [ "$exists" != "1" ]; then
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tickets >&2
  fi
  echo "postgres://postgres@127.0.0.1:$port/tickets"
}

cmd_start() {
  [ $# -eq 2 ] || usage
  local dir=$1 port=$2 bin
  bin=$(bin_dir)

  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    echo "postgres: something already accepts connections on 127.0.0.1:$port; using it." >&2
    ensure_db "$bin" "$port"
    return
  fi

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if is_root; then
    if [ "$(stat -c %U "$dir")" != postgres ]; then
      chown -R postgres:postgres "$dir"
    fi
    # The server runs as postgres: it must reach DIR through every parent directory.
    if ! runuser -u postgres -- test -w "$dir"; then
      echo "postgres: the postgres user cannot reach $dir (a parent directory is closed to it, e.g. /root); use a DIR under /tmp or /var/lib" >&2
      exit 1
    fi
  fi

  if [ ! -f "$dir/PG_VERSION" ]; then
    echo "postgres: initializing a cluster in $dir" >&2
    # trust is fine: the server listens on 127.0.0.1 only and its unix socket is inside
    # DIR (mode 0700), so only this machine's local users can reach it. --no-locale: the
    # same byte-order collation as the tests' clusters, whatever the caller's LANG.
    as_pg "$bin/initdb" -D "$dir" -U postgres -E UTF8 --no-locale --auth=trust >&2
  fi

  # The socket goes inside DIR, never /var/run/postgresql, so a system cluster on the
  # same port number cannot clash with it.
  if ! as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k '$dir' -c listen_addresses=127.0.0.1" start >&2; then
    echo "postgres: the server did not start; the end of $dir/postgres.log:" >&2
    tail -n 30 "$dir/postgres.log" >&2 || true
    exit 1
  fi
  for _ in $(seq 1 100); do
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    echo "postgres: started but does not accept connections on 127.0.0.1:$port (log: $dir/postgres.log)" >&2
    exit 1
  fi
  echo "postgres: started (data and log: $dir)" >&2
  ensure_db "$bin" "$port"
}

cmd_stop() {
  [ $# -eq 1 ] || usage
  local dir=$1 bin
  bin=$(bin_dir)
  if [ ! -f "$dir/postmaster.pid" ]; then
    echo "postgres: no server runs in $dir" >&2
    return
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >&2
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  install) cmd_install "$@" ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  *) usage ;;
esac
