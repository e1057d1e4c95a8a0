//! The consumer's browser steps (spec §3) as plain HTML forms that work without JavaScript:
//! `/l/{token}` → `/flow` (factor, code) → `/view` (payload, form) → `/logout`.
//!
//! The link token leaves the address bar at once (303 to `/flow`); a GET never sends a code,
//! issues a lease or consumes a use. Every POST carries a CSRF token bound to its flow or lease
//! and is refused when `Origin` or `Sec-Fetch-Site` says it came from another site.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

use linklease_grant::contact::mask;
use linklease_grant::{FactorKind, FieldSpec, FieldType, FlowId, SecretString};
use linklease_lease::cookie::{self, FLOW_COOKIE, LEASE_COOKIE};
use linklease_lease::submission::SubmissionRequest;
use linklease_lease::{Holder, Step};
use linklease_store::StoreError;
use linklease_store::flows::{self, StoredFlow};
use linklease_store::grants;

use crate::client_ip::{client_ip, user_agent};
use crate::error::{ApiError, Code};
use crate::exchange::{self, Next, Visitor};
use crate::lease_auth::{self, CsrfScope, LeaseHolder, Presented, csrf_matches, request_cookie};
use crate::lease_ops;
use crate::pages;
use crate::routes::resource;
use crate::{AppState, run};

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(128 * 1024)
            .error_handler(form_error),
    )
    .service(resource(pages::STYLESHEET_PATH).route(web::get().to(stylesheet)))
    .service(resource("/l/{token}").route(web::get().to(visit)))
    .service(resource("/flow").route(web::get().to(flow_page)))
    .service(resource("/flow/factor").route(web::post().to(factor)))
    .service(resource("/flow/otp").route(web::post().to(otp)))
    .service(resource("/flow/resend").route(web::post().to(resend)))
    .service(resource("/view").route(web::get().to(view)))
    .service(resource("/view/submit").route(web::post().to(submit)))
    .service(resource("/logout").route(web::post().to(logout)));
}

/// A form the handler never sees (wrong content type 415, too large 413, malformed 400): the
/// HTML error page with actix's status, not its plain-text message.
fn form_error(e: actix_web::error::UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::ResponseError as _;
    let status = e.status_code();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        Code::PayloadTooLarge
    } else {
        Code::InvalidRequest
    };
    let mut page = error_page(&ApiError::new(code, "the form could not be read"));
    *page.status_mut() = status;
    actix_web::error::InternalError::from_response(e, page).into()
}

type Form = web::Form<Vec<(String, String)>>;

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The CSP of every HTML page: only linklease's own stylesheet, no script at all.
const PAGE_CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .body(markup.into_string())
}

/// `GET /assets/app.css`.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(pages::STYLESHEET)
}

/// The page for an error: its status, a sentence a person understands.
fn error_page(e: &ApiError) -> HttpResponse {
    let (title, text) = match e.code {
        Code::LinkInvalid => (
            "Link not found",
            "This link is not valid. Check that you copied all of it.",
        ),
        Code::GrantExpired => (
            "Link expired",
            "This link has expired. Ask the sender for a new one.",
        ),
        Code::GrantUsed => ("Link already used", "This link has already been used."),
        Code::GrantRevoked => ("Link withdrawn", "The sender has withdrawn this link."),
        Code::GrantLocked => (
            "Link locked",
            "This link is locked after too many wrong attempts. Ask the sender for a new one.",
        ),
        Code::FlowExpired => (
            "Please start again",
            "This session has ended. Open the link again.",
        ),
        Code::LeaseInvalid => (
            "Session ended",
            "Your session has ended. Open the link again.",
        ),
        Code::TooManyRequests => ("Too many attempts", "Please wait a moment and try again."),
        Code::Unavailable => (
            "Service busy",
            "The service is busy. Please try again in a moment.",
        ),
        Code::Forbidden => ("Not allowed", "This request is not allowed from here."),
        _ => ("Something went wrong", "Please go back and try again."),
    };
    // Spec §3: an inactive grant's page is 410, whatever the reason (the API says 423 locked).
    let status = if e.code == Code::GrantLocked {
        StatusCode::GONE
    } else {
        e.code.status()
    };
    let mut response = html(status, pages::message(title, text));
    if let Some(seconds) = e.retry_after
        && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

fn set_cookie(response: &mut HttpResponse, cookie: linklease_lease::Cookie<'static>) {
    if let Ok(value) = header::HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn visitor(state: &AppState, req: &HttpRequest) -> Visitor {
    Visitor {
        holder: Holder::Browser,
        ip: ip(state, req),
        user_agent: user_agent(req),
        tenant: None,
    }
}

fn ip(state: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    client_ip(req, &state.config.trust_proxy)
}

/// Refuses a POST that another site made the browser send.
///
/// `Sec-Fetch-Site`, when present, must be `same-origin` (or `none`, a typed URL), and `Origin`,
/// when present, must be our exact origin, with one exception: `null`. Our pages send
/// `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` even for our own
/// forms; those requests rest on `Sec-Fetch-Site` where the browser sends it, and always on the
/// CSRF token every form carries.
fn same_origin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let cross = ApiError::new(Code::Forbidden, "cross-site requests are refused");
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Err(cross);
    }
    match header("origin") {
        Some(origin) if origin != "null" && origin != origin_of(&state.config.public_url) => {
            Err(cross)
        }
        _ => Ok(()),
    }
}

