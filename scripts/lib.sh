# shellcheck shell=bash
# Shared helpers for citypulse scripts. Source it; it defines variables and
# functions and exports nothing.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   "$CITYPULSE_ROOT/scripts/install-deps"
#   NATS_SERVER_BIN=$CITYPULSE_NATS_SERVER_BIN
#   PG_BINDIR=$(citypulse_pg_bindir)

# The one pinned nats-server release (>= 2.11 is required: pinned consumers).
NATS_SERVER_VERSION=2.12.8

# Python packages of the cross-client contract test (another NATS client, another CBOR library).
NATS_PY_VERSION=2.16.0
CBOR2_VERSION=6.3.0

CITYPULSE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CITYPULSE_TOOLS=$CITYPULSE_ROOT/.tools
CITYPULSE_NATS_SERVER_BIN=$CITYPULSE_TOOLS/bin/nats-server
CITYPULSE_PYTHONPATH=$CITYPULSE_TOOLS/python

# Prints the directory holding initdb, pg_ctl and postgres: PATH first, then the
# highest version under /usr/lib/postgresql. Returns 1 when there is none.
citypulse_pg_bindir() {
    local dir
    if dir=$(command -v initdb 2>/dev/null) && dir=$(dirname "$dir") \
        && [[ -x $dir/pg_ctl && -x $dir/postgres ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    while read -r dir; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    return 1
}
