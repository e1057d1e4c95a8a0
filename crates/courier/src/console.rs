//! `console`: prints every code to standard output. For development only: the codes are shown
//! in clear to whoever can read the terminal or the service's captured output.

use std::io::Write as _;

use linklease_grant::OtpChannel;

use crate::{Courier, CourierError, OtpMessage, unsupported};

/// Prints one line per code to stdout (deliberately not through `log`). Shows the codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleCourier;

impl Courier for ConsoleCourier {
    fn deliver(&self, message: &OtpMessage) -> Result<(), CourierError> {
        if !matches!(message.channel, OtpChannel::Email | OtpChannel::Sms) {
            return Err(unsupported(self.kind(), message.channel));
        }
        let line = format!(
            "[linklease console courier] {} code for {} (grant {}): {}\n",
            message.channel.as_str(),
            message.to,
            message.grant_id,
            message.code.expose(),
        );
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "console"
    }
}
