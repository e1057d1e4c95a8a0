//! Partner web-app credentials: an id and a secret (`lls_…`, shown once, stored as a keyed
//! hash), the IP blocks they may call from, and a revocation with reason and time.

use diesel::prelude::*;
use ring::rand::SecureRandom;
use serde::Serialize;
use time::OffsetDateTime;

use linklease_grant::secret::random_token;
use linklease_grant::{
    ClientId, IpBlock, Purpose, SecretHash, SecretKeys, SecretString, TenantId, micros,
};

use crate::audit::{self, Actor, AuditKind, NewEvent};
use crate::schema::clients;
use crate::{DbConn, StoreError, parse_id};

/// A partner client's record (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Client {
    /// Its id (the HTTP Basic user name).
    pub id: ClientId,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// A name for people.
    pub name: String,
    /// Where it may call from; empty allows any address.
    pub allowed_ip_blocks: Vec<IpBlock>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Why.
    pub revoke_reason: Option<String>,
    #[serde(skip)]
    secret_hash: Option<SecretHash>,
}

impl Client {
    /// Whether `presented` is this client's secret (constant time). Revoked clients never match.
    pub fn verify_secret(&self, keys: &SecretKeys, presented: &str) -> bool {
        self.revoked_at.is_none()
            && self.secret_hash.is_some_and(|stored| {
                keys.verify(Purpose::ClientSecret, &[presented.as_bytes()], &stored)
            })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = clients)]
struct ClientRow {
    id: String,
    tenant_id: String,
    name: String,
    secret_hash: Vec<u8>,
    allowed_ip_blocks: String,
    created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;
    fn try_from(row: ClientRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("client {} {what}", row.id));
        Ok(Client {
            id: parse_id(&row.id)?,
            tenant: parse_id(&row.tenant_id)?,
            allowed_ip_blocks: serde_json::from_str(&row.allowed_ip_blocks)
                .map_err(|_| corrupt("ip blocks"))?,
            secret_hash: Some(
                SecretHash::from_slice(&row.secret_hash).ok_or_else(|| corrupt("secret hash"))?,
            ),
            name: row.name,
            created_at: micros::from_micros(row.created_at),
            revoked_at: row.revoked_at.map(micros::from_micros),
            revoke_reason: row.revoke_reason,
        })
    }
}

/// Creates a client and returns its record and secret (to show once).
pub fn create(
    conn: &mut DbConn,
    keys: &SecretKeys,
    tenant: TenantId,
    name: &str,
    allowed_ip_blocks: &[IpBlock],
    now: OffsetDateTime,
    rng: &dyn SecureRandom,
) -> Result<(Client, SecretString), StoreError> {
    let now = micros::truncate(now);
    let random = |e: linklease_grant::RandomError| StoreError::Internal(e.to_string());
    let id = ClientId::new(now, rng).map_err(random)?;
    let secret = random_token("lls_", rng).map_err(random)?;
    let hash = keys.hash(Purpose::ClientSecret, &[secret.expose().as_bytes()]);
    let blocks = serde_json::to_string(allowed_ip_blocks)
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    diesel::insert_into(clients::table)
        .values((
            clients::id.eq(id.to_string()),
            clients::tenant_id.eq(tenant.to_string()),
            clients::name.eq(name),
            clients::secret_hash.eq(&hash.0[..]),
            clients::allowed_ip_blocks.eq(&blocks),
            clients::created_at.eq(micros::to_micros(now)),
        ))
        .execute(conn)?;
    audit::append(
        conn,
        &NewEvent {
            at: now,
            tenant: Some(tenant),
            grant: None,
            lease: None,
            kind: AuditKind::ClientCreated,
            actor: Actor::operator(),
            detail: serde_json::json!({ "client_id": id, "name": name, "allowed_ip_blocks": allowed_ip_blocks }),
        },
    )?;
    let client = Client {
        id,
        tenant,
        name: name.to_owned(),
        allowed_ip_blocks: allowed_ip_blocks.to_vec(),
        created_at: now,
        revoked_at: None,
        revoke_reason: None,
        secret_hash: Some(hash),
    };
    Ok((client, secret))
}

/// One client.
pub fn get(conn: &mut DbConn, id: ClientId) -> Result<Client, StoreError> {
    let row: ClientRow = clients::table
        .find(id.to_string())
        .select(ClientRow::as_select())
        .get_result(conn)?;
    Client::try_from(row)
}

/// Revokes a client with a reason; a second revocation keeps the first reason and time.
pub fn revoke(
    conn: &mut DbConn,
    id: ClientId,
    reason: &str,
    now: OffsetDateTime,
) -> Result<Client, StoreError> {
    let now = micros::truncate(now);
    let changed = diesel::update(clients::table)
        .filter(clients::id.eq(id.to_string()))
        .filter(clients::revoked_at.is_null())
        .set((
            clients::revoked_at.eq(micros::to_micros(now)),
            clients::revoke_reason.eq(reason),
        ))
        .execute(conn)?;
    let client = get(conn, id)?;
    if changed == 1 {
        audit::append(
            conn,
            &NewEvent {
                at: now,
                tenant: Some(client.tenant),
                grant: None,
                lease: None,
                kind: AuditKind::ClientRevoked,
                actor: Actor::operator(),
                detail: serde_json::json!({ "client_id": id, "reason": reason }),
            },
        )?;
    }
    Ok(client)
}

/// Every client of a tenant, oldest first.
pub fn list(conn: &mut DbConn, tenant: TenantId) -> Result<Vec<Client>, StoreError> {
    clients::table
        .filter(clients::tenant_id.eq(tenant.to_string()))
        .order(clients::id.asc())
        .select(ClientRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Client::try_from)
        .collect()
}
