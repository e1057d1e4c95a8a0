//! The HTTP suite: a real linklease server on a loopback port, a real database (SQLite, and
//! PostgreSQL when configured), driven over HTTP. Laid out like the routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod attacks;
mod audit;
mod bounds;
mod browser;
mod client_errors;
mod commitments;
mod exchange;
mod grants;
mod openapi_client;
mod ops;
mod partner;
mod protocol_doc;
mod secrets;
mod sends;
mod visits;
