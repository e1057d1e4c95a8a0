//! The browser steps as plain HTML forms, driven over HTTP.

use serde_json::json;
use std::collections::BTreeMap;

use crate::exchange::lab_result;
use crate::harness::{PUBLIC_URL, Reply, TestServer};
use crate::http_tests;

http_tests!(
    link_to_submission_in_the_browser,
    every_page_is_hardened_and_keeps_secrets_out,
    wrong_factor_and_code_then_logout,
    forged_posts_change_nothing,
    origin_that_merely_prefixes_the_public_url_is_refused,
    dead_ends_show_pages,
);

const FLOW: &str = "__Host-ll_flow";
const LEASE: &str = "__Host-ll_lease";
const DOB: &str = "1984-03-02";
const HTML: &str = "text/html; charset=utf-8";

/// A tiny browser: keeps the two cookies, sends them back, posts forms as a same-origin page
/// does, and remembers every reply it got.
struct Browser<'a> {
    s: &'a TestServer,
    jar: BTreeMap<String, String>,
    seen: Vec<Reply>,
}

fn copy(r: &Reply) -> Reply {
    Reply {
        status: r.status,
        headers: r.headers.clone(),
        text: r.text.clone(),
    }
}

/// The headers a browser sends with a same-origin form post.
const SAME_ORIGIN: [(&str, &str); 2] = [("origin", PUBLIC_URL), ("sec-fetch-site", "same-origin")];

