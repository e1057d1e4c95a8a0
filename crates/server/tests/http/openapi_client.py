"""A partner's journey through the client openapi-python-client generated from /openapi.json.

Run by openapi_client.rs against a real server, with the generated package `linklease_client`
on PYTHONPATH: exchange a link and its factor (Basic auth with the client's id and secret),
fail the code once, read the code the server's courier wrote to the outbox, get the lease,
read it (Bearer lease token) and submit to it. Asserts statuses and key fields; exits non-zero
on the first failure.
"""

import argparse
import json
import sys
from uuid import UUID

from linklease_client import AuthenticatedClient, Client
from linklease_client.api.exchange import check_otp, start_exchange
from linklease_client.api.lease import get_lease, submit
from linklease_client.models import (
    ExchangeRequest,
    ExchangeStarted,
    GrantStatus,
    LeaseToken,
    LeaseView,
    OtpRequest,
    Problem,
    Scope,
    SubmissionAccepted,
    SubmissionRequest,
    SubmissionRequestCreatesItem,
    SubmissionRequestFields,
)


def check(condition, what, response=None):
    """Stops the journey with `what` (and the answer) unless `condition` holds."""
    if not condition:
        body = response.content.decode(errors="replace") if response is not None else ""
        sys.exit(f"FAILED: {what} {body}")
    print(f"ok: {what}")


def last_code(outbox):
    """The code of the last line the outbox courier wrote (spec §5 JSON lines)."""
    with open(outbox, encoding="utf-8") as lines:
        sent = [json.loads(line) for line in lines if line.strip()]
    check(len(sent) == 1, "one code was sent")
    return sent[-1]["code"]


def main():
    args = argparse.ArgumentParser(description=__doc__)
    for name in ("base-url", "outbox", "client-id", "client-secret", "token", "factor", "grant-id"):
        args.add_argument(f"--{name}", required=True)
    args = args.parse_args()

    partner = Client(
        base_url=args.base_url,
        raise_on_unexpected_status=True,
        httpx_args={"auth": (args.client_id, args.client_secret)},
    )
    started = start_exchange.sync_detailed(
        client=partner, body=ExchangeRequest(token=args.token, factor=args.factor)
    )
    check(started.status_code == 201, "POST /v1/exchange is 201", started)
    check(isinstance(started.parsed, ExchangeStarted), "it parses as ExchangeStarted", started)
    check(started.parsed.next_ == "otp", "a code is next")
    check(started.parsed.otp_sent_to == "p***@example.org", "the destination is masked")
    flow_id = started.parsed.flow_id
    check(isinstance(flow_id, UUID), "flow_id is a UUID")

    code = last_code(args.outbox)
    wrong = "000000" if code != "000000" else "111111"
    refused = check_otp.sync_detailed(flow_id, client=partner, body=OtpRequest(code=wrong))
    check(refused.status_code == 401, "a wrong code is 401", refused)
    check(refused.headers["content-type"] == "application/problem+json", "as problem+json")
    check(isinstance(refused.parsed, Problem), "it parses as Problem", refused)
    check(refused.parsed.code == "otp_mismatch", "its code is otp_mismatch", refused)
    check(refused.parsed.attempts_left == 4, "with four tries left", refused)

    leased = check_otp.sync_detailed(flow_id, client=partner, body=OtpRequest(code=code))
    check(leased.status_code == 201, "POST /v1/exchange/{flow_id}/otp is 201", leased)
    check(isinstance(leased.parsed, LeaseToken), "it parses as LeaseToken", leased)
    check(leased.parsed.token_type == "Bearer", "the token is a Bearer token")
    check(leased.parsed.scopes == [Scope.READ, Scope.WRITE], "it may read and write")

    holder = AuthenticatedClient(
        base_url=args.base_url, token=leased.parsed.lease_token, raise_on_unexpected_status=True
    )
    read = get_lease.sync_detailed(client=holder)
    check(read.status_code == 200, "GET /v1/lease is 200", read)
    check(isinstance(read.parsed, LeaseView), "it parses as LeaseView", read)
    check(read.parsed.grant_id == UUID(args.grant_id), "it is the grant's lease")
    check(read.parsed.payload.to_dict()["result"] == "negative", "the payload is readable")
    check("result_ack" in read.parsed.permissions.write_fields.to_dict(), "result_ack is writable")

    body = SubmissionRequest(
        fields=SubmissionRequestFields.from_dict({"result_ack": True, "note": "seen"}),
        creates=[SubmissionRequestCreatesItem.from_dict({"name": "Ana"})],
        idempotency_key="journey-1",
    )
    submitted = submit.sync_detailed(client=holder, body=body)
    check(submitted.status_code == 201, "POST /v1/lease/submissions is 201", submitted)
    check(isinstance(submitted.parsed, SubmissionAccepted), "it parses as SubmissionAccepted")
    check(submitted.parsed.grant_status == GrantStatus.USED, "the last use was taken")
    print(f"journey done: submission {submitted.parsed.id}")


if __name__ == "__main__":
    main()
