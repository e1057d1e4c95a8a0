//! `smtp:URL` against a tiny SMTP server on 127.0.0.1 written here: delivery, a 554 rejection,
//! a refused connection, a silent server (timeout) and SMS (unsupported).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::message;
use linklease_courier::{CourierError, CourierOptions, from_spec};
use linklease_grant::OtpChannel;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server saw: the commands, and the DATA lines (without the final ".").
#[derive(Debug, Default)]
struct Transcript {
    commands: Vec<String>,
    data: Vec<String>,
}

/// Serves one SMTP session, answering RCPT with `rcpt_reply`.
fn smtp_server(rcpt_reply: &'static str) -> (u16, JoinHandle<Transcript>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = Transcript::default();
        let mut reply = |line: &str| writer.write_all(format!("{line}\r\n").as_bytes());
        reply("220 test.invalid ESMTP").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let command = line.trim_end().to_owned();
            let verb = command
                .split([' ', ':'])
                .next()
                .unwrap()
                .to_ascii_uppercase();
            seen.commands.push(command);
            let answer = match verb.as_str() {
                "EHLO" | "HELO" => "250 test.invalid",
                "MAIL" | "RSET" | "NOOP" => "250 OK",
                "RCPT" => rcpt_reply,
                "DATA" => {
                    reply("354 end with <CRLF>.<CRLF>").unwrap();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap() == 0 || line == ".\r\n" {
                            break;
                        }
                        seen.data.push(line.trim_end().to_owned());
                    }
                    "250 queued"
                }
                "QUIT" => {
                    let _ = reply("221 bye");
                    break;
                }
                _ => "500 unknown command",
            };
            if reply(answer).is_err() {
                break;
            }
        }
        seen
    });
    (port, handle)
}

fn options() -> CourierOptions {
    CourierOptions {
        smtp_from: "Linklease <otp@example.org>".to_owned(),
        timeout: Duration::from_secs(5),
        // The test server on loopback speaks plain SMTP.
        allow_insecure: true,
        ..CourierOptions::default()
    }
}

#[test]
fn sends_a_plain_text_email_with_the_code() {
    let (port, server) = smtp_server("250 OK");
    let courier = from_spec(&format!("smtp:smtp://127.0.0.1:{port}"), &options()).unwrap();
    assert_eq!(courier.kind(), "smtp");
    courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "123456"))
        .unwrap();

    let seen = server.join().unwrap();
    assert!(seen.commands[0].starts_with("EHLO "), "{seen:?}");
    assert!(
        seen.commands
            .contains(&"MAIL FROM:<otp@example.org>".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.commands
            .contains(&"RCPT TO:<pat@example.org>".to_owned()),
        "{seen:?}"
    );
    assert_eq!(seen.commands.last().unwrap(), "QUIT");
    let header = |name: &str| {
        seen.data
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} header in {seen:?}"))
    };
    assert_eq!(header("Subject"), "Your linklease code");
    assert_eq!(header("To"), "pat@example.org");
    assert_eq!(header("From"), "Linklease <otp@example.org>");
    assert!(header("Content-Type").starts_with("text/plain"));
    assert_eq!(header("Date"), "Thu, 02 Jan 2025 03:04:05 +0000");
    let body = seen.data.join("\n");
    assert!(
        body.contains("Your linklease code is 123456. It expires in 10 minutes."),
        "{body}"
    );
}

#[test]
fn a_rejected_recipient_is_an_error_without_the_code_or_address() {
    // The server quotes the recipient (and, for the test, the code) in its reply.
    let (port, server) = smtp_server("554 5.7.1 <pat@example.org>: relay denied 123456");
    let courier = from_spec(&format!("smtp:smtp://127.0.0.1:{port}"), &options()).unwrap();
    let err = courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Rejected { .. }), "{err:?}");
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(shown.contains("554"), "{shown}");
        assert!(shown.contains("p***@example.org"), "{shown}");
        assert!(!shown.contains("pat@example.org"), "{shown}");
        assert!(!shown.contains("123456"), "{shown}");
    }
    assert!(std::error::Error::source(&err).is_none());
    let seen = server.join().unwrap();
    assert!(seen.data.is_empty(), "{seen:?}");
}

#[test]
fn an_unreachable_or_silent_server_is_a_transport_error() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let courier = from_spec(&format!("smtp:smtp://127.0.0.1:{port}"), &options()).unwrap();
    let err = courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Transport { .. }), "{err:?}");

    // Accepts the connection and never greets: the timeout applies.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let options = CourierOptions {
        timeout: Duration::from_millis(300),
        ..options()
    };
    let courier = from_spec(&format!("smtp:smtp://127.0.0.1:{port}"), &options).unwrap();
    let started = std::time::Instant::now();
    let err = courier
        .deliver(&message(OtpChannel::Email, "pat@example.org", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Transport { .. }), "{err:?}");
    assert!(err.to_string().ends_with("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);
}

#[test]
fn sms_and_none_are_unsupported_without_connecting() {
    // Nothing listens on port 9: a connection attempt would fail differently.
    let courier = from_spec("smtp:smtp://127.0.0.1:9", &options()).unwrap();
    for channel in [OtpChannel::Sms, OtpChannel::None] {
        let err = courier
            .deliver(&message(channel, "+15550100123", "123456"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                CourierError::Unsupported {
                    courier: "smtp",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn a_destination_that_is_not_an_address_is_invalid() {
    let courier = from_spec("smtp:smtp://127.0.0.1:9", &options()).unwrap();
    let err = courier
        .deliver(&message(OtpChannel::Email, "not an address", "123456"))
        .unwrap_err();
    assert!(matches!(err, CourierError::Invalid { .. }), "{err:?}");
    assert!(!err.to_string().contains("not an address"), "{err}");
}
