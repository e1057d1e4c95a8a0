#!/usr/bin/env bash
# The README's five-minute walk-through as one script. Start the broker first in the same
# directory with codes written to a file:
#   cargo run --release -- serve --courier outbox:codes.jsonl
# then run: bash examples/walkthrough.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${LINKLEASE_URL:-http://127.0.0.1:8080}
outbox=${LINKLEASE_OUTBOX:-codes.jsonl}
linklease() { cargo run --quiet --release --manifest-path "$here/../Cargo.toml" -- "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
post() { curl -sS -X POST "$url$1" -H 'Content-Type: application/json' "${@:2}"; }

linklease tenant create "clinic-$RANDOM" --json > /tmp/ll-tenant.json
tenant=$(json '["name"]' < /tmp/ll-tenant.json)
key=$(linklease apikey create --tenant "$tenant" --scopes grants:write,grants:read,submissions:read --json | json '["key"]')
linklease client create --tenant "$tenant" --name portal --allow-ip 127.0.0.1 --json > /tmp/ll-client.json
client="$(json '["client_id"]' < /tmp/ll-client.json):$(json '["client_secret"]' < /tmp/ll-client.json)"
echo "tenant $tenant: API key and partner client created"

created=$(post /v1/grants -H "Authorization: Bearer $key" --data @"$here/grant.json")
echo "created: $created"
id=$(echo "$created" | json '["id"]')
token=$(echo "$created" | json '["token"]')

started=$(post /v1/exchange -u "$client" -d "{\"token\": \"$token\", \"factor\": \"1984-03-02\"}")
echo "exchange: $started"
flow=$(echo "$started" | json '["flow_id"]')
code=$(tail -1 "$outbox" | json '["code"]')
lease=$(post "/v1/exchange/$flow/otp" -u "$client" -d "{\"code\": \"$code\"}" | json '["lease_token"]')
echo "lease issued"

echo "read:";   curl -sS "$url/v1/lease" -H "Authorization: Bearer $lease"; echo
echo "submit:"; post /v1/lease/submissions -H "Authorization: Bearer $lease" \
  -d '{"fields": {"result_ack": true}, "creates": [{"name": "Ana", "phone": "+15550100"}]}'; echo
echo "submissions:"; curl -sS "$url/v1/grants/$id/submissions" -H "Authorization: Bearer $key"; echo
echo "state:";  curl -sS "$url/v1/grants/$id" -H "Authorization: Bearer $key"; echo

second=$(post /v1/grants -H "Authorization: Bearer $key" --data @"$here/grant.json" | json '["id"]')
echo "revoke:"; post "/v1/grants/$second/revoke" -H "Authorization: Bearer $key" \
  -d '{"reason": "sent to the wrong patient"}'; echo
