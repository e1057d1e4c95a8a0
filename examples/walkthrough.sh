#!/usr/bin/env bash
# The README's five-minute walk-through as one script. Start the broker first in the same
# directory (cargo run --release -- serve), then run: bash examples/walkthrough.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${LINKLEASE_URL:-http://127.0.0.1:8080}
linklease() { cargo run --quiet --release --manifest-path "$here/../Cargo.toml" -- "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

linklease tenant create "clinic-$RANDOM" --json > /tmp/ll-tenant.json
tenant=$(json '["name"]' < /tmp/ll-tenant.json)
key=$(linklease apikey create --tenant "$tenant" --scopes grants:write,grants:read --json | json '["key"]')
echo "tenant $tenant, API key created"

created=$(curl -sS -X POST "$url/v1/grants" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' --data @"$here/grant.json")
echo "created: $created"
id=$(echo "$created" | json '["id"]')

echo "state:";   curl -sS "$url/v1/grants/$id" -H "Authorization: Bearer $key"; echo
echo "by label:"; curl -sS "$url/v1/grants?label.case_id=c-77&status=active" -H "Authorization: Bearer $key"; echo
echo "revoke:";  curl -sS -X POST "$url/v1/grants/$id/revoke" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d '{"reason": "sent to the wrong patient"}'; echo
