//! Originator authentication: `Authorization: Bearer llk_…`, looked up by its keyed hash.
//! Unknown, malformed and revoked keys get the same `unauthenticated` answer.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use std::net::IpAddr;

use linklease_grant::{Issuer, TenantId};
use linklease_store::StoreError;
use linklease_store::api_keys::{self, ApiKey, Scope};
use linklease_store::audit::Actor;

use crate::client_ip::{client_ip, user_agent};
use crate::error::{ApiError, Code};
use crate::{AppState, blocking};

/// An authenticated originator: an API key of one tenant.
#[derive(Debug)]
pub struct Originator {
    /// The key's record.
    pub key: ApiKey,
    /// Where the request came from.
    pub ip: Option<IpAddr>,
    /// Its user agent.
    pub user_agent: Option<String>,
}

impl Originator {
    /// Fails with `forbidden` unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.key.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!("this API key lacks the scope {}", scope.as_str()),
            ))
        }
    }

    /// The tenant every query of this request is scoped to.
    pub fn tenant(&self) -> TenantId {
        self.key.tenant
    }

    /// Who creates grants.
    pub fn issuer(&self) -> Issuer {
        Issuer {
            tenant: self.key.tenant,
            api_key: self.key.id,
        }
    }

    /// The audit actor.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: "apikey",
            id: Some(self.key.id.to_string()),
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        Code::Unauthenticated,
        "a valid API key is required (Authorization: Bearer llk_…)",
    )
}

/// The bearer credential of a request, if it sent one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequest for Originator {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = bearer(req)
            .filter(|t| t.starts_with("llk_") && t.len() <= 128)
            .map(str::to_owned);
        let ip = state
            .as_ref()
            .and_then(|s| client_ip(req, &s.config.trust_proxy));
        let user_agent = user_agent(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let presented = presented.ok_or_else(unauthenticated)?;
            let keys = state.keys.clone();
            let key = blocking(&state, move |store| {
                store.read(|c| api_keys::authenticate(c, &keys, &presented))
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound => unauthenticated(),
                other => other.into(),
            })?;
            Ok(Originator {
                key,
                ip,
                user_agent,
            })
        })
    }
}
