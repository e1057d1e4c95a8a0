#![doc = include_str!("../README.md")]

/// The grant domain this crate builds on.
pub use linklease_grant as grant;
