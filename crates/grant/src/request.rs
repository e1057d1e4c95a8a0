//! A grant as an originator asks for it, and its validation into a [`NewGrant`].

use ring::digest;
use ring::rand::SecureRandom;
use serde::Deserialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

use crate::cidr::IpBlock;
use crate::contact::OtpChannel;
use crate::factor::{self, FactorKind};
use crate::permissions::Permissions;
use crate::problems::Problems;
use crate::secret::{SecretKeys, SecretString};
use crate::token::LinkToken;
use crate::{
    ApiKeyId, Commitments, Grant, GrantId, NewGrant, RandomError, TenantId, limits, micros,
};

/// The body of `POST /v1/grants` (and each element of a batch). Unknown fields are refused so
/// that a typo such as `max_use` is an error, not a silently ignored wish.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// The data shown to the consumer: a JSON object of at most 64 KiB.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    /// What a lease may do (default: read only).
    #[serde(default)]
    pub permissions: Permissions,
    /// Accepted submissions or completions before the grant is used up (default 1).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Lease lifetime in seconds, 60-3600 (default 900).
    #[serde(default)]
    pub lease_ttl_seconds: Option<u32>,
    /// RFC 3339 expiry, in the future and at most 90 days ahead (default: 7 days).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// The second factor (default: none).
    #[serde(default)]
    pub factor: FactorRequest,
    /// Where the one-time code goes (default: no OTP step).
    #[serde(default)]
    pub otp: OtpRequest,
    /// CIDR blocks the consumer must come from; empty allows any address.
    #[serde(default)]
    pub allowed_ip_blocks: Vec<String>,
    /// The originator's own tags (e.g. `case_id`); filterable, not secret.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An active grant of the same tenant that this one replaces (revoked atomically).
    #[serde(default)]
    pub supersedes: Option<GrantId>,
}

/// The second factor of a grant request.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FactorRequest {
    /// `none`, `dob` or `pin`.
    pub kind: FactorKind,
    /// The value the consumer must present; only a keyed verifier of it is stored.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub value: Option<SecretString>,
}

impl Default for FactorRequest {
    fn default() -> Self {
        Self {
            kind: FactorKind::None,
            value: None,
        }
    }
}

/// The one-time-code destination of a grant request.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OtpRequest {
    /// `none`, `email` or `sms`.
    pub channel: OtpChannel,
    /// The address or E.164 number; required unless the channel is `none`.
    #[serde(default)]
    pub to: Option<String>,
}

impl Default for OtpRequest {
    fn default() -> Self {
        Self {
            channel: OtpChannel::None,
            to: None,
        }
    }
}

/// Who is creating grants.
#[derive(Clone, Copy, Debug)]
pub struct Issuer {
    /// The tenant the grants belong to.
    pub tenant: TenantId,
    /// The API key creating them.
    pub api_key: ApiKeyId,
}

/// Why a grant request was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantRequestError {
    /// The payload is larger than 64 KiB.
    #[error(
        "payload is {bytes} bytes; at most {} are allowed",
        limits::MAX_PAYLOAD_BYTES
    )]
    PayloadTooLarge {
        /// Its compact JSON size.
        bytes: usize,
    },
    /// One or more fields are invalid.
    #[error("{0}")]
    Invalid(Problems),
    /// The system random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A validated grant and the link token that opens it (shown once, then forgotten).
#[derive(Debug)]
pub struct Issued {
    /// What is stored.
    pub grant: NewGrant,
    /// The plain token, for the creation response only.
    pub token: LinkToken,
}

