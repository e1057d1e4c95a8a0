//! `webhook:URL` against a tiny HTTP server on 127.0.0.1 written here: the signed JSON POST,
//! non-2xx answers, an unreachable endpoint and the required secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{GRANT, message};
use linklease_courier::{CourierError, CourierOptions, SpecError, from_spec};
use linklease_grant::{OtpChannel, SecretString};
use ring::hmac;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

const SECRET: &str = "whsec_test_0123456789";

/// One request as the server saw it.
#[derive(Debug)]
struct Request {
    line: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Serves one HTTP request with `status` and an empty body.
fn http_server(status: &'static str) -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sms/send", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let Some((name, value)) = header.trim_end().split_once(':') else {
                break;
            };
            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        Request {
            line: line.trim_end().to_owned(),
            headers,
            body,
        }
    });
    (url, handle)
}

fn options() -> CourierOptions {
    CourierOptions {
        webhook_secret: Some(SecretString::new(SECRET)),
        timeout: Duration::from_secs(5),
        // The test server on loopback speaks plain HTTP.
        allow_insecure: true,
        ..CourierOptions::default()
    }
}

#[test]
fn posts_the_code_as_signed_json() {
    let (url, server) = http_server("200 OK");
    let courier = from_spec(&format!("webhook:{url}"), &options()).unwrap();
    assert_eq!(courier.kind(), "webhook");
    let sent = message(OtpChannel::Sms, "+15550100123", "123456");
    courier.deliver(&sent).unwrap();

    let request = server.join().unwrap();
    assert_eq!(request.line, "POST /sms/send HTTP/1.1");
    assert_eq!(request.headers["content-type"], "application/json");

    // Recompute the signature independently: t=<unix seconds>,v1=<hex HMAC-SHA256("<t>." + body)>.
    let signature = &request.headers["x-linklease-signature"];
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("malformed signature {signature}"));
    assert_eq!(t.parse::<i64>().unwrap(), sent.at.unix_timestamp());
    assert_eq!(v1.len(), 64);
    let mac: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
        .collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let signed = [format!("{t}.").as_bytes(), &request.body].concat();
    hmac::verify(&key, &signed, &mac).expect("signature verifies");
    let wrong = hmac::Key::new(hmac::HMAC_SHA256, b"another secret");
    assert!(hmac::verify(&wrong, &signed, &mac).is_err());

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "at": "2025-01-02T03:04:05Z",
            "channel": "sms",
            "to": "+15550100123",
            "grant_id": GRANT,
            "code": "123456",
            "text": "Your linklease code is 123456. It expires in 10 minutes. Never share it.",
        })
    );
}

#[test]
fn a_non_2xx_answer_is_rejected_without_the_code() {
    for status in ["500 Internal Server Error", "302 Found", "401 Unauthorized"] {
        let (url, server) = http_server(status);
        let courier = from_spec(&format!("webhook:{url}"), &options()).unwrap();
        let err = courier
            .deliver(&message(OtpChannel::Sms, "+15550100123", "123456"))
            .unwrap_err();
        assert!(matches!(err, CourierError::Rejected { .. }), "{err:?}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(shown.contains(&status[..3]), "{shown}");
            assert!(shown.contains("+*******0123"), "{shown}");
            assert!(!shown.contains("123456"), "{shown}");
            assert!(!shown.contains("+15550100123"), "{shown}");
        }
        server.join().unwrap();
    }
}

#[test]
fn an_unreachable_endpoint_is_a_transport_error() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let courier = from_spec(&format!("webhook:http://{address}/sms"), &options()).unwrap();
    let err = courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Transport { .. }), "{err:?}");
    assert!(!err.to_string().contains("pat@example.org"), "{err}");
}

#[test]
fn a_secret_is_required_and_never_shown() {
    for secret in [None, Some(SecretString::new(""))] {
        let options = CourierOptions {
            webhook_secret: secret,
            ..CourierOptions::default()
        };
        let err = from_spec("webhook:https://sms.example.org/send", &options).unwrap_err();
        assert!(matches!(err, SpecError::MissingSecret), "{err:?}");
        assert!(err.to_string().contains("secret"), "{err}");
    }
    let courier = from_spec("webhook:https://sms.example.org/send", &options()).unwrap();
    let shown = format!("{courier:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("https://sms.example.org/send"), "{shown}");
}

#[test]
fn channel_none_is_unsupported() {
    let courier = from_spec("webhook:http://127.0.0.1:9/sms", &options()).unwrap();
    let err = courier
        .deliver(&message(OtpChannel::None, "x", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Unsupported { .. }), "{err:?}");
}
