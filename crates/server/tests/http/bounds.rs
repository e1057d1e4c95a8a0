//! Nothing a client sends makes a 5xx (spec §4): every route, walked with oversized repeated
//! query parameters, a long query string, oversized header values and oversized lists in
//! bodies, answers a 4xx problem document (or, on browser routes, the HTML error page).

use serde_json::{Value, json};
use std::io::{Read as _, Write as _};

use crate::exchange::{lab_result, lease_for};
use crate::harness::{Reply, TestServer};
use crate::http_tests;

http_tests!(
    every_route_survives_oversized_queries_and_headers,
    label_filters_and_repeated_parameters_are_capped,
    a_head_past_actix_limit_is_refused_by_actix_not_with_500,
    lists_in_bodies_are_capped,
);

/// How a route is called.
#[derive(Clone, Copy)]
enum Auth {
    None,
    ApiKey,
    Client,
    Lease,
}

/// Every route of `routes::*::configure`, with `{id}`, `{flow_id}` and `{token}` to fill in.
const ROUTES: &[(&str, &str, Auth)] = &[
    ("POST", "/v1/grants", Auth::ApiKey),
    ("GET", "/v1/grants", Auth::ApiKey),
    ("POST", "/v1/grants/batch", Auth::ApiKey),
    ("GET", "/v1/grants/{id}", Auth::ApiKey),
    ("POST", "/v1/grants/{id}/revoke", Auth::ApiKey),
    ("GET", "/v1/grants/{id}/submissions", Auth::ApiKey),
    ("GET", "/v1/submissions", Auth::ApiKey),
    ("POST", "/v1/exchange", Auth::Client),
    ("POST", "/v1/exchange/{flow_id}/otp", Auth::Client),
    ("POST", "/v1/exchange/{flow_id}/resend", Auth::Client),
    ("GET", "/v1/lease", Auth::Lease),
    ("POST", "/v1/lease/submissions", Auth::Lease),
    ("POST", "/v1/lease/complete", Auth::Lease),
    ("POST", "/v1/lease/refresh", Auth::Lease),
    ("DELETE", "/v1/lease", Auth::Lease),
    ("GET", "/assets/app.css", Auth::None),
    ("GET", "/l/{token}", Auth::None),
    ("GET", "/flow", Auth::None),
    ("POST", "/flow/factor", Auth::None),
    ("POST", "/flow/otp", Auth::None),
    ("POST", "/flow/resend", Auth::None),
    ("GET", "/view", Auth::None),
    ("POST", "/view/submit", Auth::None),
    ("POST", "/logout", Auth::None),
    ("GET", "/healthz", Auth::None),
    ("GET", "/readyz", Auth::None),
    ("GET", "/metrics", Auth::None),
    ("GET", "/openapi.json", Auth::None),
    ("GET", "/v1/grants/{id}/history", Auth::ApiKey),
    ("GET", "/v1/audit/events", Auth::ApiKey),
    ("GET", "/v1/audit/export", Auth::ApiKey),
    ("GET", "/v1/audit/public-key", Auth::ApiKey),
    ("GET", "/no/such/route", Auth::None),
];

/// `count` copies of `pair`, joined with `&`.
fn repeated(pair: &str, count: usize) -> String {
    vec![pair; count].join("&")
}

/// Asserts no 5xx, and that an error is a problem document or an HTML page.
#[track_caller]
fn no_server_error(reply: &Reply, what: &str) {
    assert!(
        reply.status < 500,
        "{what}: {} {}",
        reply.status,
        reply.text
    );
    if reply.status >= 400 {
        let kind = reply.header("content-type").unwrap_or("");
        assert!(
            kind == "application/problem+json" || kind.starts_with("text/html"),
            "{what}: {} with content type {kind:?}: {}",
            reply.status,
            reply.text
        );
    }
}

/// What the routes need: credentials, a grant, a flow and a lease.
struct Fixture {
    key: String,
    client: String,
    lease: String,
    grant: String,
    flow: String,
}

