//! Tenants: the unit of isolation.

use diesel::prelude::*;
use ring::rand::SecureRandom;
use serde::Serialize;
use time::OffsetDateTime;

use linklease_grant::{TenantId, micros};

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::schema::tenants;
use crate::{DbConn, StoreError, parse_id};

/// A tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its unique name.
    pub name: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
struct TenantRow {
    id: String,
    name: String,
    created_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(row: TenantRow) -> Result<Self, StoreError> {
        Ok(Tenant {
            id: parse_id(&row.id)?,
            name: row.name,
            created_at: micros::from_micros(row.created_at),
        })
    }
}

/// Whether `name` is acceptable: 1-64 of `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Creates a tenant. A taken name is a `Conflict`.
pub fn create(
    conn: &mut DbConn,
    name: &str,
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<Tenant, StoreError> {
    if !valid_name(name) {
        return Err(StoreError::Conflict(
            "tenant names are 1-64 of a-z 0-9 - _ . starting with a letter or digit".into(),
        ));
    }
    let id = TenantId::new(now, rng).map_err(|e| StoreError::Internal(e.to_string()))?;
    let now = micros::truncate(now);
    let row = TenantRow {
        id: id.to_string(),
        name: name.to_owned(),
        created_at: micros::to_micros(now),
    };
    diesel::insert_into(tenants::table)
        .values(&row)
        .execute(conn)?;
    audit::start_chain(conn, &row.id)?;
    audit::append(
        conn,
        &NewEvent {
            at: now,
            tenant: Some(id),
            grant: None,
            lease: None,
            kind: AuditKind::TenantCreated,
            actor: Actor::operator(),
            detail: serde_json::json!({ "name": name }),
        },
    )?;
    Tenant::try_from(row)
}

/// Finds a tenant by id or by name.
pub fn resolve(conn: &mut DbConn, id_or_name: &str) -> Result<Tenant, StoreError> {
    let row: TenantRow = tenants::table
        .filter(tenants::id.eq(id_or_name).or(tenants::name.eq(id_or_name)))
        .select(TenantRow::as_select())
        .get_result(conn)?;
    Tenant::try_from(row)
}

/// Every tenant, by name.
pub fn list(conn: &mut DbConn) -> Result<Vec<Tenant>, StoreError> {
    tenants::table
        .order(tenants::name.asc())
        .select(TenantRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Tenant::try_from)
        .collect()
}
