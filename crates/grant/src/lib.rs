#![doc = include_str!("../README.md")]

pub mod cidr;
pub mod commitment;
pub mod contact;
pub mod factor;
pub mod hex;
pub mod ids;
pub mod limits;
pub mod micros;
pub mod permissions;
pub mod problems;
pub mod request;
pub mod secret;
pub mod status;
pub mod token;

use std::collections::BTreeMap;
use time::OffsetDateTime;

pub use cidr::IpBlock;
pub use commitment::Commitments;
pub use contact::OtpChannel;
pub use factor::FactorKind;
pub use ids::{ApiKeyId, ClientId, FlowId, GrantId, LeaseId, SubmissionId, TenantId};
pub use permissions::{CreateSpec, FieldSpec, FieldType, Permissions};
pub use problems::{FieldProblem, Problems};
pub use request::{GrantRequest, GrantRequestError, Issued, Issuer};
pub use secret::{Purpose, SecretHash, SecretKeys, SecretString};
pub use status::{GrantState, GrantStatus};
pub use token::LinkToken;

/// The system's secure random source failed (it practically never does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// A grant as stored: every field is fixed at creation and never updated.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// UUIDv7.
    pub id: GrantId,
    /// The owning tenant.
    pub tenant: TenantId,
    /// The API key that created it.
    pub api_key: ApiKeyId,
    /// When it was created (microsecond precision).
    pub created_at: OffsetDateTime,
    /// When it stops being usable.
    pub expires_at: OffsetDateTime,
    /// SHA-256 of the stored payload bytes (compact JSON, keys sorted): for the originator's
    /// API only; the audit log shows the salted commitment where there is one.
    pub payload_sha256: [u8; 32],
    /// The salt and the salted payload commitment (absent on grants made before salts).
    pub commitments: Option<Commitments>,
    /// What a lease may do.
    pub permissions: Permissions,
    /// Uses before the grant is used up.
    pub max_uses: u32,
    /// Lease lifetime in seconds.
    pub lease_ttl_seconds: u32,
    /// The second factor's kind.
    pub factor_kind: FactorKind,
    /// The keyed verifier of the factor value (absent for `none`).
    pub factor_verifier: Option<SecretHash>,
    /// How the OTP is delivered.
    pub otp_channel: OtpChannel,
    /// Where the OTP goes.
    pub otp_to: Option<String>,
    /// Where the consumer must come from; empty allows any address.
    pub allowed_ip_blocks: Vec<IpBlock>,
    /// The originator's tags.
    pub labels: BTreeMap<String, String>,
    /// The grant this one replaced.
    pub supersedes: Option<GrantId>,
}

impl Grant {
    /// How audit details show this grant's payload (see [`commitment::payload_evidence`]).
    pub fn payload_evidence(&self) -> (&'static str, String) {
        commitment::payload_evidence(self.commitments.as_ref(), &self.payload_sha256)
    }
}

/// A grant about to be stored, with what is stored beside it.
#[derive(Clone, Debug)]
pub struct NewGrant {
    /// The immutable grant.
    pub grant: Grant,
    /// The payload as compact JSON with sorted keys (what `payload_sha256` covers).
    pub payload: String,
    /// The keyed hash of the link token.
    pub token_hash: SecretHash,
}