fn fixture(s: &TestServer) -> Fixture {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap().to_owned();
    let lease = lease_for(s, &client, &token, "1984-03-02");
    let other = s.create(&key, &lab_result());
    let started = s.post_as(
        "/v1/exchange",
        &client,
        &json!({"token": other["token"], "factor": "1984-03-02"}),
    );
    assert_eq!(started.status, 201, "{}", started.text);
    Fixture {
        key,
        client,
        lease,
        grant: grant["id"].as_str().unwrap().to_owned(),
        flow: started.json()["flow_id"].as_str().unwrap().to_owned(),
    }
}

/// Calls `method path?query` as `auth` would, with `extra` headers.
fn call(
    s: &TestServer,
    f: &Fixture,
    (method, path, auth): (&str, &str, Auth),
    query: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let path = path
        .replace("{id}", &f.grant)
        .replace("{flow_id}", &f.flow)
        .replace("{token}", "not-a-token");
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let authorization = match auth {
        Auth::None => None,
        Auth::ApiKey => Some(format!("Bearer {}", f.key)),
        Auth::Client => Some(f.client.clone()),
        Auth::Lease => Some(format!("Bearer {}", f.lease)),
    };
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(value) = &authorization
        && !extra
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        headers.push(("authorization", value));
    }
    let browser = !path_is_api(&uri);
    let body: Option<&[u8]> = match (method, browser) {
        ("POST", true) => {
            headers.push(("content-type", "application/x-www-form-urlencoded"));
            Some(b"csrf=x&factor=1984-03-02&code=123456")
        }
        ("POST", false) => {
            headers.push(("content-type", "application/json"));
            Some(b"{}")
        }
        _ => None,
    };
    raw(s, method, &uri, &headers, body)
}

/// One request over a fresh connection, written by hand: the test's HTTP client refuses URIs
/// over 64 KiB and heads over its buffer, and these requests are meant to be that large.
pub fn raw(
    s: &TestServer,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut stream = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    // The server may answer (and close) before reading everything: the answer is what counts.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    parse_answer(&answer).unwrap_or_else(|| {
        panic!(
            "{method} {}: no HTTP answer: {:?}",
            &target[..target.len().min(80)],
            String::from_utf8_lossy(&answer)
        )
    })
}

