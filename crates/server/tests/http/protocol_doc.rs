//! docs/PROTOCOL.md against a real server: the Content-Security-Policy values it documents are
//! the ones pages and API answers carry, and what it says about `Origin` holds (`null`, which
//! browsers send from a `Referrer-Policy: no-referrer` page, passes with a valid CSRF token;
//! another site's origin does not).

use serde_json::json;

use crate::harness::{Reply, TestServer};
use crate::http_tests;

http_tests!(
    documented_csp_is_the_one_sent,
    origin_null_with_a_csrf_token_is_accepted_and_a_foreign_origin_refused,
);

/// docs/PROTOCOL.md with every run of white space made one space (its lines are wrapped).
fn protocol() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every `` `Content-Security-Policy: …` `` value the document names, in order.
fn documented_policies(doc: &str) -> Vec<&str> {
    let marker = "`Content-Security-Policy: ";
    doc.match_indices(marker)
        .map(|(at, _)| {
            let rest = &doc[at + marker.len()..];
            &rest[..rest.find('`').unwrap()]
        })
        .collect()
}

fn documented_csp_is_the_one_sent(s: &TestServer) {
    let doc = protocol();
    let policies = documented_policies(&doc);
    assert_eq!(
        policies.len(),
        2,
        "PROTOCOL.md names one policy for pages and one for everything else: {policies:?}"
    );
    // A page: the error page of an unknown link.
    let page = s.request("GET", &format!("/l/{}", "A".repeat(43)), &[], None);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("content-security-policy"), Some(policies[0]));
    // API answers (an error and a success).
    for reply in [
        s.request("GET", "/v1/grants", &[], None),
        s.request("GET", "/healthz", &[], None),
    ] {
        assert_eq!(reply.header("content-security-policy"), Some(policies[1]));
    }
}

/// The value of the first hidden `csrf` input of a page.
fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// `name=value` of the flow cookie a reply sets.
fn flow_cookie(reply: &Reply) -> String {
    let line = reply
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-ll_flow="))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no flow cookie in {:?}", reply.headers));
    line.split(';').next().unwrap().to_owned()
}

/// Opens a browser flow on a new grant: its cookie and the factor form's CSRF token.
fn open_flow(s: &TestServer, key: &str) -> (String, String) {
    let grant = s.create(
        key,
        &json!({"payload": {"a": 1}, "factor": {"kind": "dob", "value": "1984-03-02"}}),
    );
    let visited = s.request(
        "GET",
        &format!("/l/{}", grant["token"].as_str().unwrap()),
        &[],
        None,
    );
    assert_eq!(visited.status, 303, "{}", visited.text);
    let cookie = flow_cookie(&visited);
    let step = s.request("GET", "/flow", &[("cookie", &cookie)], None);
    assert_eq!(step.status, 200, "{}", step.text);
    (cookie, csrf(&step.text))
}

fn post_factor(s: &TestServer, cookie: &str, csrf: &str, origin: &str) -> Reply {
    let body = format!("csrf={csrf}&factor=1984-03-02");
    s.request(
        "POST",
        "/flow/factor",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie),
            ("origin", origin),
        ],
        Some(body.as_bytes()),
    )
}

fn origin_null_with_a_csrf_token_is_accepted_and_a_foreign_origin_refused(s: &TestServer) {
    let doc = protocol();
    assert!(
        doc.contains("`Origin: null` is accepted"),
        "PROTOCOL.md says what happens to Origin: null"
    );
    assert!(doc.contains("`Referrer-Policy: no-referrer`"));
    let (_, key) = s.tenant("clinic");

    let (cookie, token) = open_flow(s, &key);
    let refused = post_factor(s, &cookie, &token, "https://evil.example");
    assert_eq!(refused.status, 403, "{}", refused.text);
    // The same flow, token and cookie with `Origin: null`: the factor step passes.
    let passed = post_factor(s, &cookie, &token, "null");
    assert_eq!(passed.status, 303, "{}", passed.text);
    assert_eq!(
        passed.header("location"),
        Some("/view"),
        "the lease was issued"
    );
}
