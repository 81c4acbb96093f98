#!/bin/sh
# Entrypoint of the sidecar-postgres image: on the first start (empty
# $PGDATA) creates the cluster, the role $POSTGRES_USER and the databases in
# $POSTGRES_DATABASES; then runs the server in the foreground, listening on
# all of the container's addresses.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=sidecar}"
: "${POSTGRES_PASSWORD:=}"
: "${POSTGRES_DATABASES:=availability transfer}"

log() { echo "sidecar-postgres: $*" >&2; }

if [ "${1:-postgres}" != postgres ]; then
  exec "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "first start: creating the cluster in $PGDATA"
  if [ -n "$POSTGRES_PASSWORD" ]; then
    host_auth=scram-sha-256
  else
    host_auth=trust
    log "POSTGRES_PASSWORD is empty: connections from the network are trusted"
  fi
  initdb -D "$PGDATA" --username=postgres --encoding=UTF8 --no-locale \
    --auth-local=trust --auth-host="$host_auth" >/dev/null
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/var/run/postgresql'"
    echo "password_encryption = scram-sha-256"
  } >>"$PGDATA/postgresql.conf"
  {
    echo "host all all 0.0.0.0/0 $host_auth"
    echo "host all all ::/0 $host_auth"
  } >>"$PGDATA/pg_hba.conf"
  # Set up over the Unix socket only: TCP (and so the healthcheck) stays
  # closed until the databases exist.
  pg_ctl -D "$PGDATA" -w -t 60 -o "-c listen_addresses=''" start >/dev/null
  psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -U postgres -d postgres \
    -v user="$POSTGRES_USER" -v pass="$POSTGRES_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'user', :'pass') WHERE :'pass' <> '' \gexec
SQL
  for db in $(echo "$POSTGRES_DATABASES" | tr ',' ' '); do
    log "creating database $db owned by $POSTGRES_USER"
    createdb -h /var/run/postgresql -U postgres -O "$POSTGRES_USER" "$db"
  done
  pg_ctl -D "$PGDATA" -w -t 60 -m fast stop >/dev/null
  log "first-start setup done"
fi

exec postgres -D "$PGDATA"
