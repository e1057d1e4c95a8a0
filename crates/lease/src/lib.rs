#![doc = include_str!("../README.md")]

pub mod cookie;
pub mod flow;
pub mod keys;
pub mod lease;
pub mod limits;
pub mod otp;
pub mod submission;
pub mod token;

/// The cookie type the `cookie` module builds.
pub use ::cookie::Cookie;
pub use flow::{Effect, Event, Flow, FlowError, Holder, SentOtp, Step, Transition};
pub use keys::{KeyError, KeySet, SigningKey};
pub use limits::FlowLimits;
pub use submission::{SubmissionError, SubmissionRequest};
pub use token::{LeaseClaims, Scope, TokenError};

/// The grant domain this crate builds on.
pub use linklease_grant as grant;
