#!/usr/bin/env bash
# A quick local load of GET /v1/lease beside its HTTP ceiling (/healthz) on one server: the
# embedded SQLite by default, or LINKLEASE_DATABASE_URL. Needs wrk (Debian: apt-get install wrk)
# and a release build (cargo build --release). Until the load harness of the performance work
# exists, this is how the figures in the closing notes were taken.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${LINKLEASE_BIN:-$here/../target/release/linklease}
dir=$(mktemp -d); cd "$dir"
$bin tenant create clinic --json >/dev/null
key=$($bin apikey create --tenant clinic --scopes grants:write --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
client=$($bin client create --tenant clinic --name p --allow-ip 127.0.0.1 --json | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["client_id"]+":"+d["client_secret"])')
LINKLEASE_LOG=warn $bin serve --bind 127.0.0.1:18080 --rate-limit 1000000 > serve.log 2>&1 &
pid=$!; trap 'kill $pid' EXIT; sleep 1
token=$(curl -s -X POST http://127.0.0.1:18080/v1/grants -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"payload": {"patient_id": "P-1042", "result": "negative"}}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
lease=$(curl -s -X POST http://127.0.0.1:18080/v1/exchange -u "$client" -H 'Content-Type: application/json' -d "{\"token\": \"$token\"}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["lease"]["lease_token"])')
curl -s -o /dev/null -w "GET /v1/lease -> %{http_code}\n" http://127.0.0.1:18080/v1/lease -H "Authorization: Bearer $lease"
echo "== ceiling: /healthz"; wrk -t2 -c64 -d10s --latency http://127.0.0.1:18080/healthz | grep -E "Requests/sec|50%|99%|Non-2xx"
echo "== GET /v1/lease"; wrk -t2 -c64 -d10s --latency -H "Authorization: Bearer $lease" http://127.0.0.1:18080/v1/lease | grep -E "Requests/sec|50%|99%|Non-2xx"