impl GrantRequest {
    /// Validates the request at `now` and turns it into a grant ready to store.
    pub fn issue(
        self,
        issuer: Issuer,
        now: OffsetDateTime,
        keys: &SecretKeys,
        rng: &dyn SecureRandom,
    ) -> Result<Issued, GrantRequestError> {
        let now = micros::truncate(now);
        let mut problems = Problems::default();

        let payload = match &self.payload {
            serde_json::Value::Object(_) => {
                serde_json::to_string(&self.payload).unwrap_or_default()
            }
            _ => {
                problems.push("payload", "must be a JSON object");
                String::new()
            }
        };
        if payload.len() > limits::MAX_PAYLOAD_BYTES {
            return Err(GrantRequestError::PayloadTooLarge {
                bytes: payload.len(),
            });
        }

        self.permissions.check("permissions", &mut problems);

        let max_uses = self.max_uses.unwrap_or(limits::DEFAULT_MAX_USES);
        if !(1..=limits::MAX_USES).contains(&max_uses) {
            problems.push(
                "max_uses",
                format_args!("must be 1 to {}", limits::MAX_USES),
            );
        }
        let lease_ttl_seconds = self
            .lease_ttl_seconds
            .unwrap_or(limits::DEFAULT_LEASE_TTL_SECONDS);
        if !(limits::MIN_LEASE_TTL_SECONDS..=limits::MAX_LEASE_TTL_SECONDS)
            .contains(&lease_ttl_seconds)
        {
            problems.push(
                "lease_ttl_seconds",
                format_args!(
                    "must be {} to {}",
                    limits::MIN_LEASE_TTL_SECONDS,
                    limits::MAX_LEASE_TTL_SECONDS
                ),
            );
        }

        let expires_at = micros::truncate(
            self.expires_at
                .unwrap_or(now + limits::DEFAULT_GRANT_LIFETIME),
        );
        if expires_at <= now {
            problems.push("expires_at", "must be in the future");
        } else if expires_at > now + limits::MAX_GRANT_LIFETIME {
            problems.push("expires_at", "must be at most 90 days ahead");
        }

        let normalized_factor = check_factor(&self.factor, now, &mut problems);
        let otp_to = check_otp(&self.otp, &mut problems);

        if self.allowed_ip_blocks.len() > limits::MAX_IP_BLOCKS {
            problems.push(
                "allowed_ip_blocks",
                format_args!("at most {} blocks", limits::MAX_IP_BLOCKS),
            );
        }
        let mut allowed_ip_blocks = Vec::with_capacity(self.allowed_ip_blocks.len());
        for (i, block) in self.allowed_ip_blocks.iter().enumerate() {
            match block.parse::<IpBlock>() {
                Ok(b) => allowed_ip_blocks.push(b),
                Err(e) => problems.push(format!("allowed_ip_blocks[{i}]"), e),
            }
        }

        check_labels(&self.labels, &mut problems);

        if !problems.is_empty() {
            return Err(GrantRequestError::Invalid(problems));
        }

        let id = GrantId::new(now, rng)?;
        let token = LinkToken::generate(rng)?;
        let factor_verifier = normalized_factor
            .as_deref()
            .map(|value| factor::verifier(keys, id, self.factor.kind, value));
        let payload_sha256 = sha256(payload.as_bytes());
        let commitments = Some(Commitments::new(rng, payload.as_bytes())?);
        let grant = Grant {
            id,
            tenant: issuer.tenant,
            api_key: issuer.api_key,
            created_at: now,
            expires_at,
            payload_sha256,
            commitments,
            permissions: self.permissions,
            max_uses,
            lease_ttl_seconds,
            factor_kind: self.factor.kind,
            factor_verifier,
            otp_channel: self.otp.channel,
            otp_to,
            allowed_ip_blocks,
            labels: self.labels,
            supersedes: self.supersedes,
        };
        Ok(Issued {
            grant: NewGrant {
                token_hash: token.hash(keys),
                payload,
                grant,
            },
            token,
        })
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Returns the normalised factor value, if the kind needs one and it is valid.
fn check_factor(
    req: &FactorRequest,
    now: OffsetDateTime,
    problems: &mut Problems,
) -> Option<String> {
    match (req.kind, &req.value) {
        (FactorKind::None, None) => None,
        (FactorKind::None, Some(_)) => {
            problems.push("factor.value", "must be absent when kind is none");
            None
        }
        (_, None) => {
            problems.push("factor.value", "is required for this kind");
            None
        }
        (kind, Some(value)) => match factor::normalize(kind, value.expose(), now) {
            Ok(normalized) => Some(normalized),
            Err(e) => {
                problems.push("factor.value", e);
                None
            }
        },
    }
}

fn check_otp(req: &OtpRequest, problems: &mut Problems) -> Option<String> {
    match (req.channel, &req.to) {
        (OtpChannel::None, None) => None,
        (_, None) => {
            problems.push("otp.to", "is required for this channel");
            None
        }
        (channel, Some(to)) => match channel.validate(to) {
            Ok(()) => Some(to.clone()),
            Err(why) => {
                problems.push("otp.to", why);
                None
            }
        },
    }
}

fn check_labels(labels: &BTreeMap<String, String>, problems: &mut Problems) {
    if labels.len() > limits::MAX_LABELS {
        problems.push(
            "labels",
            format_args!("at most {} labels", limits::MAX_LABELS),
        );
    }
    for (key, value) in labels {
        let key_ok = (1..=64).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !key_ok {
            problems.push("labels", "keys must be 1-64 of A-Z a-z 0-9 _ . -");
        } else if value.chars().count() > limits::MAX_LABEL_VALUE_CHARS
            || value.chars().any(char::is_control)
        {
            problems.push(
                format!("labels.{key}"),
                format_args!(
                    "must be at most {} characters, without control characters",
                    limits::MAX_LABEL_VALUE_CHARS
                ),
            );
        }
    }
}
