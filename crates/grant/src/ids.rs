//! Identifier newtypes. Every id is a UUIDv7 (time-ordered), made from an injected clock and RNG.

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

/// Makes a UUIDv7 for `now` with random bits from `rng`.
pub fn new_v7(now: OffsetDateTime, rng: &dyn SecureRandom) -> Result<Uuid, crate::RandomError> {
    let mut random = [0u8; 10];
    rng.fill(&mut random).map_err(|_| crate::RandomError)?;
    let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id for `now`.
            pub fn new(now: OffsetDateTime, rng: &dyn SecureRandom) -> Result<Self, crate::RandomError> {
                new_v7(now, rng).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A tenant: the unit of isolation.
    TenantId
);
id_type!(
    /// An originator API key.
    ApiKeyId
);
id_type!(
    /// A partner web app's client credential.
    ClientId
);
id_type!(
    /// A grant.
    GrantId
);
id_type!(
    /// A lease (a session on one grant).
    LeaseId
);
id_type!(
    /// A flow (one attempt to turn a link into a lease).
    FlowId
);
id_type!(
    /// A submission.
    SubmissionId
);
