//! A stand-in for webmail: a page on another site (`http://localhost:P`, while the broker is
//! `http://127.0.0.1:Q`) whose only content is a message with the link, as a person receives it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// A running page on another origin.
pub struct Webmail {
    /// `http://localhost:P/`: a different site from `127.0.0.1` for the browser.
    pub url: String,
}

impl Webmail {
    /// Serves a message linking to `link` (element `#mail-link`) until the test process ends.
    pub fn with_link(link: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Inbox</title>\
             </head><body><main><h1>Your test result is ready</h1>\
             <p><a id=\"mail-link\" href=\"{link}\">Open your result</a></p></main></body></html>"
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        Self {
            url: format!("http://localhost:{port}/"),
        }
    }
}
