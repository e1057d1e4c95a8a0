//! The consumer's pages, rendered with `maud` (compile-time templates: checked by rustc,
//! escaped by default). Every page works without JavaScript, loads only `/assets/app.css` from
//! linklease itself, has `lang`, labelled fields, an error summary linked to its fields, and a
//! heading per page. No page carries a secret except what the person typed.

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use std::collections::HashMap;

use linklease_grant::{FactorKind, FieldSpec, FieldType, Permissions};

/// The stylesheet, served at [`STYLESHEET_PATH`].
pub const STYLESHEET: &str = include_str!("../assets/app.css");
/// Where the stylesheet is served.
pub const STYLESHEET_PATH: &str = "/assets/app.css";

/// Every page's frame.
pub fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " – secure link" }
                link rel="stylesheet" href=(STYLESHEET_PATH);
            }
            body {
                header { p { "Secure link" } }
                main id="main" {
                    h1 { (title) }
                    (content)
                }
                footer { p { "This page does not use cookies for tracking. Close it when you are done." } }
            }
        }
    }
}

/// What went wrong on a step, shown at the top and beside the field.
#[derive(Clone, Debug, Default)]
pub struct Alert {
    /// The sentence.
    pub message: String,
    /// The field it is about (its id), if any.
    pub field: Option<String>,
}

fn error_summary(alerts: &[Alert]) -> Markup {
    html! {
        @if !alerts.is_empty() {
            div.error-summary role="alert" aria-labelledby="error-summary-title" tabindex="-1" {
                h2 id="error-summary-title" { "There is a problem" }
                ul {
                    @for alert in alerts {
                        li {
                            @if let Some(field) = &alert.field {
                                a href={ "#" (field) } { (alert.message) }
                            } @else {
                                (alert.message)
                            }
                        }
                    }
                }
            }
        }
    }
}

fn csrf_input(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// The factor step (or, for a grant without one, the Continue button).
pub fn factor(kind: FactorKind, csrf: &str, alert: Option<&Alert>) -> Markup {
    let alerts: Vec<Alert> = alert.cloned().into_iter().collect();
    let error = alert.map(|a| a.message.as_str());
    let title = match kind {
        FactorKind::None => "Open your information",
        FactorKind::Dob | FactorKind::Pin => "Confirm it is you",
    };
    layout(
        title,
        html! {
            (error_summary(&alerts))
            form method="post" action="/flow/factor" novalidate {
                (csrf_input(csrf))
                @match kind {
                    FactorKind::None => {
                        p { "Someone sent you this link to share some information with you." }
                    }
                    FactorKind::Dob => {
                        div.field.field-error[error.is_some()] {
                            label for="factor" { "Your date of birth" }
                            span.hint id="factor-hint" { "Day, month and year" }
                            @if let Some(e) = error { span.error-message id="factor-error" { (e) } }
                            input type="date" id="factor" name="factor" required autocomplete="bday"
                                aria-describedby=(describedby(error.is_some(), "factor"))
                                aria-invalid=[error.map(|_| "true")];
                        }
                    }
                    FactorKind::Pin => {
                        div.field.field-error[error.is_some()] {
                            label for="factor" { "Your PIN" }
                            span.hint id="factor-hint" { "The number you were given with this link" }
                            @if let Some(e) = error { span.error-message id="factor-error" { (e) } }
                            input type="password" id="factor" name="factor" inputmode="numeric"
                                autocomplete="off" required
                                aria-describedby=(describedby(error.is_some(), "factor"))
                                aria-invalid=[error.map(|_| "true")];
                        }
                    }
                }
                div.actions { button type="submit" { "Continue" } }
            }
        },
    )
}

fn describedby(error: bool, id: &str) -> String {
    if error {
        format!("{id}-hint {id}-error")
    } else {
        format!("{id}-hint")
    }
}

/// The one-time code step.
pub fn otp(sent_to: &str, csrf: &str, alert: Option<&Alert>, sent: bool) -> Markup {
    let alerts: Vec<Alert> = alert.cloned().into_iter().collect();
    let error = alert.and_then(|a| a.field.as_ref().map(|_| a.message.as_str()));
    layout(
        "Enter your code",
        html! {
            (error_summary(&alerts))
            @if sent {
                p.notice { "We sent a 6-digit code to " strong { (sent_to) } ". It works for 10 minutes." }
            } @else {
                p.notice { "We could not send your code yet. Ask for a new one below." }
            }
            form method="post" action="/flow/otp" novalidate {
                (csrf_input(csrf))
                div.field.field-error[error.is_some()] {
                    label for="code" { "Code" }
                    span.hint id="code-hint" { "6 digits" }
                    @if let Some(e) = error { span.error-message id="code-error" { (e) } }
                    input id="code" name="code" inputmode="numeric" autocomplete="one-time-code"
                        pattern="[0-9 ]*" maxlength="7" required
                        aria-describedby=(describedby(error.is_some(), "code"))
                        aria-invalid=[error.map(|_| "true")];
                }
                div.actions { button type="submit" { "Verify" } }
            }
            h2 { "No code?" }
            p { "Codes can take a minute to arrive. You can ask for a new one 30 seconds after the last; a new code replaces the old one." }
            form method="post" action="/flow/resend" {
                (csrf_input(csrf))
                button.secondary type="submit" { "Send a new code" }
            }
        },
    )
}

/// Turns a payload key into a label: `patient_id` → "Patient id", `resultAck` → "Result ack".
pub fn label(key: &str) -> String {
    let mut words = String::with_capacity(key.len() + 4);
    let mut previous_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == '.' {
            words.push(' ');
            previous_lower = false;
        } else if c.is_uppercase() && previous_lower {
            words.push(' ');
            words.extend(c.to_lowercase());
            previous_lower = false;
        } else {
            words.push(c);
            previous_lower = c.is_lowercase() || c.is_ascii_digit();
        }
    }
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => key.to_owned(),
    }
}

