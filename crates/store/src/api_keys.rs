//! Originator API keys (`llk_…`): shown once, stored as a keyed hash, looked up by that hash.

use diesel::prelude::*;
use ring::rand::SecureRandom;
use serde::Serialize;
use std::collections::BTreeSet;
use time::OffsetDateTime;

use linklease_grant::secret::random_token;
use linklease_grant::{ApiKeyId, Purpose, SecretKeys, SecretString, TenantId, micros};

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::schema::api_keys;
use crate::{DbConn, StoreError, parse_id};

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scope {
    /// Create and revoke grants.
    #[serde(rename = "grants:write")]
    GrantsWrite,
    /// Read grants.
    #[serde(rename = "grants:read")]
    GrantsRead,
    /// Read submissions.
    #[serde(rename = "submissions:read")]
    SubmissionsRead,
    /// Read the tenant's audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::GrantsWrite,
        Scope::GrantsRead,
        Scope::SubmissionsRead,
        Scope::AuditRead,
    ];

    /// The stable name (`grants:write`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::GrantsWrite => "grants:write",
            Scope::GrantsRead => "grants:read",
            Scope::SubmissionsRead => "submissions:read",
            Scope::AuditRead => "audit:read",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Parses a comma-separated list; `None` if any entry is unknown or the list is empty.
    pub fn parse_list(s: &str) -> Option<BTreeSet<Scope>> {
        let set = s
            .split(',')
            .map(|p| Scope::parse(p.trim()))
            .collect::<Option<BTreeSet<_>>>()?;
        (!set.is_empty()).then_some(set)
    }
}

fn join(scopes: &BTreeSet<Scope>) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// An API key's record (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys)]
struct ApiKeyRow {
    id: String,
    tenant_id: String,
    scopes: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKey {
            id: parse_id(&row.id)?,
            tenant: parse_id(&row.tenant_id)?,
            scopes: Scope::parse_list(&row.scopes)
                .ok_or_else(|| StoreError::Corrupt(format!("api key {} scopes", row.id)))?,
            created_at: micros::from_micros(row.created_at),
            revoked_at: row.revoked_at.map(micros::from_micros),
        })
    }
}

/// Creates a key for `tenant` and returns its record and the key (to show once).
pub fn create(
    conn: &mut DbConn,
    keys: &SecretKeys,
    tenant: TenantId,
    scopes: &BTreeSet<Scope>,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<(ApiKey, SecretString), StoreError> {
    let now = micros::truncate(now);
    let random = |e: linklease_grant::RandomError| StoreError::Internal(e.to_string());
    let id = ApiKeyId::new(now, rng).map_err(random)?;
    let secret = random_token("llk_", rng).map_err(random)?;
    let hash = keys.hash(Purpose::ApiKey, &[secret.expose().as_bytes()]);
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(id.to_string()),
            api_keys::tenant_id.eq(tenant.to_string()),
            api_keys::key_hash.eq(&hash.0[..]),
            api_keys::scopes.eq(join(scopes)),
            api_keys::created_at.eq(micros::to_micros(now)),
        ))
        .execute(conn)?;
    audit::append(
        conn,
        &NewEvent {
            at: now,
            tenant: Some(tenant),
            grant: None,
            lease: None,
            kind: AuditKind::ApiKeyCreated,
            actor: Actor::operator(),
            detail: serde_json::json!({ "api_key_id": id, "scopes": join(scopes) }),
        },
    )?;
    let key = ApiKey {
        id,
        tenant,
        scopes: scopes.clone(),
        created_at: now,
        revoked_at: None,
    };
    Ok((key, secret))
}

/// Finds the live key whose keyed hash matches `presented`. Unknown and revoked keys are both
/// `NotFound`: the caller answers `unauthenticated` either way.
pub fn authenticate(
    conn: &mut DbConn,
    keys: &SecretKeys,
    presented: &str,
) -> Result<ApiKey, StoreError> {
    let hash = keys.hash(Purpose::ApiKey, &[presented.as_bytes()]);
    let row: ApiKeyRow = api_keys::table
        .filter(api_keys::key_hash.eq(&hash.0[..]))
        .filter(api_keys::revoked_at.is_null())
        .select(ApiKeyRow::as_select())
        .get_result(conn)?;
    ApiKey::try_from(row)
}

/// Revokes a key; revoking a revoked key changes nothing and records nothing.
pub fn revoke(conn: &mut DbConn, id: ApiKeyId, now: OffsetDateTime) -> Result<ApiKey, StoreError> {
    let now = micros::truncate(now);
    let changed = diesel::update(api_keys::table)
        .filter(api_keys::id.eq(id.to_string()))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(micros::to_micros(now)))
        .execute(conn)?;
    let key = get(conn, id)?;
    if changed == 1 {
        audit::append(
            conn,
            &NewEvent {
                at: now,
                tenant: Some(key.tenant),
                grant: None,
                lease: None,
                kind: AuditKind::ApiKeyRevoked,
                actor: Actor::operator(),
                detail: serde_json::json!({ "api_key_id": id }),
            },
        )?;
    }
    Ok(key)
}

/// One key's record.
pub fn get(conn: &mut DbConn, id: ApiKeyId) -> Result<ApiKey, StoreError> {
    let row: ApiKeyRow = api_keys::table
        .find(id.to_string())
        .select(ApiKeyRow::as_select())
        .get_result(conn)?;
    ApiKey::try_from(row)
}

/// Every key of a tenant, oldest first.
pub fn list(conn: &mut DbConn, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
    api_keys::table
        .filter(api_keys::tenant_id.eq(tenant.to_string()))
        .order(api_keys::id.asc())
        .select(ApiKeyRow::as_select())
        .load(conn)?
        .into_iter()
        .map(ApiKey::try_from)
        .collect()
}
