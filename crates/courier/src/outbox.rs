//! `outbox:PATH`: appends one JSON object per code to a file (spec §5). Tests and demos read
//! the codes from it; the file holds codes in clear, so it is created readable by its owner only.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use linklease_grant::OtpChannel;

use crate::{Courier, CourierError, OtpMessage, SpecError, unsupported};

/// Appends `{"at","channel","to","grant_id","code","text"}` lines to a file.
#[derive(Debug)]
pub struct OutboxCourier {
    path: PathBuf,
    file: Mutex<File>,
}

impl OutboxCourier {
    /// Opens `path` for appending, creating it with mode 0600 if it is missing (an existing
    /// file keeps its mode).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|source| SpecError::Outbox {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The file the codes go to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Courier for OutboxCourier {
    fn deliver(&self, message: &OtpMessage) -> Result<(), CourierError> {
        if !matches!(message.channel, OtpChannel::Email | OtpChannel::Sms) {
            return Err(unsupported(self.kind(), message.channel));
        }
        let mut line = message.to_json()?;
        line.push('\n');
        // One write of the whole line under the lock: concurrent deliveries never interleave.
        // Nothing under the lock panics, so a poisoned lock is still a sound one.
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes())?;
        file.flush()?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "outbox"
    }
}