/// `scheme://host[:port]` of a URL: what browsers send as `Origin`.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

fn flow_csrf(state: &AppState, flow: FlowId) -> String {
    lease_auth::csrf_for(state, CsrfScope::Flow, flow.0)
}

fn flow_csrf_matches(state: &AppState, flow: FlowId, presented: &str) -> bool {
    lease_auth::csrf_valid(state, CsrfScope::Flow, flow.0, presented)
}

/// The flow named by the request's cookie.
fn current_flow(state: &AppState, secret: Option<&str>) -> Result<StoredFlow, ApiError> {
    let gone = || ApiError::new(Code::FlowExpired, "no flow");
    let secret = secret.ok_or_else(gone)?;
    let hash = exchange::cookie_hash(state, secret);
    state
        .store
        .read(|c| flows::by_cookie(c, &hash))
        .map_err(|e| match e {
            StoreError::NotFound => gone(),
            other => other.into(),
        })
}

/// `GET /l/{token}`: open a flow, set its cookie, leave the token behind.
pub async fn visit(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let visitor = visitor(&state, &req);
    if let Err(e) = state.rate_limit.check(visitor.ip) {
        return error_page(&e);
    }
    let token = path.into_inner();
    // A browser that holds an open flow of this link goes on with it (a second tab, a second
    // click in the mail, the back button).
    let held = request_cookie(&req, FLOW_COOKIE);
    let opened = run(&state, move |state| {
        exchange::open(state, &token, &visitor, held.as_deref())
    })
    .await;
    match opened {
        Ok(opened) => {
            let mut response = see_other("/flow");
            if let Some(secret) = &opened.cookie_secret {
                set_cookie(
                    &mut response,
                    cookie::flow(secret.expose(), state.limits.flow_ttl),
                );
            }
            response
        }
        Err(e) => error_page(&e),
    }
}

/// `GET /flow`: the current step.
pub async fn flow_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Err(e) = state.rate_limit.check(ip(&state, &req)) {
        return error_page(&e);
    }
    let secret = request_cookie(&req, FLOW_COOKIE);
    let result = run(&state, move |state| {
        let stored = current_flow(state, secret.as_deref())?;
        let record = state
            .store
            .read(|c| grants::for_lease(c, stored.flow.grant))?;
        Ok((stored, record))
    })
    .await;
    match result {
        Ok((stored, record)) => match record.status(state.clock.now()) {
            linklease_grant::GrantStatus::Active => {
                render_step(&state, &stored, &record.grant, None)
            }
            status => error_page(&ApiError::grant_inactive(status)),
        },
        Err(e) => error_page(&e),
    }
}

