//! The product's limits (spec §2 and §6) in one place.

use time::Duration;

/// The largest payload or submission, as compact JSON bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// A grant expires after this unless the originator says otherwise.
pub const DEFAULT_GRANT_LIFETIME: Duration = Duration::days(7);
/// No grant lives longer than this.
pub const MAX_GRANT_LIFETIME: Duration = Duration::days(90);
/// Lease lifetime unless the grant says otherwise.
pub const DEFAULT_LEASE_TTL_SECONDS: u32 = 900;
/// Shortest lease a grant may ask for.
pub const MIN_LEASE_TTL_SECONDS: u32 = 60;
/// Longest lease a grant may ask for; also the absolute cap of a refreshed lease.
pub const MAX_LEASE_TTL_SECONDS: u32 = 3600;
/// Uses unless the grant says otherwise.
pub const DEFAULT_MAX_USES: u32 = 1;
/// Most uses a grant may allow.
pub const MAX_USES: u32 = 1000;
/// Most child records a grant may allow.
pub const MAX_CREATES: u32 = 100;
/// Most declared fields in `write_fields` or `create.fields`.
pub const MAX_FIELDS: usize = 100;
/// Largest `max_length` of a string field.
pub const MAX_FIELD_LENGTH: u32 = 64 * 1024;
/// Most values of an `enum`.
pub const MAX_ENUM_VALUES: usize = 100;
/// Most labels on a grant.
pub const MAX_LABELS: usize = 32;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 256;
/// Most `label.K=V` filters in one listing of grants (each is a join in the query).
pub const MAX_LABEL_FILTERS: usize = 16;
/// Most allowed IP blocks on a grant or client.
pub const MAX_IP_BLOCKS: usize = 64;
/// Most grants in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// Failed factor attempts per grant (all flows together) that lock it.
pub const FACTOR_FAILURES_TO_LOCK: u32 = 5;
/// Failed factor and OTP attempts together per grant that lock it.
pub const ALL_FAILURES_TO_LOCK: u32 = 10;
