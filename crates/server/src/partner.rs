//! Partner authentication: HTTP Basic `client_id:client_secret`, from one of the client's
//! allowed address blocks. Unknown ids, wrong secrets, revoked clients and calls from outside
//! the client's blocks all get the same `unauthenticated` answer; the address is checked
//! before the secret, which is not even looked at from elsewhere, so a stolen secret cannot be
//! confirmed from an address the client may not call from.
//!
//! Limits (`rate_limit::PartnerLimits`): an attempt is taken from the address's budget before
//! anything else and given back once the credentials prove right; the request then counts
//! against the client's own budget.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::LocalBoxFuture;
use std::net::IpAddr;

use linklease_grant::ClientId;
use linklease_lease::Holder;
use linklease_store::StoreError;
use linklease_store::clients::{self, Client};

use crate::client_ip::{client_ip, user_agent};
use crate::error::{ApiError, Code};
use crate::exchange::{Visitor, ip_allowed};
use crate::{AppState, blocking};

/// An authenticated partner web app.
#[derive(Debug)]
pub struct Partner {
    /// The client's record.
    pub client: Client,
    /// Where the request came from.
    pub ip: Option<IpAddr>,
    /// Its user agent.
    pub user_agent: Option<String>,
}

impl Partner {
    /// The partner as the flow's visitor.
    pub fn visitor(&self) -> Visitor {
        Visitor {
            holder: Holder::Partner(self.client.id),
            ip: self.ip,
            user_agent: self.user_agent.clone(),
            tenant: Some(self.client.tenant),
        }
    }
}

fn unauthenticated() -> ApiError {
    let mut err = ApiError::new(
        Code::Unauthenticated,
        "valid client credentials, from one of the client's allowed addresses, are required \
         (HTTP Basic client_id:client_secret)",
    );
    err.challenge = Some("Basic realm=\"linklease\"");
    err
}

/// The `(client_id, secret)` of a Basic authorization header.
fn basic(req: &HttpRequest) -> Option<(ClientId, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 512 {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.parse().ok()?, secret.to_owned()))
}

impl FromRequest for Partner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credentials = basic(req);
        let ip = state
            .as_ref()
            .and_then(|s| client_ip(req, &s.config.trust_proxy));
        let user_agent = user_agent(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            state.partner_limits.attempt(ip)?;
            let (id, secret) = credentials.ok_or_else(unauthenticated)?;
            let client = blocking(&state, move |store| store.read(|c| clients::get(c, id)))
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => unauthenticated(),
                    other => other.into(),
                })?;
            // The address first: from outside the client's blocks the secret is not checked,
            // so a right one and a wrong one get the same answer after the same work.
            if !ip_allowed(&client.allowed_ip_blocks, ip) {
                log::debug!(
                    target: "linklease::auth",
                    "partner client {} refused: {} is outside its allowed blocks",
                    client.id,
                    ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string())
                );
                return Err(unauthenticated());
            }
            if client.revoked_at.is_some() || !client.verify_secret(&state.keys, &secret) {
                return Err(unauthenticated());
            }
            state.partner_limits.authenticated(ip, client.id)?;
            Ok(Partner {
                client,
                ip,
                user_agent,
            })
        })
    }
}
