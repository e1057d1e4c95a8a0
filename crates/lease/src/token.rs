//! The lease token: a JWT signed with EdDSA (Ed25519), `kid` in the header.
//!
//! [`verify`] is the only way a token is accepted. It pins the algorithm (EdDSA only, so
//! `alg: none` and HMAC confusion are refused), the issuer and audience (`linklease`), the
//! required claims, and checks `exp` against the injected clock with no leeway.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header, Validation};
use linklease_grant::{GrantId, LeaseId, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keys::{KeySet, SigningKey};
use crate::limits::FlowLimits;

/// The `iss` and `aud` of every lease token.
pub const AUDIENCE: &str = "linklease";

/// Seconds of clock skew tolerated on `exp`: none, as every instance checks with its own clock
/// against tokens it or a peer signed, and leases are minutes long.
pub const LEEWAY_SECONDS: i64 = 0;

/// What a lease may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the payload.
    Read,
    /// Submit fields and child records. (Completing needs only a live lease: a read-only
    /// grant is used by reading it and saying so.)
    Write,
}

/// The claims of a lease token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseClaims {
    /// Always [`AUDIENCE`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The grant.
    pub sub: GrantId,
    /// The lease.
    pub jti: LeaseId,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// What the lease may do.
    pub scopes: Vec<Scope>,
}

impl LeaseClaims {
    /// Claims for lease `lease` on `grant`, valid from `issued_at` until `expires_at`.
    pub fn new(
        grant: GrantId,
        lease: LeaseId,
        issued_at: OffsetDateTime,
        expires_at: OffsetDateTime,
        scopes: Vec<Scope>,
    ) -> Self {
        Self {
            iss: AUDIENCE.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: grant,
            jti: lease,
            iat: issued_at.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            scopes,
        }
    }

    /// Whether the lease may do `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Why a token was refused. Every variant is `lease_invalid` to the client; the variant is
/// for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or claims of the wrong shape.
    #[error("malformed lease token")]
    Malformed,
    /// Not EdDSA, or no `kid`.
    #[error("lease token with a refused header")]
    Header,
    /// `kid` names no key that may verify now.
    #[error("lease token signed by an unknown or expired key")]
    UnknownKey,
    /// The signature, issuer or audience is wrong.
    #[error("lease token failed verification")]
    Invalid,
    /// `exp` has passed.
    #[error("lease token expired")]
    Expired,
    /// Signing failed (a broken key).
    #[error("could not sign a lease token")]
    Sign,
}

/// Signs `claims` with `key`: the JWT `jsonwebtoken::encode` would make (base64url of the
/// header's and the claims' JSON, then of the signature), signed with the key pair `key` keeps
/// parsed. `jsonwebtoken` parses the PKCS#8 document again for every signature, which derives the
/// public key each time and made signing cost about twice what it does here.
pub fn sign(claims: &LeaseClaims, key: &SigningKey) -> Result<SecretString, TokenError> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let header = serde_json::to_vec(&header).map_err(|_| TokenError::Sign)?;
    let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
    let mut token = String::with_capacity((header.len() + claims.len() + 64) * 4 / 3 + 4);
    URL_SAFE_NO_PAD.encode_string(header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(SecretString::new(token))
}

/// The one validation every token goes through (see the module docs).
fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::EdDSA);
    v.algorithms = vec![Algorithm::EdDSA];
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    v.leeway = 0;
    // `exp` is checked below against the injected clock, not the system clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v
}

/// Verifies `token` at `now` with the key its `kid` names; returns its claims.
pub fn verify(
    token: &str,
    keys: &KeySet,
    now: OffsetDateTime,
    limits: &FlowLimits,
) -> Result<LeaseClaims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(TokenError::Header);
    }
    let kid = header.kid.ok_or(TokenError::Header)?;
    let key = keys
        .verifier(&kid, now, limits)
        .ok_or(TokenError::UnknownKey)?;
    let data =
        jsonwebtoken::decode::<LeaseClaims>(token, key.decoding(), &validation()).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            }
        })?;
    let claims = data.claims;
    if now.unix_timestamp() >= claims.exp + LEEWAY_SECONDS {
        return Err(TokenError::Expired);
    }
    // A token claiming a life longer than any lease can have was not made by us.
    if claims.exp - claims.iat > limits.lease_absolute.whole_seconds() || claims.exp < claims.iat {
        return Err(TokenError::Invalid);
    }
    Ok(claims)
}
