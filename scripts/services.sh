#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 and that CKAN's role and
# databases exist. Starts what is stopped, installs (Debian packages) what is
# missing. Safe to re-run.
set -euo pipefail

DB_ROLE=ckan_default
DB_PASSWORD=pass
DATABASES=${SERVICES_DATABASES:-ckan_test ckan_demo}
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}

log() { echo "services: $*"; }

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null
}

wait_for() {  # wait_for NAME COMMAND...
    local name=$1; shift
    local i
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        if "$@" >/dev/null 2>&1; then
            log "$name is up"
            return 0
        fi
        sleep 0.5
    done
    log "$name did not come up within ${WAIT_SECONDS}s" >&2
    return 1
}

# --- PostgreSQL --------------------------------------------------------------
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

if ! command -v pg_ctlcluster >/dev/null || ! command -v pg_isready >/dev/null \
        || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
fi

if ! postgres_up; then
    # pg_lsclusters: Ver Cluster Port Status Owner Data-directory Log-file
    cluster=$(pg_lsclusters -h | awk '$3 == 5432 {print $1, $2; exit}')
    if [ -z "$cluster" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        log "creating PostgreSQL cluster $version/main"
        pg_createcluster "$version" main --port 5432
        cluster="$version main"
    fi
    log "starting PostgreSQL cluster ${cluster/ //}"
    # shellcheck disable=SC2086
    pg_ctlcluster --skip-systemctl-redirect $cluster start || true
fi
wait_for PostgreSQL postgres_up

# As the postgres superuser: over the socket with peer auth when we are root
# (works on a fresh Debian install), else over TCP (trust auth on dev machines).
psql_admin() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 "$@")
    else
        psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"
    fi
}

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_ROLE'")" != 1 ]; then
    log "creating role $DB_ROLE"
    psql_admin -c "CREATE ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
fi
for db in $DATABASES; do
    if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        log "creating database $db"
        psql_admin -c "CREATE DATABASE $db OWNER $DB_ROLE ENCODING 'UTF8' TEMPLATE template0"
    fi
done

# --- Redis -------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
fi
if ! redis_up; then
    log "starting Redis"
    # in-memory only: the tests and the demo need no persistence
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
        --save "" --appendonly no --dir "${TMPDIR:-/tmp}" >/dev/null
fi
wait_for Redis redis_up
