#!/usr/bin/env bash
# The test suite as `make test` runs it: the type check and the unit tier run BESIDE
# the integration tier, not before it.
#
# Why: the integration tier spends most of its time waiting (a Ray cluster, Serve
# apps and model engines starting, processes being killed and restarted); on CI's two
# cores the CPU sat idle for most of a serial run. The unit tier never starts Ray and
# binds only ephemeral ports on 127.0.0.1, so the two tiers cannot disturb each other's
# state, only share the CPU. Each tier's output is printed whole (unit and type check
# after the integration tier ends), and the run fails if any part fails, including a
# tier that collected no tests (pytest's exit code 5). After the integration tier, the
# platform's gateway and isolation modules run again on PostgreSQL.
#
# Usage: tests/run_tiers.sh PYTHON TYPECHECK_CMD [pytest args...]
set -uo pipefail

py=$1
typecheck=$2
shift 2

logs=$(mktemp -d "${TMPDIR:-/tmp}/lumos-tiers.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -- "$pid" 2>/dev/null || true
    done
}
trap cleanup INT TERM

start=$(date +%s)
bash -c "$typecheck" >"$logs/typecheck.log" 2>&1 &
typecheck_pid=$!
pids+=("$typecheck_pid")
"$py" -m pytest -q -ra tests/unit "$@" >"$logs/unit.log" 2>&1 &
unit_pid=$!
pids+=("$unit_pid")

echo "== integration tier (the type check and the unit tier run beside it; their output follows)"
"$py" -m pytest -q -ra tests/integration "$@"
integration_rc=$?

# The platform's gateway and isolation tests once more with the store on a real
# PostgreSQL server (the tier above runs on SQLite; the store suite runs both).
postgres_rc=0
if [ "${LUMOS_TEST_NO_POSTGRES:-}" = "1" ]; then
    echo "== platform tests on PostgreSQL: skipped (LUMOS_TEST_NO_POSTGRES=1)"
else
    echo "== platform tests on PostgreSQL (gateway platform, tenant isolation)"
    "$py" -m pytest -q -ra --store-backend postgresql \
        tests/integration/test_gateway_platform.py tests/integration/test_tenant_isolation.py "$@"
    postgres_rc=$?
fi

wait "$typecheck_pid"
typecheck_rc=$?
wait "$unit_pid"
unit_rc=$?

echo
echo "== type check: $typecheck"
cat "$logs/typecheck.log"
echo
echo "== unit tier"
cat "$logs/unit.log"
echo
echo "== exit codes: type check $typecheck_rc, unit tier $unit_rc, integration tier $integration_rc," \
    "platform tests on PostgreSQL $postgres_rc" \
    "($(($(date +%s) - start)) s in all)"
rm -rf "$logs"
[ "$typecheck_rc" -eq 0 ] && [ "$unit_rc" -eq 0 ] && [ "$integration_rc" -eq 0 ] \
    && [ "$postgres_rc" -eq 0 ]
