#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, database `test`, trust auth for local TCP) and Redis (127.0.0.1:6379)
# answer, installing and starting what is missing. Idempotent: services already up are left alone.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=${ADVAUDIT_REDIS_PORT:-6379}
WAIT_S=30

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for NAME COMMAND...: poll until COMMAND succeeds, at most WAIT_S seconds
    local name=$1 deadline=$((SECONDS + WAIT_S))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$name: not answering after ${WAIT_S}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
pg_trusted() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w -tAc "SELECT 1"; }

ensure_postgres() {
    local state="already running"
    if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
    fi
    if ! pg_ready; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
        state="started"
    fi
    wait_for postgresql pg_ready
    if ! pg_trusted >/dev/null 2>&1; then
        # A fresh install uses peer/scram auth; the tests connect as postgres over TCP without a password.
        local version hba
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        hba="/etc/postgresql/$version/main/pg_hba.conf"
        $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$hba"  # first matching line wins
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        wait_for "postgresql trust auth" pg_trusted
        state="$state, trust auth enabled"
    fi
    if [ "$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
        psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w -qc "CREATE DATABASE test"
        state="$state, database test created"
    fi
    echo "postgresql: ready on $PG_HOST:$PG_PORT ($state)"
}

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

ensure_redis() {
    local state="already running"
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    if ! redis_ready; then
        $SUDO mkdir -p /var/lib/redis /var/log/redis
        $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
        state="started"
    fi
    wait_for redis redis_ready
    echo "redis: ready on 127.0.0.1:$REDIS_PORT ($state)"
}

ensure_postgres
ensure_redis