fn render_step(
    state: &AppState,
    stored: &StoredFlow,
    grant: &linklease_grant::Grant,
    error: Option<&ApiError>,
) -> HttpResponse {
    let flow = &stored.flow;
    if !flow.is_open(state.clock.now()) {
        return error_page(&ApiError::new(Code::FlowExpired, "flow over"));
    }
    let csrf = flow_csrf(state, flow.id);
    let status = error.map_or(StatusCode::OK, |e| e.code.status());
    let markup = match flow.step {
        Step::Visited => {
            let alert = error.map(|e| pages::Alert {
                message: factor_problem(grant.factor_kind, e),
                field: (grant.factor_kind != FactorKind::None).then(|| "factor".to_owned()),
            });
            pages::factor(grant.factor_kind, &csrf, alert.as_ref())
        }
        Step::FactorPassed | Step::OtpSent => {
            let to = grant
                .otp_to
                .as_deref()
                .map(|to| mask(grant.otp_channel, to))
                .unwrap_or_default();
            let alert = error.map(|e| pages::Alert {
                message: code_problem(e),
                field: matches!(e.code, Code::OtpMismatch | Code::OtpExpired)
                    .then(|| "code".to_owned()),
            });
            pages::otp(&to, &csrf, alert.as_ref(), flow.step == Step::OtpSent)
        }
        Step::Leased | Step::Dead => return error_page(&ApiError::new(Code::FlowExpired, "over")),
    };
    let mut response = html(status, markup);
    if let Some(seconds) = error.and_then(|e| e.retry_after)
        && let Ok(value) = header::HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// What to tell a person whose factor was refused.
fn factor_problem(kind: FactorKind, e: &ApiError) -> String {
    let what = match kind {
        FactorKind::Dob => "That date of birth does not match.",
        FactorKind::Pin => "That PIN does not match.",
        FactorKind::None => "That did not work.",
    };
    match (e.code, e.attempts_left) {
        (Code::FactorMismatch, Some(left)) => format!("{what} Attempts left: {left}."),
        (Code::InvalidRequest, _) => "Enter it to continue.".to_owned(),
        _ => e.detail.clone(),
    }
}

/// What to tell a person whose code was refused.
fn code_problem(e: &ApiError) -> String {
    match (e.code, e.attempts_left) {
        (Code::OtpMismatch, Some(left)) => {
            format!(
                "That code is not right. Check the digits and try again. Attempts left: {left}."
            )
        }
        (Code::OtpExpired, _) => "That code has expired. Ask for a new one below.".to_owned(),
        (Code::TooManyRequests, Some(_)) | (Code::TooManyRequests, None) => match e.retry_after {
            Some(seconds) => format!("Please wait {seconds} seconds before asking for a new code."),
            None => "No more codes can be sent. Open your link again.".to_owned(),
        },
        _ => e.detail.clone(),
    }
}

/// Runs one POST step of the flow and answers with the next page.
async fn flow_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Form,
    step: fn(&AppState, StoredFlow, &Form, &Visitor) -> Result<Next, ApiError>,
) -> HttpResponse {
    let visitor = visitor(&state, &req);
    if let Err(e) = state
        .rate_limit
        .check(visitor.ip)
        .and_then(|()| same_origin(&state, &req))
    {
        return error_page(&e);
    }
    let secret = request_cookie(&req, FLOW_COOKIE);
    let result = run(&state, move |state| {
        let stored = current_flow(state, secret.as_deref())?;
        if !field(&form, "csrf").is_some_and(|c| flow_csrf_matches(state, stored.flow.id, c)) {
            return Err(ApiError::new(
                Code::Forbidden,
                "the form has expired; reload the page",
            ));
        }
        let outcome = step(state, stored.clone(), &form, &visitor);
        Ok((stored, outcome))
    })
    .await;
    let (stored, outcome) = match result {
        Ok(pair) => pair,
        Err(e) => return error_page(&e),
    };
    // A code recorded as sent goes to the courier now, with no thread held while it works.
    let outcome = match outcome {
        Ok(next) => exchange::deliver(&state, next).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Next::Otp { .. }) => see_other("/flow"),
        Ok(Next::Lease(issued)) => {
            let mut response = see_other("/view");
            let ttl = issued.lease.expires_at - state.clock.now();
            set_cookie(&mut response, cookie::lease(issued.token.expose(), ttl));
            set_cookie(&mut response, cookie::removal(FLOW_COOKIE));
            response
        }
        Err(e)
            if matches!(
                e.code,
                Code::FactorMismatch
                    | Code::OtpMismatch
                    | Code::OtpExpired
                    | Code::InvalidRequest
                    | Code::TooManyRequests
                    | Code::Unavailable
            ) =>
        {
            // Show the same step again with what went wrong.
            let fresh = run(&state, move |state| {
                let again = state.store.read(|c| flows::get(c, stored.flow.id))?;
                let record = state
                    .store
                    .read(|c| grants::for_lease(c, again.flow.grant))?;
                Ok((again, record))
            })
            .await;
            match fresh {
                Ok((again, record)) => render_step(&state, &again, &record.grant, Some(&e)),
                Err(other) => error_page(&other),
            }
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /flow/factor`.
pub async fn factor(state: web::Data<AppState>, req: HttpRequest, form: Form) -> HttpResponse {
    flow_post(state, req, form, |state, stored, form, visitor| {
        let value = field(form, "factor").map(SecretString::new);
        exchange::factor(state, stored, value, visitor)
    })
    .await
}

/// `POST /flow/otp`.
pub async fn otp(state: web::Data<AppState>, req: HttpRequest, form: Form) -> HttpResponse {
    flow_post(state, req, form, |state, stored, form, visitor| {
        let code = SecretString::new(field(form, "code").unwrap_or_default());
        exchange::check_otp(state, stored, &code, visitor).map(|l| Next::Lease(Box::new(l)))
    })
    .await
}

/// `POST /flow/resend`.
pub async fn resend(state: web::Data<AppState>, req: HttpRequest, form: Form) -> HttpResponse {
    flow_post(state, req, form, |state, stored, _, visitor| {
        exchange::resend(state, stored, visitor)
    })
    .await
}

/// The lease of the browser's cookie, fully checked.
async fn browser_lease(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<LeaseHolder, ApiError> {
    // The page's own form fields carry the CSRF token; the cookie alone is read here.
    let presented = Presented::of(req)
        .filter(|p| p.from_cookie)
        .ok_or_else(|| ApiError::new(Code::LeaseInvalid, "no lease"))?
        .for_page();
    let ip = ip(state, req);
    let user_agent = user_agent(req);
    run(state, move |state| {
        lease_auth::authorize(state, &presented, ip, user_agent)
    })
    .await
}

/// `GET /view`: the payload and, if allowed, the form.
pub async fn view(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let holder = match browser_lease(&state, &req).await {
        Ok(holder) => holder,
        Err(e) => return error_page(&e),
    };
    render_view(&state, holder, pages::FormState::default(), StatusCode::OK).await
}

/// The view page, reading the payload (and recording `payload.read`) when the grant allows it.
async fn render_view(
    state: &web::Data<AppState>,
    holder: LeaseHolder,
    form: pages::FormState,
    status: StatusCode,
) -> HttpResponse {
    let csrf = lease_auth::csrf_token(state, holder.lease.id);
    let permissions = holder.grant.grant.permissions.clone();
    let payload = if permissions.read {
        let read = run(state, move |state| {
            let raw = lease_ops::read_payload(state, &holder)?;
            serde_json::from_str::<Value>(raw.get()).map_err(ApiError::internal)
        });
        match read.await {
            Ok(payload) => Some(payload),
            Err(e) => return error_page(&e),
        }
    } else {
        None
    };
    html(
        status,
        pages::view(payload.as_ref(), &permissions, &csrf, &form),
    )
}

/// The form id of a problem's field path: `fields.note` → `f.note`, `creates[1].name` →
/// `c.1.name`, `creates` → the first record.
fn form_id(path: &str) -> Option<String> {
    if let Some(name) = path.strip_prefix("fields.") {
        return Some(format!("f.{name}"));
    }
    let rest = path.strip_prefix("creates")?;
    if rest.is_empty() {
        return Some("c.0".to_owned());
    }
    let (index, name) = rest.strip_prefix('[')?.split_once("].")?;
    Some(format!("c.{index}.{name}"))
}

/// Turns a form value into the JSON its field type expects; an unparsable value stays a
/// string so validation names the field.
fn typed(spec: Option<&FieldSpec>, raw: &str) -> Value {
    match spec.map(|s| s.kind) {
        Some(FieldType::Boolean) => Value::Bool(raw == "true" || raw == "on"),
        Some(FieldType::Integer) => raw.parse::<i64>().map_or_else(|_| raw.into(), Value::from),
        Some(FieldType::Number) => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| raw.into(), Value::Number),
        _ => Value::String(raw.to_owned()),
    }
}

/// Builds the submission from the form: `f.NAME` fields, `c.I.NAME` child records; empty inputs
/// are left out, and so are child rows left entirely empty.
fn submission_from_form(grant: &linklease_grant::Grant, form: &Form) -> SubmissionRequest {
    let permissions = &grant.permissions;
    let mut fields = BTreeMap::new();
    let mut rows: BTreeMap<u32, Map<String, Value>> = BTreeMap::new();
    for (key, raw) in form.iter() {
        if raw.is_empty() {
            continue;
        }
        if let Some(name) = key.strip_prefix("f.") {
            fields.insert(
                name.to_owned(),
                typed(permissions.write_fields.get(name), raw),
            );
        } else if let Some(rest) = key.strip_prefix("c.")
            && let Some((i, name)) = rest.split_once('.')
            && let Ok(i) = i.parse::<u32>()
        {
            let spec = permissions.create.as_ref().and_then(|c| c.fields.get(name));
            rows.entry(i)
                .or_default()
                .insert(name.to_owned(), typed(spec, raw));
        }
    }
    SubmissionRequest {
        fields,
        creates: rows.into_values().collect(),
        idempotency_key: None,
    }
}

/// `POST /view/submit`.
pub async fn submit(state: web::Data<AppState>, req: HttpRequest, form: Form) -> HttpResponse {
    if let Err(e) = same_origin(&state, &req) {
        return error_page(&e);
    }
    let holder = match browser_lease(&state, &req).await {
        Ok(holder) => holder,
        Err(e) => return error_page(&e),
    };
    if !field(&form, "csrf").is_some_and(|c| csrf_matches(&state, holder.lease.id, c)) {
        return error_page(&ApiError::new(Code::Forbidden, "bad csrf"));
    }
    let request = submission_from_form(&holder.grant.grant, &form);
    let retry = (holder.clone(), form.0.clone());
    match run(&state, move |state| {
        lease_ops::submit(state, &holder, &request)
    })
    .await
    {
        Ok(accepted) => {
            let more = accepted.grant_status == linklease_grant::GrantStatus::Active;
            let mut response = html(StatusCode::OK, pages::thanks(more));
            if !more {
                set_cookie(&mut response, cookie::removal(LEASE_COOKIE));
            }
            response
        }
        Err(e) if !e.errors.is_empty() || e.code == Code::CreateLimitExceeded => {
            let (holder, values) = retry;
            let mut errors: Vec<pages::Alert> = e
                .errors
                .iter()
                .map(|p| pages::Alert {
                    message: format!(
                        "{}: {}",
                        p.field
                            .rsplit('.')
                            .next()
                            .map(pages::label)
                            .unwrap_or_default(),
                        p.message
                    ),
                    field: form_id(&p.field),
                })
                .collect();
            if errors.is_empty() {
                errors.push(pages::Alert {
                    message: e.detail.clone(),
                    field: Some("c.0".to_owned()),
                });
            }
            let form = pages::FormState {
                values: values.into_iter().filter(|(k, _)| k != "csrf").collect(),
                errors,
            };
            render_view(&state, holder, form, e.code.status()).await
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /logout`.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, form: Form) -> HttpResponse {
    if let Err(e) = same_origin(&state, &req) {
        return error_page(&e);
    }
    let holder = match browser_lease(&state, &req).await {
        Ok(holder) => holder,
        Err(e) => {
            let mut response = error_page(&e);
            set_cookie(&mut response, cookie::removal(LEASE_COOKIE));
            return response;
        }
    };
    if !field(&form, "csrf").is_some_and(|c| csrf_matches(&state, holder.lease.id, c)) {
        return error_page(&ApiError::new(Code::Forbidden, "bad csrf"));
    }
    match run(&state, move |state| lease_ops::end(state, &holder)).await {
        Ok(()) => {
            let mut response = html(StatusCode::OK, pages::logged_out());
            set_cookie(&mut response, cookie::removal(LEASE_COOKIE));
            response
        }
        Err(e) => error_page(&e),
    }
}
