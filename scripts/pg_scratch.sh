#!/usr/bin/env bash
# pg_scratch.sh - a throwaway PostgreSQL server for the usage-log tests.
#   scripts/pg_scratch.sh start DIR [PORT]   initdb + start in DIR (socket in DIR/sock, no TCP),
#                                            create database "hearth", print the libpq URL
#   scripts/pg_scratch.sh stop DIR           stop it and remove DIR
# As root the server runs as the "postgres" user (initdb refuses root).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data folder}
port=${3:-55432}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "pg_scratch: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  as_pg mkdir -p "$dir/data" "$dir/sock"
  as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
    -o "-k $dir/sock -p $port -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null ||
    { cat "$dir/data/server.log" >&2; exit 1; }
  as_pg "$bin/psql" -h "$dir/sock" -p "$port" -U postgres -d postgres -qAt -c 'CREATE DATABASE hearth' >/dev/null
  echo "postgresql:///hearth?host=$dir/sock&port=$port&user=postgres"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop DIR [PORT]" >&2
  exit 2
  ;;
esac
