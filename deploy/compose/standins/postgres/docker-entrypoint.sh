#!/bin/bash
# The official postgres entry point's contract, in short: initialise an empty data folder with the
# POSTGRES_* settings, then run the server as the postgres user.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is empty}"
  user="${POSTGRES_USER:-postgres}"
  # UTF-8, as the official image: a minimal root file system has no locale, and initdb would pick
  # SQL_ASCII, whose server version string psycopg 3 returns as bytes (SQLAlchemy then fails).
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --auth-host=scram-sha-256 \
         --auth-local=trust --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  if [ "${POSTGRES_DB:-$user}" != "postgres" ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    createdb --username="$user" "${POSTGRES_DB:-$user}"
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec "$@"
