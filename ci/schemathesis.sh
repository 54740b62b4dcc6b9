#!/usr/bin/env bash
# Holds the service to its OpenAPI document with Schemathesis: every documented operation,
# every check (`--checks all`), all phases (examples, coverage, fuzzing, stateful over the
# document's links), authenticated as the sandbox's admin so admin-only routes are exercised
# too. Exits non-zero on any failure.
#
# Starts the debug `wxbind` in sandbox mode (no WeChat credentials: WeChat is the built-in
# simulator on this machine, no WeChat host is ever called) on a free port with a throwaway
# database on the local PostgreSQL, logs in as `admin`, binds it to a sandbox WeChat user
# who follows the account (so messages can be queued and read back), then runs
# `schemathesis run` over openapi/openapi.json. The service and its database are removed
# however the run ends.
#
# Needs: PostgreSQL on 127.0.0.1:5432 where `postgres` may connect (TEST_DATABASE_URL for
# another server), psql, curl, Python 3 with venv. Schemathesis and every package it installs
# are pinned in ci/schemathesis-requirements.txt and installed into target/schemathesis-venv;
# ci/schemathesis.toml holds the two per-operation expectations (see there why).
#
# Knobs: SCHEMATHESIS_MAX_EXAMPLES (cases per operation and phase, default 100),
# SCHEMATHESIS_SEED (default fixed, so a red run replays; `random` for a new one),
# WXBIND_BIN (default target/debug/wxbind, built if missing). Arguments are passed on to
# `schemathesis run` (e.g. `--continue-on-failure`).
#
# Nothing is excluded. What keeps the run non-destructive and deterministic:
# - `DELETE /api/binding` unbinds the admin, after which no message can be queued for it
#   (409): it runs in a second pass of its own, after everything else.
# - `POST /api/logout` ends the cookie session only; the run authenticates with a bearer
#   token, which logout does not revoke, so testing it cannot log the run out.
# - `POST /api/login`: failed logins are counted per client address (10 a minute for one
#   username, 30 for all; fixed, no setting relaxes them) and every fuzzed login comes from
#   127.0.0.1, so most get `429 too_many_attempts`: documented, and the admin's token was
#   taken before the run. Relaxing it (e.g. `WXBIND_TRUSTED_PROXIES` and a forged
#   `X-Forwarded-For` per request) would only test more 401s.
# - The sandbox's own control routes (`/sandbox/...`) are not in the document, so they are
#   never called during the run (the set-up above uses two of them).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20261201}
BIN=${WXBIND_BIN:-$ROOT/target/debug/wxbind}
OUT=$ROOT/target/schemathesis
VENV=$ROOT/target/schemathesis-venv
REQUIREMENTS=$ROOT/ci/schemathesis-requirements.txt
ADMIN_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
# An obvious test value: the sandbox's demo accounts get it at start.
PASSWORD=schemathesis-demo-password

started=$(date +%s)
mkdir -p "$OUT"

# Schemathesis, exactly as pinned; the venv is rebuilt when the pins change.
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi
PY=$VENV/bin/python

[ -x "$BIN" ] || cargo build -p wxbind --locked
BIN=$(realpath "$BIN")

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
DB=wxbind_schemathesis_$("$PY" -c 'import secrets; print(secrets.token_hex(6))')
DATABASE_URL=$("$PY" -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$ADMIN_URL" "$DB")

PID=
RUN_DIR=$(mktemp -d)
cleanup() {
  if [ -n "$PID" ]; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# Sandbox mode only: no environment but what this run sets, from an empty directory outside
# the repository (wxbind reads a `.env` in its directory or above, and a developer's may hold
# real credentials), and WXBIND_SANDBOX=on, which refuses to start if credentials turn up.
(cd "$RUN_DIR" && exec env -i PATH="$PATH" \
  DATABASE_URL="$DATABASE_URL" \
  WXBIND_SANDBOX=on \
  WXBIND_LISTEN="127.0.0.1:$PORT" \
  WXBIND_PUBLIC_URL="$BASE" \
  WXBIND_DEMO_PASSWORD="$PASSWORD" \
  RUST_LOG=warn \
  "$BIN" serve) >"$OUT/wxbind.log" 2>&1 &
PID=$!

for _ in $(seq 1 100); do
  curl -fs "$BASE/api/ready" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || { echo "wxbind exited early:" >&2; cat "$OUT/wxbind.log" >&2; exit 1; }
  sleep 0.2
done
curl -fs "$BASE/api/ready" >/dev/null

json_field() { "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

TOKEN=$(curl -fs "$BASE/api/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" | json_field access_token)

# Bind the admin the way a phone does (bind link, consent in the simulator, callback), and
# have that WeChat user follow the account.
BIND_URL=$(curl -fs "$BASE/api/bind-url" -H "Authorization: Bearer $TOKEN" | json_field url)
CALLBACK=$(curl -fs -o /dev/null -w '%{redirect_url}' \
  "${BIND_URL%%#*}&sandbox_user=schemathesis&sandbox_decision=allow")
curl -fs -o /dev/null "$CALLBACK"
curl -fs -o /dev/null -X POST "$BASE/sandbox/api/users/schemathesis/follow"
[ "$(curl -fs "$BASE/api/me" -H "Authorization: Bearer $TOKEN" | json_field wechat_bound)" = True ]

seed_args=()
[ "$SEED" = random ] || seed_args=(--seed "$SEED")

# One pass of `schemathesis run`; $1 names its report and log, the rest selects operations.
pass() {
  local name=$1
  shift
  "$VENV/bin/schemathesis" --config-file "$ROOT/ci/schemathesis.toml" run "$ROOT/openapi/openapi.json" \
    --url "$BASE" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" \
    "${seed_args[@]}" \
    --workers 1 \
    --generation-database none \
    --request-timeout 10 \
    --no-color \
    --report junit --report-junit-path "$OUT/junit-$name.xml" \
    "$@" 2>&1 | tee "$OUT/$name.log"
  return "${PIPESTATUS[0]}"
}

echo "schemathesis: $BASE, up to $MAX_EXAMPLES examples per operation and phase, seed $SEED"
status=0
pass main --exclude-path /api/binding "$@" || status=$?
# One operation, so no links among them: no stateful phase.
pass unbind --include-path /api/binding --phases examples,coverage,fuzzing "$@" || status=$?

# One closing line for both passes, from their "N generated, N passed | N found …" lines.
"$PY" - "$OUT/main.log" "$OUT/unbind.log" "$status" "$(( $(date +%s) - started ))" <<'PY'
import re, sys
*logs, status, seconds = sys.argv[1:]
generated = failed = skipped = 0
for log in logs:
    for line in open(log, encoding="utf-8", errors="replace"):
        m = re.match(r"\s+(\d+) generated, (?:(\d+) passed|(\d+) found .*?)(?:, (\d+) skipped)?\s*$", line)
        if m:
            generated += int(m[1])
            failed += int(m[3] or 0)
            skipped += int(m[4] or 0)
if status != "0" and failed == 0:
    failed = 1  # an error without a failing case (the service died, a bad option, ...)
print(f"schemathesis: exit {status} after {seconds} s (logs and reports in target/schemathesis/)")
print(f"schemathesis: {generated - failed} passed, {failed} failed, {skipped} skipped")
PY
exit "$status"
