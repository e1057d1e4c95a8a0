//! Audit events: appended in the same transaction as the change they record, so a change that
//! cannot be recorded does not happen. The tamper-evident chain (`prev_hash`, `hash`) is added
//! by the audit chain on top of this table.

use diesel::prelude::*;
use serde::Serialize;
use time::OffsetDateTime;

use linklease_grant::{GrantId, LeaseId, TenantId, micros};

use crate::schema::audit_events;
use crate::{DbConn, StoreError};

/// What happened. The names are the stable strings of the product contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AuditKind {
    TenantCreated,
    UseCompleted,
    GrantCreated,
    GrantRevoked,
    GrantLocked,
    GrantUsed,
    LinkVisited,
    FactorPassed,
    FactorFailed,
    OtpSent,
    OtpPassed,
    OtpFailed,
    LeaseIssued,
    LeaseRefreshed,
    LeaseEnded,
    PayloadRead,
    SubmissionAccepted,
    SubmissionRejected,
    ApiKeyCreated,
    ApiKeyRevoked,
    ClientCreated,
    ClientRevoked,
    KeysRotated,
}

impl AuditKind {
    /// The stable name (`grant.created`, …).
    pub fn as_str(self) -> &'static str {
        use AuditKind::*;
        match self {
            TenantCreated => "tenant.created",
            UseCompleted => "use.completed",
            GrantCreated => "grant.created",
            GrantRevoked => "grant.revoked",
            GrantLocked => "grant.locked",
            GrantUsed => "grant.used",
            LinkVisited => "link.visited",
            FactorPassed => "factor.passed",
            FactorFailed => "factor.failed",
            OtpSent => "otp.sent",
            OtpPassed => "otp.passed",
            OtpFailed => "otp.failed",
            LeaseIssued => "lease.issued",
            LeaseRefreshed => "lease.refreshed",
            LeaseEnded => "lease.ended",
            PayloadRead => "payload.read",
            SubmissionAccepted => "submission.accepted",
            SubmissionRejected => "submission.rejected",
            ApiKeyCreated => "apikey.created",
            ApiKeyRevoked => "apikey.revoked",
            ClientCreated => "client.created",
            ClientRevoked => "client.revoked",
            KeysRotated => "keys.rotated",
        }
    }
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `operator`, `apikey`, `client`, `visitor`, `lease` or `system`.
    pub kind: &'static str,
    /// The API key, client or lease id, where there is one.
    pub id: Option<String>,
    /// The client address, where the act came over the network.
    pub ip: Option<String>,
    /// The client's user agent, where it sent one.
    pub user_agent: Option<String>,
}

impl Actor {
    /// The operator at the console (CLI).
    pub fn operator() -> Self {
        Self {
            kind: "operator",
            id: None,
            ip: None,
            user_agent: None,
        }
    }

    /// The broker itself (for example a supersede or a lock it decides).
    pub fn system() -> Self {
        Self {
            kind: "system",
            ..Self::operator()
        }
    }
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// When.
    pub at: OffsetDateTime,
    /// Whose.
    pub tenant: Option<TenantId>,
    /// About which grant.
    pub grant: Option<GrantId>,
    /// About which lease.
    pub lease: Option<LeaseId>,
    /// What.
    pub kind: AuditKind,
    /// Who.
    pub actor: Actor,
    /// Facts worth keeping; never a secret.
    pub detail: serde_json::Value,
}

#[derive(Insertable)]
#[diesel(table_name = audit_events)]
struct EventRow<'a> {
    at: i64,
    tenant_id: Option<String>,
    grant_id: Option<String>,
    lease_id: Option<String>,
    kind: &'a str,
    actor_kind: &'a str,
    actor_id: Option<&'a str>,
    actor_ip: Option<&'a str>,
    actor_user_agent: Option<&'a str>,
    detail: String,
}

/// Appends `event`. Call it inside the transaction that makes the change.
pub fn append(conn: &mut DbConn, event: &NewEvent) -> Result<(), StoreError> {
    let row = EventRow {
        at: micros::to_micros(event.at),
        tenant_id: event.tenant.map(|t| t.to_string()),
        grant_id: event.grant.map(|g| g.to_string()),
        lease_id: event.lease.map(|l| l.to_string()),
        kind: event.kind.as_str(),
        actor_kind: event.actor.kind,
        actor_id: event.actor.id.as_deref(),
        actor_ip: event.actor.ip.as_deref(),
        actor_user_agent: event.actor.user_agent.as_deref(),
        detail: event.detail.to_string(),
    };
    diesel::insert_into(audit_events::table)
        .values(&row)
        .execute(conn)?;
    Ok(())
}

/// A stored event, as read back.
#[derive(Clone, Debug, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct Event {
    /// Position in the log.
    pub seq: i64,
    /// Microseconds since the epoch.
    pub at: i64,
    /// Tenant id.
    pub tenant_id: Option<String>,
    /// Grant id.
    pub grant_id: Option<String>,
    /// Lease id.
    pub lease_id: Option<String>,
    /// The stable kind name.
    pub kind: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor address.
    pub actor_ip: Option<String>,
    /// Actor user agent.
    pub actor_user_agent: Option<String>,
    /// JSON detail.
    pub detail: String,
}

/// Every event of one grant, oldest first.
pub fn for_grant(conn: &mut DbConn, grant: GrantId) -> Result<Vec<Event>, StoreError> {
    Ok(audit_events::table
        .filter(audit_events::grant_id.eq(grant.to_string()))
        .order(audit_events::seq.asc())
        .select(Event::as_select())
        .load(conn)?)
}

/// Every event, oldest first (operators and tests; the auditor API pages through this).
pub fn all(conn: &mut DbConn) -> Result<Vec<Event>, StoreError> {
    Ok(audit_events::table
        .order(audit_events::seq.asc())
        .select(Event::as_select())
        .load(conn)?)
}
