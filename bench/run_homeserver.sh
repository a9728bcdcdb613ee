#!/usr/bin/env bash
# Run this project's homeserver for benchmarking, in the foreground.
#
#   bench/run_homeserver.sh [DATA_DIR] [PORT]     (defaults: /tmp/bench-homeserver 8008)
#
# Generates a config in DATA_DIR with `homeserver --generate-config` (SQLite, open
# registration) the first time, then runs it with an override file that lifts the rate
# limits and lowers bcrypt_rounds so that registering hundreds of users is quick.
# DATABASE=postgres uses a PostgreSQL database named bench_homeserver (or $DB_NAME) on 127.0.0.1
# (created if missing) instead of SQLite.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-/tmp/bench-homeserver}"
port="${2:-8008}"
bin="$here/.venv/bin"
mkdir -p "$data"
data="$(cd "$data" && pwd)"

if [ ! -f "$data/homeserver.yaml" ]; then
    "$bin/homeserver" --generate-config -H "localhost:$port" -c "$data/homeserver.yaml" \
        --data-directory "$data" --enable-registration --listen-port "$port" --report-stats=no
fi

high='{per_second: 100000, burst_count: 100000}'
cat > "$data/bench-overrides.yaml" <<YAML
bcrypt_rounds: 4
presence: {enabled: ${PRESENCE:-true}}
rc_message: $high
rc_registration: $high
rc_login: {address: $high, account: $high, failed_attempts: $high}
YAML
db_name="${DB_NAME:-bench_homeserver}"
if [ "${DATABASE:-sqlite}" = postgres ]; then
    psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='$db_name'" \
        | grep -q 1 || psql -h 127.0.0.1 -U postgres -c \
        "CREATE DATABASE $db_name ENCODING 'UTF8' TEMPLATE template0"
    cat >> "$data/bench-overrides.yaml" <<YAML
database: {name: psycopg2, args: {host: 127.0.0.1, user: postgres, database: $db_name, cp_min: 5, cp_max: 10}}
YAML
fi

cd "$data"
exec "$bin/homeserver" -c "$data/homeserver.yaml" -c "$data/bench-overrides.yaml"
