# Sourced by .ci/run (bash, `set -euo pipefail`, as root): start a throwaway PostgreSQL for the catalog tests.
#
# Installs Debian's server when no server binaries are present, initialises a cluster in a fresh temporary
# directory, starts it as the `postgres` user on a private port and a unix socket in /tmp, creates the test
# database, exports DEEPMIA_TEST_POSTGRES_URL for the tests only, and stops the server when the shell exits
# (appended to any EXIT trap already set). Sourcing it twice starts a second, independent server.

_deepmia_pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

if [ -z "$(_deepmia_pg_bin)" ] || [ ! -x "$(_deepmia_pg_bin)/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Debian's package also creates and starts a default cluster on 5432; we use our own and leave it alone.
    apt-get install -y -q --no-install-recommends postgresql
fi
_DEEPMIA_PG_BIN="$(_deepmia_pg_bin)"
id -u postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres

# First free port from 55432 (a second sourcing, or a stale server, must not collide).
DEEPMIA_PG_PORT=55432
while (exec 3<>"/dev/tcp/127.0.0.1/${DEEPMIA_PG_PORT}") 2>/dev/null; do
    DEEPMIA_PG_PORT=$((DEEPMIA_PG_PORT + 1))
done
DEEPMIA_PG_DIR="$(mktemp -d /tmp/deepmia-pg.XXXXXX)"
mkdir -p "${DEEPMIA_PG_DIR}/data" "${DEEPMIA_PG_DIR}/socket"
chown -R postgres:postgres "${DEEPMIA_PG_DIR}"
chmod 700 "${DEEPMIA_PG_DIR}"

runuser -u postgres -- "${_DEEPMIA_PG_BIN}/initdb" -D "${DEEPMIA_PG_DIR}/data" -U postgres \
    --auth=trust --encoding=UTF8 --no-sync >"${DEEPMIA_PG_DIR}/initdb.log"
runuser -u postgres -- "${_DEEPMIA_PG_BIN}/pg_ctl" -D "${DEEPMIA_PG_DIR}/data" -l "${DEEPMIA_PG_DIR}/server.log" -w \
    -o "-p ${DEEPMIA_PG_PORT} -k ${DEEPMIA_PG_DIR}/socket -c listen_addresses=127.0.0.1 -c fsync=off" start

_deepmia_pg_stop_cmd="runuser -u postgres -- ${_DEEPMIA_PG_BIN}/pg_ctl -D ${DEEPMIA_PG_DIR}/data -m fast -w stop \
>/dev/null 2>&1 || true; rm -rf ${DEEPMIA_PG_DIR}"
# Append to the existing EXIT trap instead of replacing it.
_deepmia_pg_old_trap=""
eval "_deepmia_pg_old_trap=$(trap -p EXIT | sed -E 's/^trap -- //; s/ EXIT$//')"
if [ -n "${_deepmia_pg_old_trap}" ]; then
    trap -- "${_deepmia_pg_old_trap}; ${_deepmia_pg_stop_cmd}" EXIT
else
    trap -- "${_deepmia_pg_stop_cmd}" EXIT
fi

runuser -u postgres -- "${_DEEPMIA_PG_BIN}/createdb" -h "${DEEPMIA_PG_DIR}/socket" -p "${DEEPMIA_PG_PORT}" deepmia_test
export DEEPMIA_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:${DEEPMIA_PG_PORT}/deepmia_test"
echo "postgres: ${DEEPMIA_TEST_POSTGRES_URL} (data in ${DEEPMIA_PG_DIR})"
unset -f _deepmia_pg_bin