fn parse_answer(answer: &[u8]) -> Option<Reply> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = answer[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn path_is_api(uri: &str) -> bool {
    uri.starts_with("/v1/")
}

fn every_route_survives_oversized_queries_and_headers(s: &TestServer) {
    let f = fixture(s);
    let long_value = "x".repeat(7 * 1024);
    let queries = [
        repeated("label.x=y", 5000),
        repeated("cursor=AAAA", 3000),
        repeated("status=active", 3000),
        repeated("limit=10", 3000),
        format!("q={long_value}"),
        format!("cursor={long_value}"),
        format!("label.x={long_value}"),
        format!("from={long_value}"),
        "%FF%FE=%FF&%%%".to_owned(),
    ];
    let big = "b".repeat(100 * 1024);
    let bearer = format!("Bearer {big}");
    let half = &big[..50 * 1024];
    let third = &big[..30 * 1024];
    let cookie = format!("__Host-ll_flow={half}; __Host-ll_lease={half}");
    let headers: [&[(&str, &str)]; 5] = [
        &[("authorization", &bearer)],
        &[("cookie", &cookie)],
        &[("user-agent", &big)],
        &[("x-forwarded-for", &big)],
        &[
            ("origin", third),
            ("sec-fetch-site", third),
            ("x-csrf-token", third),
        ],
    ];
    for &(method, path, auth) in ROUTES {
        for query in &queries {
            let what = format!("{method} {path} with a {} byte query", query.len());
            no_server_error(&call(s, &f, (method, path, auth), query, &[]), &what);
        }
        for extra in headers {
            let what = format!("{method} {path} with an oversized {}", extra[0].0);
            no_server_error(&call(s, &f, (method, path, auth), "", extra), &what);
        }
        let long_path = path
            .replace("{id}", &long_value)
            .replace("{flow_id}", &long_value)
            .replace("{token}", &long_value);
        if long_path != path {
            let what = format!("{method} {path} with a 7 KiB path segment");
            no_server_error(&call(s, &f, (method, &long_path, auth), "", &[]), &what);
        }
    }
    // Nothing above broke the server.
    let reply = s.get("/v1/grants", &f.key);
    assert_eq!(reply.status, 200, "{}", reply.text);
}

fn label_filters_and_repeated_parameters_are_capped(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    s.create(&key, &lab_result());
    let labels = |n: usize| {
        (0..n)
            .map(|i| format!("label.k{i}=v"))
            .collect::<Vec<_>>()
            .join("&")
    };
    // 16 label filters are fine (and match nothing here).
    let reply = s.get(&format!("/v1/grants?{}", labels(16)), &key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    // 4000 is about 56 KiB of query: under actix's limit on the URI (below).
    for count in [17, 1200, 4000] {
        let auth = format!("Bearer {key}");
        let target = format!("/v1/grants?{}", labels(count));
        let doc = raw(s, "GET", &target, &[("authorization", &auth)], None)
            .problem(400, "invalid_request");
        assert_eq!(doc["detail"], "at most 16 label filters", "{count}");
    }
    for query in [
        "status=active&status=active",
        // A well-formed cursor (of grant 0193a0b2-0000-7000-8000-000000000000), twice.
        "cursor=MDE5M2EwYjItMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAw&cursor=MDE5M2EwYjItMDAwMC03MDAwLTgwMDAtMDAwMDAwMDAwMDAw",
        "limit=10&limit=10",
        "label.case_id=c-77&label.case_id=c-77",
    ] {
        let doc = s
            .get(&format!("/v1/grants?{query}"), &key)
            .problem(400, "invalid_request");
        assert!(doc["detail"].as_str().unwrap().contains("twice"), "{doc}");
    }
    for path in ["/v1/submissions", "/v1/audit/events"] {
        s.get(&format!("{path}?limit=10&limit=10"), &key)
            .problem(400, "invalid_request");
    }
}

/// actix's own limits, met before any of linklease runs (so no problem document, but never a
/// 500): a URI over 65,534 bytes (the `http` crate's limit) is refused with an empty 400, a
/// request head (request line and headers) over 128 KiB with 431.
fn a_head_past_actix_limit_is_refused_by_actix_not_with_500(s: &TestServer) {
    let big = "b".repeat(140 * 1024);
    let uri_70k = format!("/v1/grants?{}", repeated("label.x=y", 7_000));
    let uri_140k = format!("/v1/grants?{}", repeated("label.x=y", 14_000));
    for (target, headers, status) in [
        (uri_70k.as_str(), vec![], 400),
        (uri_140k.as_str(), vec![], 431),
        ("/v1/grants", vec![("x-big", big.as_str())], 431),
    ] {
        let reply = raw(s, "GET", target, &headers, None);
        assert_eq!(reply.status, status, "{}: {}", target.len(), reply.text);
    }
    assert_eq!(s.request("GET", "/healthz", &[], None).status, 200);
}

fn lists_in_bodies_are_capped(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let many = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut grant = lab_result();
    grant["labels"] = many(1000);
    s.post("/v1/grants", &key, &grant)
        .problem(400, "invalid_request");
    let mut grant = lab_result();
    grant["allowed_ip_blocks"] = json!(vec!["10.0.0.0/8"; 1000]);
    s.post("/v1/grants", &key, &grant)
        .problem(400, "invalid_request");
    let mut grant = lab_result();
    grant["permissions"]["write_fields"] = (0..1000)
        .map(|i| (format!("f{i}"), json!({"type": "boolean"})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    s.post("/v1/grants", &key, &grant)
        .problem(400, "invalid_request");
    let batch = json!({"grants": vec![json!({"payload": {}}); 1001]});
    let reply = s.post("/v1/grants/batch", &key, &batch);
    assert!(
        reply.status == 400 || reply.status == 422,
        "{} {}",
        reply.status,
        reply.text
    );
    no_server_error(&reply, "a batch of 1001");

    let client = s.client(tenant, &[]);
    let created = s.create(&key, &lab_result());
    let lease = lease_for(s, &client, created["token"].as_str().unwrap(), "1984-03-02");
    let creates = vec![json!({"name": "x"}); 10_000];
    let reply = s.lease_call(
        "POST",
        "/v1/lease/submissions",
        &lease,
        Some(&json!({"fields": many(5000), "creates": creates})),
    );
    assert!(
        (400..500).contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text
    );
    no_server_error(&reply, "a submission with 5000 fields and 10,000 records");
}
