#!/usr/bin/env bash
# Run Synapse (from PyPI, in its own venv) as the benchmark's reference, in the foreground.
#
#   bench/run_synapse.sh [DATA_DIR] [PORT]     (defaults: /tmp/bench-synapse 8448)
#
# Installs matrix-synapse==$SYNAPSE_VERSION into $SYNAPSE_VENV (default /tmp/synapse-venv)
# if it is not there, generates its config for server name localhost:PORT in DATA_DIR the
# first time, then runs it with an override file: SQLite, one plain-HTTP client listener
# on 127.0.0.1:PORT, open registration without verification, bcrypt_rounds 4, presence
# on (PRESENCE=false turns it off, for both servers alike), no key servers, and every
# rate limit lifted.
# DATABASE=postgres uses a PostgreSQL database named bench_synapse (or $DB_NAME) on 127.0.0.1 (created
# if missing, C collation as Synapse requires) instead of SQLite.
# Never run by CI: it downloads Synapse and its dependencies.
set -euo pipefail
data="${1:-/tmp/bench-synapse}"
port="${2:-8448}"
venv="${SYNAPSE_VENV:-/tmp/synapse-venv}"
version="${SYNAPSE_VERSION:-1.163.2}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import synapse" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "matrix-synapse==$version"
fi
if [ "${DATABASE:-sqlite}" = postgres ] && ! "$venv/bin/python" -c "import psycopg2" 2>/dev/null; then
    "$venv/bin/pip" install -q "psycopg2-binary==2.9.13"
fi

cd "$data"
if [ ! -f "$data/homeserver.yaml" ]; then
    "$venv/bin/python" -m synapse.app.homeserver --server-name "localhost:$port" \
        --config-path "$data/homeserver.yaml" --data-directory "$data" \
        --generate-config --report-stats=no
fi

high='{per_second: 100000, burst_count: 100000}'
cat > "$data/bench-overrides.yaml" <<YAML
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
presence:
  enabled: ${PRESENCE:-true}
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
rc_message: $high
rc_registration: $high
rc_login: {address: $high, account: $high, failed_attempts: $high}
rc_joins: {local: $high, remote: $high}
rc_joins_per_room: $high
rc_room_creation: $high
rc_invites: {per_room: $high, per_user: $high, per_issuer: $high}
YAML
db_name="${DB_NAME:-bench_synapse}"
if [ "${DATABASE:-sqlite}" = postgres ]; then
    psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='$db_name'" \
        | grep -q 1 || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db_name \
        ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
    cat >> "$data/bench-overrides.yaml" <<YAML
database: {name: psycopg2, args: {host: 127.0.0.1, user: postgres, database: $db_name, cp_min: 5, cp_max: 10}}
YAML
else
    cat >> "$data/bench-overrides.yaml" <<YAML
database: {name: sqlite3, args: {database: $data/homeserver.db}}
YAML
fi

exec "$venv/bin/python" -m synapse.app.homeserver \
    -c "$data/homeserver.yaml" -c "$data/bench-overrides.yaml"
