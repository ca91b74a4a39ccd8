#!/bin/sh
# One-shot: wait for Kafka Connect, then create or update the Debezium connector from
# deploy/debezium-connector.json. PUT /connectors/<name>/config is idempotent, so a
# re-run after a config change updates the running connector instead of failing.
set -eu
CONNECT_URL="${CONNECT_URL:-http://kafka-connect:8083}"
CONFIG="${CONNECTOR_CONFIG:-/deploy/debezium-connector.json}"
: "${DEBEZIUM_PASSWORD:?DEBEZIUM_PASSWORD must be set}"

tries=0
until curl -fsS "$CONNECT_URL/connector-plugins" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 90 ]; then echo "kafka connect not reachable at $CONNECT_URL" >&2; exit 1; fi
  sleep 2
done

name=$(sed -n 's/^  "name": "\(.*\)",$/\1/p' "$CONFIG")
# The "config" object alone, with the password put in from the environment (never committed).
body=$(sed -e '1,/"config": {/d' -e '$d' "$CONFIG" | sed '$d' \
  | sed "s|\${DEBEZIUM_PASSWORD}|$DEBEZIUM_PASSWORD|")
printf '{%s}\n' "$body" > /tmp/connector-config.json

curl -fsS -X PUT -H 'Content-Type: application/json' \
  --data @/tmp/connector-config.json "$CONNECT_URL/connectors/$name/config" >/dev/null
echo "connector $name registered"

tries=0
until curl -fsS "$CONNECT_URL/connectors/$name/status" | grep -q '"state":"RUNNING"'; do
  tries=$((tries + 1))
  if [ "$tries" -gt 60 ]; then
    echo "connector $name not running" >&2
    curl -fsS "$CONNECT_URL/connectors/$name/status" >&2 || true
    exit 1
  fi
  sleep 2
done
echo "connector $name running"
