//! What the CLI's test binaries share: a `linklease serve` process that ends with the test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `linklease serve`, killed when dropped.
pub struct Instance {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`, read from the server's first line.
    pub url: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` (the command carries its arguments, `--bind 127.0.0.1:0` among them) and
/// waits for the line that names its URL.
pub fn serve(mut command: Command) -> Instance {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("linklease serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("the server prints its URL");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    Instance { child, url }
}