impl<'a> Browser<'a> {
    fn new(s: &'a TestServer) -> Self {
        Self {
            s,
            jar: BTreeMap::new(),
            seen: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    fn cookie_header(&self) -> Option<String> {
        if self.jar.is_empty() {
            return None;
        }
        Some(
            self.jar
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn take(&mut self, reply: Reply) -> Reply {
        for line in set_cookies(&reply) {
            let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
            let gone = attributes(line).iter().any(|a| a == "max-age=0");
            if gone {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        self.seen.push(copy(&reply));
        reply
    }

    fn get(&mut self, path: &str) -> Reply {
        let cookie = self.cookie_header();
        let mut headers = Vec::new();
        if let Some(c) = &cookie {
            headers.push(("cookie", c.as_str()));
        }
        let reply = self.s.request("GET", path, &headers, None);
        self.take(reply)
    }

    /// A form post as a page of the broker's own origin sends it.
    fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        self.post_with(path, pairs, &SAME_ORIGIN)
    }

    /// A form post with the given fetch-metadata headers (and the browser's cookies).
    fn post_with(&mut self, path: &str, pairs: &[(&str, &str)], extra: &[(&str, &str)]) -> Reply {
        let body = form(pairs);
        let cookie = self.cookie_header();
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(c) = &cookie {
            headers.push(("cookie", c.as_str()));
        }
        headers.extend_from_slice(extra);
        let reply = self
            .s
            .request("POST", path, &headers, Some(body.as_bytes()));
        self.take(reply)
    }

    /// Visits the link and answers the factor; returns the `/flow` page of the code step.
    #[track_caller]
    fn reach_code_step(&mut self, token: &str) -> Reply {
        let visited = self.get(&format!("/l/{token}"));
        assert_eq!(visited.status, 303, "{}", visited.text);
        let step = self.get("/flow");
        assert_eq!(step.status, 200, "{}", step.text);
        let passed = self.post(
            "/flow/factor",
            &[("csrf", &csrf(&step.text)), ("factor", DOB)],
        );
        assert_eq!(passed.status, 303, "{}", passed.text);
        let step = self.get("/flow");
        assert_eq!(step.status, 200, "{}", step.text);
        assert!(step.text.contains("autocomplete=\"one-time-code\""));
        step
    }

    /// From the code step to the payload page, with the last code delivered.
    #[track_caller]
    fn reach_view(&mut self, token: &str) -> Reply {
        let step = self.reach_code_step(token);
        let code = self.s.last_code();
        let leased = self.post("/flow/otp", &[("csrf", &csrf(&step.text)), ("code", &code)]);
        assert_eq!(leased.status, 303, "{}", leased.text);
        assert_eq!(leased.header("location"), Some("/view"));
        let view = self.get("/view");
        assert_eq!(view.status, 200, "{}", view.text);
        view
    }
}

fn set_cookies(r: &Reply) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The `Set-Cookie` line of cookie `name`.
#[track_caller]
fn set_cookie<'r>(r: &'r Reply, name: &str) -> &'r str {
    let prefix = format!("{name}=");
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers))
}

fn cookie_value(line: &str) -> &str {
    line.split(';').next().unwrap().split_once('=').unwrap().1
}

fn attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[track_caller]
/// A `__Host-` cookie: the lease cookie is SameSite=Strict, the flow cookie Lax (a link is
/// clicked on another site, and its redirect to `/flow` must carry the flow).
fn assert_host_cookie(line: &str, max_age: i64) {
    let attrs = attributes(line);
    let max_age = format!("max-age={max_age}");
    let same_site = if line.starts_with(FLOW) {
        "samesite=lax"
    } else {
        "samesite=strict"
    };
    for want in ["httponly", "secure", same_site, "path=/", &max_age] {
        assert!(attrs.iter().any(|a| a == want), "{line} lacks {want}");
    }
    assert!(
        !attrs.iter().any(|a| a.starts_with("domain")),
        "a __Host- cookie has no Domain: {line}"
    );
}

/// The value of the first hidden `csrf` input of a page.
#[track_caller]
fn csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf input in {html}"))
        + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// The page with every csrf value taken out (a random token may contain six digits in a row).
fn without_csrf(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find(marker) {
        let start = at + marker.len();
        out.push_str(&rest[..start]);
        let len = rest[start..].find('"').unwrap_or(rest.len() - start);
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A request carrying exactly one cookie, whatever the browser holds.
fn get_with_cookie(s: &TestServer, path: &str, name: &str, value: &str) -> Reply {
    let cookie = format!("{name}={value}");
    s.request("GET", path, &[("cookie", &cookie)], None)
}

/// An HTML page of `status` that says `text`.
#[track_caller]
fn assert_page(r: &Reply, status: u16, text: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.header("content-type"), Some(HTML), "{}", r.text);
    assert!(r.text.contains(text), "{text:?} not in {}", r.text);
}

/// A code other than `code`, of the same shape.
fn other_code(code: &str) -> String {
    let mut digits: Vec<char> = code.chars().collect();
    let last = digits.last_mut().unwrap();
    *last = if *last == '0' { '1' } else { '0' };
    digits.into_iter().collect()
}

fn grant_view(s: &TestServer, key: &str, id: &str) -> serde_json::Value {
    let reply = s.get(&format!("/v1/grants/{id}"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn submissions(s: &TestServer, key: &str, id: &str) -> Vec<serde_json::Value> {
    let reply = s.get(&format!("/v1/grants/{id}/submissions"), key);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["submissions"].as_array().unwrap().clone()
}

fn link_to_submission_in_the_browser(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let mut body = lab_result();
    body["payload"]["remark"] = json!("<b>Ana & \"Bo\"</b>");
    let grant = s.create(&key, &body);
    let token = grant["token"].as_str().unwrap();
    let id = grant["id"].as_str().unwrap();
    let mut b = Browser::new(s);

    // The link: a flow cookie and a redirect that leaves the token behind; nothing else.
    let visited = b.get(&format!("/l/{token}"));
    assert_eq!(visited.status, 303, "{}", visited.text);
    assert_eq!(visited.header("location"), Some("/flow"));
    assert!(!visited.header("location").unwrap().contains(token));
    let flow_line = set_cookie(&visited, FLOW);
    assert_host_cookie(flow_line, 900);
    let flow_cookie = cookie_value(flow_line).to_owned();
    assert!(!flow_cookie.is_empty() && !flow_cookie.contains(token));
    assert!(set_cookies(&visited).iter().all(|c| !c.starts_with(LEASE)));
    assert!(s.outbox().is_empty(), "a GET sent a code");
    let state = grant_view(s, &key, id);
    assert_eq!(state["status"], "active");
    assert_eq!(state["uses"], 0);

    // The factor step.
    let step = b.get("/flow");
    assert_page(&step, 200, "type=\"date\"");
    assert!(step.text.contains("action=\"/flow/factor\""));
    assert!(!step.text.contains("one-time-code"));
    assert!(s.outbox().is_empty(), "showing the step sent a code");
    let passed = b.post(
        "/flow/factor",
        &[("csrf", &csrf(&step.text)), ("factor", DOB)],
    );
    assert_eq!(passed.status, 303, "{}", passed.text);
    assert_eq!(passed.header("location"), Some("/flow"));
    let sent = s.outbox();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], "pat@example.org");
    assert_eq!(sent[0]["grant_id"], id);
    let code = s.last_code();

    // The code step.
    let step = b.get("/flow");
    assert_page(&step, 200, "autocomplete=\"one-time-code\"");
    assert!(step.text.contains("p***@example.org"), "{}", step.text);
    assert!(!step.text.contains("pat@example.org"));
    assert!(!step.text.contains("type=\"date\""));
    let leased = b.post("/flow/otp", &[("csrf", &csrf(&step.text)), ("code", &code)]);
    assert_eq!(leased.status, 303, "{}", leased.text);
    assert_eq!(leased.header("location"), Some("/view"));
    let lease_line = set_cookie(&leased, LEASE);
    assert_host_cookie(lease_line, 900);
    let lease = cookie_value(lease_line).to_owned();
    assert!(!lease.is_empty());
    let cleared = set_cookie(&leased, FLOW);
    assert_eq!(cookie_value(cleared), "");
    assert_host_cookie(cleared, 0);
    assert_eq!(b.cookie(FLOW), None);
    // The spent flow cookie opens nothing any more.
    assert_page(
        &get_with_cookie(s, "/flow", FLOW, &flow_cookie),
        410,
        "start again",
    );

    // The payload and the form.
    let view = b.get("/view");
    assert_page(&view, 200, "P-1042");
    for shown in [
        "SARS-CoV-2 PCR",
        "negative",
        "&lt;b&gt;Ana &amp; &quot;Bo&quot;&lt;/b&gt;",
    ] {
        assert!(view.text.contains(shown), "{shown} not in {}", view.text);
    }
    assert!(!view.text.contains("<b>Ana"), "payload not escaped");
    for control in [
        "action=\"/view/submit\"",
        "type=\"checkbox\" id=\"f.result_ack\" name=\"f.result_ack\" value=\"true\"",
        "name=\"f.note\" maxlength=\"200\"",
        "name=\"c.0.name\" maxlength=\"80\"",
        "name=\"c.1.name\" maxlength=\"80\"",
        "action=\"/logout\"",
    ] {
        assert!(
            view.text.contains(control),
            "{control} not in {}",
            view.text
        );
    }
    assert!(!view.text.contains("c.2.name"), "more rows than create.max");
    assert!(
        !view.text.contains("name=\"f.patient_id\""),
        "a read-only field is writable"
    );

    // A browser sends empty text inputs too; they are left out.
    let done = b.post(
        "/view/submit",
        &[
            ("csrf", &csrf(&view.text)),
            ("f.result_ack", "true"),
            ("f.note", ""),
            ("c.0.name", "Ana"),
            ("c.1.name", ""),
        ],
    );
    assert_page(&done, 200, "Thank you");
    let gone = set_cookie(&done, LEASE);
    assert_host_cookie(gone, 0);
    assert_eq!(b.cookie(LEASE), None);

    let stored = submissions(s, &key, id);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["fields"], json!({"result_ack": true}));
    assert_eq!(stored[0]["creates"], json!([{"name": "Ana"}]));
    let state = grant_view(s, &key, id);
    assert_eq!(state["status"], "used");
    assert_eq!(state["uses"], 1);

    // The old lease cookie shows the used page, and so does the link.
    assert_page(
        &get_with_cookie(s, "/view", LEASE, &lease),
        410,
        "already been used",
    );
    assert_page(
        &s.request("GET", &format!("/l/{token}"), &[], None),
        410,
        "already been used",
    );
}

fn every_page_is_hardened_and_keeps_secrets_out(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let mut b = Browser::new(s);

    // Error pages on the way.
    b.get("/flow");
    b.get("/view");
    b.get(&format!("/l/{}", "A".repeat(43)));
    b.get("/l/short");

    b.get(&format!("/l/{token}"));
    let step = b.get("/flow");
    let flow_csrf = csrf(&step.text);
    let wrong = b.post(
        "/flow/factor",
        &[("csrf", &flow_csrf), ("factor", "1999-01-01")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let forged = b.post("/flow/factor", &[("factor", DOB)]);
    assert_eq!(forged.status, 403, "{}", forged.text);
    b.post("/flow/factor", &[("csrf", &flow_csrf), ("factor", DOB)]);
    let step = b.get("/flow");
    let first = s.last_code();
    let wrong = b.post(
        "/flow/otp",
        &[("csrf", &csrf(&step.text)), ("code", &other_code(&first))],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    s.advance(time::Duration::seconds(31));
    let resent = b.post("/flow/resend", &[("csrf", &csrf(&step.text))]);
    assert_eq!(resent.status, 303, "{}", resent.text);
    let code = s.last_code();
    let step = b.get("/flow");
    let leased = b.post("/flow/otp", &[("csrf", &csrf(&step.text)), ("code", &code)]);
    assert_eq!(leased.status, 303, "{}", leased.text);
    let lease = b.cookie(LEASE).unwrap().to_owned();
    let view = b.get("/view");
    assert_eq!(view.status, 200, "{}", view.text);
    let bad = b.post(
        "/view/submit",
        &[("csrf", &csrf(&view.text)), ("f.note", &"x".repeat(300))],
    );
    assert_eq!(bad.status, 422, "{}", bad.text);
    let done = b.post(
        "/view/submit",
        &[("csrf", &csrf(&view.text)), ("f.result_ack", "on")],
    );
    assert_eq!(done.status, 200, "{}", done.text);
    b.get("/view");
    b.get(&format!("/l/{token}"));
    let logout = b.post("/logout", &[("csrf", &csrf(&view.text))]);
    assert!(logout.status >= 400, "{}", logout.text);

    let codes: Vec<String> = s
        .outbox()
        .iter()
        .map(|m| m["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 2);
    assert_eq!(b.seen.len(), 20);
    for reply in &b.seen {
        let context = format!("{} {:?}", reply.status, reply.headers);
        for (name, value) in [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
        ] {
            assert_eq!(reply.header(name), Some(value), "{name} on {context}");
        }
        let csp = reply
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on {context}"));
        // Pages load linklease's own stylesheet and run no script; other answers load nothing.
        assert!(
            csp.contains("default-src 'none'")
                || (csp.contains("default-src 'self'") && csp.contains("script-src 'none'")),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        if let Some(location) = reply.header("location") {
            assert!(location.starts_with('/') && !location.contains(token));
        }
        let text = without_csrf(&reply.text);
        assert!(!text.contains(token), "link token on a page: {text}");
        assert!(!text.contains(&lease), "lease token on a page: {text}");
        for code in &codes {
            assert!(!text.contains(code.as_str()), "code on a page: {text}");
        }
        if reply.status != 303 {
            assert_eq!(reply.header("content-type"), Some(HTML), "{context}");
        }
    }
}

fn wrong_factor_and_code_then_logout(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let id = grant["id"].as_str().unwrap();
    let mut b = Browser::new(s);

    b.get(&format!("/l/{token}"));
    let step = b.get("/flow");
    let wrong = b.post(
        "/flow/factor",
        &[("csrf", &csrf(&step.text)), ("factor", "1984-03-03")],
    );
    assert_page(&wrong, 401, "Attempts left: 4");
    assert!(
        wrong.text.contains("type=\"date\""),
        "the factor step again"
    );
    assert!(s.outbox().is_empty());
    assert_eq!(grant_view(s, &key, id)["factor_failures"], 1);

    // The re-shown form works.
    let passed = b.post(
        "/flow/factor",
        &[("csrf", &csrf(&wrong.text)), ("factor", DOB)],
    );
    assert_eq!(passed.status, 303, "{}", passed.text);
    let code = s.last_code();
    let step = b.get("/flow");
    let wrong = b.post(
        "/flow/otp",
        &[("csrf", &csrf(&step.text)), ("code", &other_code(&code))],
    );
    assert_page(&wrong, 401, "autocomplete=\"one-time-code\"");
    assert!(wrong.text.contains("role=\"alert\""), "{}", wrong.text);
    assert!(set_cookies(&wrong).is_empty(), "no lease for a wrong code");
    assert_eq!(grant_view(s, &key, id)["otp_failures"], 1);
    let leased = b.post(
        "/flow/otp",
        &[("csrf", &csrf(&wrong.text)), ("code", &code)],
    );
    assert_eq!(leased.status, 303, "{}", leased.text);
    assert_eq!(leased.header("location"), Some("/view"));
    let lease = b.cookie(LEASE).expect("lease cookie").to_owned();
    let view = b.get("/view");
    assert_page(&view, 200, "P-1042");

    // Logout ends the lease.
    let out = b.post("/logout", &[("csrf", &csrf(&view.text))]);
    assert_page(&out, 200, "logged out");
    assert_host_cookie(set_cookie(&out, LEASE), 0);
    assert_eq!(b.cookie(LEASE), None);
    assert_page(
        &get_with_cookie(s, "/view", LEASE, &lease),
        401,
        "Session ended",
    );
    s.lease_call("GET", "/v1/lease", &lease, None)
        .problem(401, "lease_invalid");
    // Not a use.
    let state = grant_view(s, &key, id);
    assert_eq!(state["status"], "active");
    assert_eq!(state["uses"], 0);
    assert!(submissions(s, &key, id).is_empty());
}

/// A forged post: what it is, its csrf field (if any), its fetch-metadata headers.
type Forgery = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<(&'static str, &'static str)>,
);

/// The ways another site could make a browser post: each must be refused.
fn forgeries(csrf: &str) -> Vec<Forgery> {
    let same: Vec<(&str, &str)> = SAME_ORIGIN.to_vec();
    vec![
        ("no csrf", vec![], same.clone()),
        ("wrong csrf", vec![("csrf", "A".repeat(43))], same.clone()),
        ("empty csrf", vec![("csrf", String::new())], same),
        (
            "cross-site",
            vec![("csrf", csrf.to_owned())],
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "same-site",
            vec![("csrf", csrf.to_owned())],
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "foreign origin",
            vec![("csrf", csrf.to_owned())],
            vec![("origin", "https://evil.example")],
        ),
        (
            "foreign origin, same-origin claimed",
            vec![("csrf", csrf.to_owned())],
            vec![
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "same-origin"),
            ],
        ),
    ]
}

/// Posts every forgery of `pairs` to `path`; each must be a 403 page.
#[track_caller]
fn refuse_forgeries(b: &mut Browser<'_>, path: &str, csrf: &str, pairs: &[(&str, &str)]) {
    for (what, token, headers) in forgeries(csrf) {
        let mut all: Vec<(&str, &str)> = token.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(pairs);
        let reply = b.post_with(path, &all, &headers);
        assert_eq!(reply.status, 403, "{what} on {path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some(HTML), "{what} on {path}");
        assert!(
            set_cookies(&reply).is_empty(),
            "{what} on {path} set a cookie: {:?}",
            reply.headers
        );
    }
}

fn forged_posts_change_nothing(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let id = grant["id"].as_str().unwrap();

    // Another flow's form token is no good for this flow.
    let mut other = Browser::new(s);
    other.get(&format!("/l/{token}"));
    let foreign_csrf = csrf(&other.get("/flow").text);

    let mut b = Browser::new(s);
    b.get(&format!("/l/{token}"));
    let step = b.get("/flow");
    let flow_csrf = csrf(&step.text);
    assert_ne!(flow_csrf, foreign_csrf);

    // The factor step.
    refuse_forgeries(&mut b, "/flow/factor", &flow_csrf, &[("factor", DOB)]);
    let foreign = b.post("/flow/factor", &[("csrf", &foreign_csrf), ("factor", DOB)]);
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    assert!(s.outbox().is_empty(), "a forged post sent a code");
    assert_page(&b.get("/flow"), 200, "type=\"date\"");
    assert_eq!(grant_view(s, &key, id)["factor_failures"], 0);

    // A real browser post from the broker's own page goes through.
    let passed = b.post("/flow/factor", &[("csrf", &flow_csrf), ("factor", DOB)]);
    assert_eq!(passed.status, 303, "{}", passed.text);
    assert_eq!(s.outbox().len(), 1);
    let code = s.last_code();

    // The code step and the resend.
    let step = b.get("/flow");
    let flow_csrf = csrf(&step.text);
    refuse_forgeries(&mut b, "/flow/otp", &flow_csrf, &[("code", &code)]);
    let foreign = b.post("/flow/otp", &[("csrf", &foreign_csrf), ("code", &code)]);
    assert_eq!(foreign.status, 403, "{}", foreign.text);
    s.advance(time::Duration::seconds(31));
    refuse_forgeries(&mut b, "/flow/resend", &flow_csrf, &[]);
    assert_eq!(s.outbox().len(), 1, "a forged post sent a code");
    assert_eq!(b.cookie(LEASE), None);
    assert_page(&b.get("/flow"), 200, "autocomplete=\"one-time-code\"");
    assert_eq!(grant_view(s, &key, id)["otp_failures"], 0);

    // The code still works.
    let leased = b.post("/flow/otp", &[("csrf", &flow_csrf), ("code", &code)]);
    assert_eq!(leased.status, 303, "{}", leased.text);
    let view = b.get("/view");
    assert_eq!(view.status, 200, "{}", view.text);
    let lease_csrf = csrf(&view.text);
    // The flow's form token is not the lease's.
    assert_ne!(lease_csrf, flow_csrf);

    // The view's posts.
    let answers = [("f.result_ack", "true"), ("c.0.name", "Ana")];
    refuse_forgeries(&mut b, "/view/submit", &lease_csrf, &answers);
    let flow_token = b.post(
        "/view/submit",
        &[("csrf", &flow_csrf), ("f.result_ack", "true")],
    );
    assert_eq!(flow_token.status, 403, "{}", flow_token.text);
    assert!(
        submissions(s, &key, id).is_empty(),
        "a forged post was stored"
    );
    let state = grant_view(s, &key, id);
    assert_eq!(state["uses"], 0);
    assert_eq!(state["status"], "active");

    refuse_forgeries(&mut b, "/logout", &lease_csrf, &[]);
    let view = b.get("/view");
    assert_eq!(
        view.status, 200,
        "a forged logout ended the lease: {}",
        view.text
    );

    // With the right token, from the right page, it all works.
    let done = b.post(
        "/view/submit",
        &[
            ("csrf", &lease_csrf),
            ("f.result_ack", "true"),
            ("c.0.name", "Ana"),
        ],
    );
    assert_page(&done, 200, "Thank you");
    assert_eq!(submissions(s, &key, id).len(), 1);
}

/// `Origin` must equal the broker's origin, not merely begin it: `https://links.example.te` is
/// another site (think `https://example.co` against `https://example.com`).
fn origin_that_merely_prefixes_the_public_url_is_refused(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let mut b = Browser::new(s);
    b.get(&format!("/l/{token}"));
    let flow_csrf = csrf(&b.get("/flow").text);
    for origin in [
        "https://links.example.te",
        "https://links.example",
        "https://",
    ] {
        let reply = b.post_with(
            "/flow/factor",
            &[("csrf", &flow_csrf), ("factor", DOB)],
            &[("origin", origin)],
        );
        assert_eq!(reply.status, 403, "Origin {origin}: {}", reply.text);
    }
    assert!(s.outbox().is_empty(), "a cross-origin post sent a code");
}

fn dead_ends_show_pages(s: &TestServer) {
    let (_, key) = s.tenant("clinic");

    // No flow, or a flow cookie nobody issued.
    assert_page(&s.request("GET", "/flow", &[], None), 410, "start again");
    assert_page(
        &get_with_cookie(s, "/flow", FLOW, &"A".repeat(43)),
        410,
        "start again",
    );
    assert_page(&s.request("GET", "/view", &[], None), 401, "Session ended");

    // Unknown links.
    for token in ["A".repeat(43), "nope".to_owned()] {
        let reply = s.request("GET", &format!("/l/{token}"), &[], None);
        assert_page(&reply, 404, "Link not found");
        assert!(set_cookies(&reply).is_empty());
    }

    // A flow lives 15 minutes.
    let grant = s.create(&key, &lab_result());
    let mut b = Browser::new(s);
    b.get(&format!("/l/{}", grant["token"].as_str().unwrap()));
    let flow_csrf = csrf(&b.get("/flow").text);
    s.advance(time::Duration::minutes(16));
    assert_page(&b.get("/flow"), 410, "start again");
    let late = b.post("/flow/factor", &[("csrf", &flow_csrf), ("factor", DOB)]);
    assert_page(&late, 410, "start again");
    assert!(s.outbox().is_empty());

    // A used link: a grant without factor or code still needs the Continue post.
    let grant = s.create(
        &key,
        &json!({"payload": {"a": 1}, "permissions": {"write_fields": {"ok": {"type": "boolean"}}}}),
    );
    let token = grant["token"].as_str().unwrap();
    let id = grant["id"].as_str().unwrap();
    let mut b = Browser::new(s);
    let visited = b.get(&format!("/l/{token}"));
    assert_eq!(visited.status, 303, "{}", visited.text);
    assert_eq!(b.cookie(LEASE), None, "a GET issued a lease");
    let step = b.get("/flow");
    assert_page(&step, 200, "Continue");
    assert!(!step.text.contains("name=\"factor\""), "{}", step.text);
    assert_eq!(b.cookie(LEASE), None, "a GET issued a lease");
    let leased = b.post("/flow/factor", &[("csrf", &csrf(&step.text))]);
    assert_eq!(leased.status, 303, "{}", leased.text);
    assert_eq!(leased.header("location"), Some("/view"));
    assert!(
        s.outbox().is_empty(),
        "no code for a grant without a channel"
    );
    let view = b.get("/view");
    assert_page(&view, 200, "type=\"checkbox\"");
    let done = b.post(
        "/view/submit",
        &[("csrf", &csrf(&view.text)), ("f.ok", "on")],
    );
    assert_page(&done, 200, "Thank you");
    assert_eq!(submissions(s, &key, id)[0]["fields"], json!({"ok": true}));
    assert_eq!(grant_view(s, &key, id)["status"], "used");
    assert_page(
        &s.request("GET", &format!("/l/{token}"), &[], None),
        410,
        "already been used",
    );

    // A revoked link, and the lease and flow opened before the revocation.
    let grant = s.create(&key, &lab_result());
    let token = grant["token"].as_str().unwrap();
    let id = grant["id"].as_str().unwrap();
    let mut leased = Browser::new(s);
    let view = leased.reach_view(token);
    let mut pending = Browser::new(s);
    pending.get(&format!("/l/{token}"));
    let pending_csrf = csrf(&pending.get("/flow").text);
    let sent = s.outbox().len();
    let revoked = s.post(
        &format!("/v1/grants/{id}/revoke"),
        &key,
        &json!({"reason": "wrong patient"}),
    );
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_page(
        &s.request("GET", &format!("/l/{token}"), &[], None),
        410,
        "withdrawn",
    );
    assert_page(&leased.get("/view"), 410, "withdrawn");
    let late = leased.post(
        "/view/submit",
        &[("csrf", &csrf(&view.text)), ("f.result_ack", "true")],
    );
    assert_eq!(late.status, 410, "{}", late.text);
    assert!(submissions(s, &key, id).is_empty());
    let late = pending.post("/flow/factor", &[("csrf", &pending_csrf), ("factor", DOB)]);
    assert_page(&late, 410, "withdrawn");
    assert_eq!(s.outbox().len(), sent, "a code for a revoked grant");

    // An expired link.
    let grant = s.create(
        &key,
        &json!({"payload": {"a": 1}, "expires_at": "2026-11-24T12:00:00Z"}),
    );
    let token = grant["token"].as_str().unwrap();
    assert_eq!(
        s.request("GET", &format!("/l/{token}"), &[], None).status,
        303
    );
    s.advance(time::Duration::days(1));
    let reply = s.request("GET", &format!("/l/{token}"), &[], None);
    assert_page(&reply, 410, "expired");
    assert!(set_cookies(&reply).is_empty());
}
