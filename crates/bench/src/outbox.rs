//! The one-time codes the server's `outbox:PATH` courier appends (one JSON object per line,
//! spec §5), read as they come and handed out by grant id.
//!
//! The server writes a code to the file before it answers the `POST /v1/exchange` that sent
//! it, so a flow that asks for its grant's code right after that answer finds it with one read
//! of what is new in the file: no polling thread and no added latency. A missing code is
//! waited for (briefly) in case a line is still being written.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The codes delivered so far and not yet taken, by grant id.
pub struct Outbox {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    file: Option<File>,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
    codes: HashMap<String, String>,
}

impl Inner {
    fn read_new(&mut self, path: &PathBuf) {
        if self.file.is_none() {
            self.file = File::open(path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_err() || fresh.is_empty() {
            return;
        }
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(grant), Some(code)) =
                (message["grant_id"].as_str(), message["code"].as_str())
            {
                // A later code for the same grant replaces the earlier one, as on the server.
                self.codes.insert(grant.to_owned(), code.to_owned());
            }
        }
    }
}

impl Outbox {
    /// The outbox at `path` (it may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Takes the code sent for `grant_id`, waiting up to `timeout` for it to appear.
    pub fn take(&self, grant_id: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(code) = inner.codes.remove(grant_id) {
                    return Some(code);
                }
                inner.read_new(&self.path);
                if let Some(code) = inner.codes.remove(grant_id) {
                    return Some(code);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
