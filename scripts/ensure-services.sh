#!/usr/bin/env bash
# Start PostgreSQL and Redis on loopback if they are not answering. Under CI=true a
# service that cannot be started is an error; locally the tests skip with a reason.
set -u
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
fi
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
    for _ in $(seq 1 20); do redis_up && break; sleep 0.25; done
fi
# Real-client tests (tests/e2e): Node.js with npm (the machine's) and Debian's Chromium
# (not on a new machine): installed here when missing; under CI=true those tests fail
# without them.
missing=""
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing$missing"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $missing; } >/dev/null 2>&1 || echo "Could not install$missing"
fi

status=0
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432"; status=1; }
redis_up || { echo "Redis is not reachable on 127.0.0.1:6379"; status=1; }
if [ "$status" -ne 0 ] && [ "${CI:-}" = "true" ]; then
    exit 1
fi
exit 0
