//! Errors a client causes: logged below ERROR (clients must not flood the error log), and
//! answered in the route's own format (HTML on browser forms, problem+json on `/v1`).

use serde_json::json;

use crate::exchange::{lab_result, start_exchange};
use crate::harness::{Reply, TestServer, logs};
use crate::http_tests;

http_tests!(
    a_conflict_a_client_causes_is_not_logged_as_an_error,
    form_errors_are_html_pages,
    api_body_errors_are_problem_documents,
);

/// Races wrong codes on one flow until two steps collide (one answers 409 "the flow changed
/// meanwhile"), then checks the log has that cause at DEBUG and never at ERROR.
fn a_conflict_a_client_causes_is_not_logged_as_an_error(s: &TestServer) {
    let (tenant, key) = s.tenant("clinic");
    let client = s.client(tenant, &[]);
    let mut conflicts = 0;
    for _ in 0..40 {
        let grant = s.create(&key, &lab_result());
        let token = grant["token"].as_str().unwrap();
        let flow = start_exchange(s, &client, token, "1984-03-02");
        let wrong = if s.last_code() == "000000" {
            "111111"
        } else {
            "000000"
        };
        let path = format!("/v1/exchange/{flow}/otp");
        let body = json!({"code": wrong}).to_string();
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let calls: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| post(&s.base, &path, &client, &body)))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for status in &statuses {
            assert!([401, 409].contains(status), "{statuses:?}");
        }
        conflicts += statuses.iter().filter(|&&st| st == 409).count();
        if conflicts > 0 {
            break;
        }
    }
    assert!(conflicts > 0, "no two steps collided in 40 rounds");
    let log = logs();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("changed meanwhile"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DEBUG linklease::error") && l.contains(" 409: ")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("ERROR")), "{lines:?}");
}

/// POSTs `body` as JSON with its own agent (the test server is shared by the threads).
fn post(base: &str, path: &str, authorization: &str, body: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .post(format!("{base}{path}"))
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .send(body)
        .unwrap()
        .status()
        .as_u16()
}

#[track_caller]
fn html_page(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.text.starts_with("<!DOCTYPE html>"), "{}", reply.text);
    assert!(!reply.text.contains("Content type error"), "{}", reply.text);
}

fn form_errors_are_html_pages(s: &TestServer) {
    for path in [
        "/flow/factor",
        "/flow/otp",
        "/flow/resend",
        "/view/submit",
        "/logout",
    ] {
        let plain = s.request(
            "POST",
            path,
            &[("content-type", "text/plain")],
            Some(b"factor=1984-03-02"),
        );
        html_page(&plain, 415);
        let big = format!("factor={}", "1".repeat(200 * 1024));
        let large = s.request(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(big.as_bytes()),
        );
        html_page(&large, 413);
    }
}

fn api_body_errors_are_problem_documents(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let auth = format!("Bearer {key}");
    let doc = s
        .request(
            "POST",
            "/v1/grants",
            &[("authorization", &auth), ("content-type", "text/plain")],
            Some(b"{\"payload\": {}}"),
        )
        .problem(400, "invalid_request");
    assert_eq!(doc["detail"], "Content-Type must be application/json");
    let form = s.request(
        "POST",
        "/v1/grants",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(b"payload=x"),
    );
    form.problem(400, "invalid_request");
    let big = vec![b' '; 300 * 1024];
    s.request(
        "POST",
        "/v1/grants",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(&big),
    )
    .problem(413, "payload_too_large");
}