/// A JSON value as nested lists.
pub fn value(v: &Value) -> Markup {
    html! {
        @match v {
            Value::Object(map) => {
                dl.payload {
                    @for (k, v) in map {
                        dt { (label(k)) }
                        dd { (value(v)) }
                    }
                }
            }
            Value::Array(items) => {
                ul { @for item in items { li { (value(item)) } } }
            }
            Value::String(s) => { (s) }
            Value::Bool(true) => { "Yes" }
            Value::Bool(false) => { "No" }
            Value::Null => { "—" }
            other => { (other.to_string()) }
        }
    }
}

/// What the person entered and what was wrong with it, for re-showing the form.
#[derive(Clone, Debug, Default)]
pub struct FormState {
    /// Entered values by field id (`f.note`, `c.0.name`).
    pub values: HashMap<String, String>,
    /// Problems by field id.
    pub errors: Vec<Alert>,
}

impl FormState {
    fn error(&self, id: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|a| a.field.as_deref() == Some(id))
            .map(|a| a.message.as_str())
    }
}

fn input(id: &str, name: &str, spec: &FieldSpec, state: &FormState) -> Markup {
    let value = state.values.get(id).map(String::as_str);
    let error = state.error(id);
    let error_id = format!("{id}-error");
    html! {
        @match (spec.kind, &spec.allowed) {
            (FieldType::Boolean, _) => {
                div.field.check.field-error[error.is_some()] {
                    @if let Some(e) = error { span.error-message id=(error_id) { (e) } }
                    input type="checkbox" id=(id) name=(id) value="true"
                        checked[value.is_some_and(|v| v == "true")]
                        aria-describedby=[error.map(|_| &error_id)];
                    label for=(id) { (label(name)) }
                }
            }
            (kind, allowed) => {
                div.field.field-error[error.is_some()] {
                    label for=(id) { (label(name)) }
                    @if let Some(max) = spec.max_length {
                        @if allowed.is_none() { span.hint { "Up to " (max) " characters" } }
                    }
                    @if let Some(e) = error { span.error-message id=(error_id) { (e) } }
                    @match (kind, allowed) {
                        (FieldType::String, Some(options)) => {
                            select id=(id) name=(id) aria-describedby=[error.map(|_| &error_id)] {
                                option value="" { "Choose…" }
                                @for o in options {
                                    option value=(o) selected[value == Some(o.as_str())] { (o) }
                                }
                            }
                        }
                        (FieldType::Date, _) => {
                            input type="date" id=(id) name=(id) value=[value]
                                aria-describedby=[error.map(|_| &error_id)];
                        }
                        (FieldType::Integer, _) => {
                            input type="number" step="1" inputmode="numeric" id=(id) name=(id)
                                value=[value] aria-describedby=[error.map(|_| &error_id)];
                        }
                        (FieldType::Number, _) => {
                            input type="number" step="any" inputmode="decimal" id=(id) name=(id)
                                value=[value] aria-describedby=[error.map(|_| &error_id)];
                        }
                        _ => {
                            input type="text" id=(id) name=(id) maxlength=[spec.max_length]
                                value=[value] aria-describedby=[error.map(|_| &error_id)];
                        }
                    }
                }
            }
        }
    }
}

/// The payload and, if the grant allows writes, the form.
pub fn view(
    payload: Option<&Value>,
    permissions: &Permissions,
    csrf: &str,
    state: &FormState,
) -> Markup {
    layout(
        "Your information",
        html! {
            (error_summary(&state.errors))
            @if let Some(payload) = payload {
                (value(payload))
            }
            @if permissions.can_write() {
                h2 { "Your answer" }
                form method="post" action="/view/submit" novalidate {
                    (csrf_input(csrf))
                    @for (name, spec) in &permissions.write_fields {
                        (input(&format!("f.{name}"), name, spec, state))
                    }
                    @if let Some(create) = &permissions.create {
                        p { "Add up to " (create.max) " " (label(&create.kind).to_lowercase()) " entries. Leave the rest empty." }
                        @for i in 0..create.max {
                            fieldset id={ "c." (i) } {
                                legend { (label(&create.kind)) " " (i + 1) }
                                @for (name, spec) in &create.fields {
                                    (input(&format!("c.{i}.{name}"), name, spec, state))
                                }
                            }
                        }
                    }
                    div.actions { button type="submit" { "Send" } }
                }
            }
            form method="post" action="/logout" {
                (csrf_input(csrf))
                div.actions { button.secondary type="submit" { "Log out" } }
            }
        },
    )
}

/// After a submission.
pub fn thanks(more_allowed: bool) -> Markup {
    layout(
        "Thank you",
        html! {
            p.notice.success role="status" { "Your answer was received." }
            @if more_allowed {
                p { a href="/view" { "Back to your information" } }
            } @else {
                p { "This link is now used up. You can close this page." }
            }
        },
    )
}

/// After logout.
pub fn logged_out() -> Markup {
    layout(
        "You are logged out",
        html! { p { "You can close this page. To look again, open your link again." } },
    )
}

/// A dead end: a title and one or two sentences a person understands.
pub fn message(title: &str, text: &str) -> Markup {
    layout(title, html! { p { (text) } })
}
