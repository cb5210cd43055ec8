#!/usr/bin/env bash
# Which WSGI server serves the provider best on this machine (README, Production): Granian
# (WSGI interface, as `oidc-provider serve` runs it) against gunicorn sync and gthread
# workers, on discovery and a client_credentials token request, with wrk (Debian package)
# at concurrency 8 and 32, keep-alive. Prints requests/s, p50/p99 and requests per server
# CPU-second (utime+stime of the server's processes, from /proc).
# Needs PostgreSQL and Redis on loopback (as the tests); installs gunicorn into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
WORKERS=${WORKERS:-2} DURATION=${DURATION:-8s} PORT=${PORT:-8100}
PG=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
[ -x "$BIN/gunicorn" ] || "$BIN/pip" install --quiet gunicorn==27.0.1

HOME_DIR=$(mktemp -d) DB=wsgi_compare_$$
trap 'rm -rf "$HOME_DIR"; psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null' EXIT
psql "$PG" -qc "CREATE DATABASE $DB"
mkdir -p "$HOME_DIR/config"
cat > "$HOME_DIR/config/provider.yaml" <<YAML
issuer: http://127.0.0.1:$PORT
database_url: ${PG%/*}/$DB
dev_mode: false
store: {backend: redis, redis_url: "$REDIS", prefix: "wsgi-compare-$$:"}
YAML
export OIDC_PROVIDER_HOME=$HOME_DIR OIDC_PROVIDER_CONFIG=$HOME_DIR/config/provider.yaml
"$BIN/oidc-provider" keys generate >/dev/null
SECRET=$("$BIN/python" - <<'PY'
import json, os, secrets
from pathlib import Path
from oidc_provider.oauth.keys import MasterSecret
from oidc_provider.settings.clients import hash_client_secret
home = Path(os.environ["OIDC_PROVIDER_HOME"])
secret = secrets.token_urlsafe(32)
key = MasterSecret.load(home / "keys").derive("client-secret")
(home / "config/clients.yaml").write_text(json.dumps({"clients": [{"client_id": "backend",
    "client_secret_hash": hash_client_secret(secret, key), "grant_types": ["client_credentials"],
    "scopes": ["orders:read"]}]}))
print(secret)
PY
)
"$BIN/oidc-provider" db upgrade >/dev/null 2>&1
cat > "$HOME_DIR/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=orders:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'backend:%s' "$SECRET" | base64 -w0)"
LUA

cpu_ticks() {  # utime + stime of every process in the server's process group
  local total=0
  for pid in $(pgrep -g "$1"); do read -r -a f < "/proc/$pid/stat"; total=$((total + f[13] + f[14])); done
  echo $total
}

measure() {  # NAME COMMAND...
  local name=$1; shift
  export PROMETHEUS_MULTIPROC_DIR=$HOME_DIR/prom; rm -rf "$PROMETHEUS_MULTIPROC_DIR"; mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  setsid "$@" >"$HOME_DIR/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
  for endpoint in discovery token; do
    local args=("http://127.0.0.1:$PORT/.well-known/openid-configuration")
    [ $endpoint = token ] && args=(-s "$HOME_DIR/token.lua" "http://127.0.0.1:$PORT/oidc/token")
    wrk -t2 -c8 -d2s "${args[@]}" >/dev/null  # warm-up
    for connections in 8 32; do
      local before after out
      before=$(cpu_ticks $pid)
      out=$(wrk -t2 -c$connections -d$DURATION --latency "${args[@]}")
      after=$(cpu_ticks $pid)
      local requests=$(awk '/requests in/ {print $1}' <<<"$out")
      local errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' \n' ' ' || true)
      printf "%-26s %-9s c=%-3s %8s req/s  p50 %-9s p99 %-9s %6s req/CPU-s %s\n" "$name" $endpoint $connections \
        "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" \
        "$(awk '$1=="99%" {print $2}' <<<"$out")" "$(( requests * 100 / (after - before) ))" "$errors"
    done
  done
  kill -TERM -- -$pid; wait $pid 2>/dev/null || true
}

echo "$(nproc) CPUs, $WORKERS workers, $DURATION per cell, $(date -u +%Y-%m-%d)"
measure "granian-wsgi (serve)" "$BIN/oidc-provider" serve --port "$PORT" --workers "$WORKERS" --threads 4
measure "gunicorn-sync" "$BIN/gunicorn" -w "$WORKERS" -b "127.0.0.1:$PORT" "oidc_provider.serve:app_factory()"
measure "gunicorn-gthread-4" "$BIN/gunicorn" -w "$WORKERS" -k gthread --threads 4 -b "127.0.0.1:$PORT" \
  "oidc_provider.serve:app_factory()"
