//! The browser's cookies, built with the `cookie` crate. Both are `__Host-` cookies: Secure,
//! Path=/, no Domain, so no subdomain or plain-HTTP page can set or read them.
//!
//! The lease cookie is `SameSite=Strict`: another site can never make the browser use it. The
//! flow cookie is `SameSite=Lax`: links arrive in webmail and chat apps, and a browser does not
//! send a Strict cookie on the redirect chain of a navigation that began on another site, so
//! `GET /l/{token}` → `303 /flow` would lose the flow it just opened. Lax still keeps it off
//! every cross-site POST, subresource and frame; every step that changes anything is a POST
//! that also needs the flow's CSRF token and a same-origin `Origin`/`Sec-Fetch-Site`
//! (docs/DECISIONS.md, "flow cookie").

use cookie::{Cookie, SameSite};
use time::Duration;

/// Holds the lease token in the browser.
pub const LEASE_COOKIE: &str = "__Host-ll_lease";
/// Holds the flow secret between the link visit and the lease.
pub const FLOW_COOKIE: &str = "__Host-ll_flow";

fn host_cookie(
    name: &'static str,
    value: String,
    max_age: Duration,
    same_site: SameSite,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .secure(true)
        .same_site(same_site)
        .path("/")
        .max_age(max_age)
        .build()
}

/// The lease cookie: HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age = the lease's life.
pub fn lease(token: &str, max_age: Duration) -> Cookie<'static> {
    host_cookie(LEASE_COOKIE, token.to_owned(), max_age, SameSite::Strict)
}

/// The flow cookie: HttpOnly, Secure, SameSite=Lax (sent on a top-level navigation from
/// another site, such as a link clicked in webmail), Path=/, for the flow's life.
pub fn flow(secret: &str, max_age: Duration) -> Cookie<'static> {
    host_cookie(
        FLOW_COOKIE,
        secret.to_owned(),
        max_age,
        same_site_of(FLOW_COOKIE),
    )
}

/// A cookie that makes the browser forget `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    host_cookie(name, String::new(), Duration::ZERO, same_site_of(name))
}

fn same_site_of(name: &str) -> SameSite {
    if name == FLOW_COOKIE {
        SameSite::Lax
    } else {
        SameSite::Strict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_cookie_has_every_attribute() {
        let header = lease("tok", Duration::seconds(900)).to_string();
        for part in [
            "__Host-ll_lease=tok",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=900",
        ] {
            assert!(header.contains(part), "{header} lacks {part}");
        }
        assert!(!header.contains("Domain"));
        let flow = flow("sec", Duration::seconds(900)).to_string();
        for part in [
            "__Host-ll_flow=sec",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
        ] {
            assert!(flow.contains(part), "{flow} lacks {part}");
        }
        let gone = removal(FLOW_COOKIE).to_string();
        assert!(gone.starts_with("__Host-ll_flow=;") && gone.contains("Max-Age=0"));
    }
}
