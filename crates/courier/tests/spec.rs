//! `from_spec`: every accepted `--courier` form, every rejected one, and no credentials in errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use linklease_courier::{CourierOptions, SpecError, from_spec, redact_url};
use linklease_grant::SecretString;

fn options() -> CourierOptions {
    CourierOptions {
        webhook_secret: Some(SecretString::new("whsec")),
        ..CourierOptions::default()
    }
}

#[test]
fn accepts_the_four_forms() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = format!("outbox:{}", dir.path().join("codes.jsonl").display());
    for (spec, kind) in [
        ("console", "console"),
        ("  console\n", "console"),
        (outbox.as_str(), "outbox"),
        ("smtp:smtp://mail.example.org?tls=required", "smtp"),
        (
            "smtp:smtp://mail.example.org:2587/ehlo?x=1&tls=required",
            "smtp",
        ),
        ("smtp:smtps://mail.example.org", "smtp"),
        (
            "smtp:smtps://user%40x:p%2Fss@mail.example.org:465/ehlo.example.org",
            "smtp",
        ),
        ("webhook:https://sms.example.org/send", "webhook"),
    ] {
        let courier = from_spec(spec, &options()).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(courier.kind(), kind, "{spec}");
    }
}

/// Every form that would carry codes in clear: refused by default, loopback included.
const INSECURE: [&str; 7] = [
    "smtp:smtp://localhost",
    "smtp:smtp://127.0.0.1:2525",
    "smtp:smtp://mail.example.org:2587?tls=opportunistic",
    "smtp:smtp://mail.example.org?tls=opportunistic&tls=required",
    "smtp:smtp://pat:hunter2@mail.example.org",
    "webhook:http://127.0.0.1:8081/hook?tenant=1",
    "webhook:HTTP://pat:hunter2@sms.example.org/send",
];

#[test]
fn insecure_transports_are_refused_unless_allowed() {
    for spec in INSECURE {
        let err = from_spec(spec, &options()).err().unwrap();
        assert!(matches!(err, SpecError::Insecure { .. }), "{spec}: {err:?}");
        let shown = err.to_string();
        assert!(shown.contains("in clear"), "{spec}: {shown}");
        assert!(
            shown.contains("--courier-allow-insecure"),
            "{spec}: {shown}"
        );
        assert!(!shown.contains("hunter2"), "{spec}: {shown}");
        let allowed = CourierOptions {
            allow_insecure: true,
            ..options()
        };
        from_spec(spec, &allowed).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
}

#[test]
fn rejects_everything_else_naming_the_accepted_forms() {
    for spec in [
        "",
        "Console",
        "console:",
        "stdout",
        "file:/tmp/codes",
        "sendmail:/usr/sbin/sendmail",
        "outbox",
        "smtp",
        "webhook",
    ] {
        let err = from_spec(spec, &options()).err().unwrap();
        assert!(matches!(err, SpecError::Unknown { .. }), "{spec}: {err:?}");
        let shown = err.to_string();
        for form in ["console", "outbox:PATH", "smtp:URL", "webhook:URL"] {
            assert!(shown.contains(form), "{spec}: {shown}");
        }
    }
    for spec in ["outbox:", "smtp:", "webhook:", "smtp:  "] {
        let err = from_spec(spec, &options()).err().unwrap();
        assert!(matches!(err, SpecError::Empty { .. }), "{spec}: {err:?}");
        assert!(err.to_string().contains("webhook:URL"), "{err}");
    }
    for spec in [
        "smtp://mail.example.org",
        "smtp:mail.example.org",
        "smtp:http://mail.example.org",
        "smtp:smtp://mail.example.org?tls=sometimes",
        "smtp:smtp://",
        "webhook:sms.example.org/send",
        "webhook:ftp://sms.example.org/send",
        "webhook:https://",
        "webhook:https://exa mple.org/",
    ] {
        let err = from_spec(spec, &options()).err().unwrap();
        assert!(matches!(err, SpecError::Url { .. }), "{spec}: {err:?}");
    }
    let err = from_spec("outbox:/nonexistent-dir/codes.jsonl", &options())
        .err()
        .unwrap();
    assert!(matches!(err, SpecError::Outbox { .. }), "{err:?}");
    let bad_from = CourierOptions {
        smtp_from: "not a mailbox".to_owned(),
        ..options()
    };
    let err = from_spec("smtp:smtps://localhost", &bad_from)
        .err()
        .unwrap();
    assert!(matches!(err, SpecError::From { .. }), "{err:?}");
}

#[test]
fn credentials_in_urls_are_never_echoed() {
    for spec in [
        "smtp:smtp://pat:hunter2@mail.example.org?tls=sometimes",
        "smtp:http://pat:hunter2@mail.example.org",
        "smtp:smtps://pat:hunter2@",
        "mailer:smtps://pat:hunter2@mail.example.org",
        "webhook:ftp://pat:hunter2@sms.example.org/send",
        "webhook:https://pat:hunter2@exa mple.org/",
    ] {
        let err = from_spec(spec, &options()).err().unwrap();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("hunter2"), "{spec}: {shown}");
        }
    }
    let courier = from_spec("smtp:smtps://pat:hunter2@mail.example.org", &options()).unwrap();
    let shown = format!("{courier:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("smtps://***@mail.example.org"), "{shown}");
}

#[test]
fn redact_url_hides_only_the_userinfo() {
    assert_eq!(
        redact_url("smtps://pat:hunter2@mail.example.org:465/x?tls=required"),
        "smtps://***@mail.example.org:465/x?tls=required"
    );
    assert_eq!(
        redact_url("https://sms.example.org/a@b?c=d@e"),
        "https://sms.example.org/a@b?c=d@e"
    );
    assert_eq!(redact_url("smtp://a:b@c@host"), "smtp://***@host");
    assert_eq!(redact_url("console"), "console");
}
