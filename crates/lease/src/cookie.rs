//! The browser's cookies, built with the `cookie` crate. Both are `__Host-` cookies: Secure,
//! Path=/, no Domain, so no subdomain or plain-HTTP page can set or read them.

use cookie::{Cookie, SameSite};
use time::Duration;

/// Holds the lease token in the browser.
pub const LEASE_COOKIE: &str = "__Host-ll_lease";
/// Holds the flow secret between the link visit and the lease.
pub const FLOW_COOKIE: &str = "__Host-ll_flow";

fn host_cookie(name: &'static str, value: String, max_age: Duration) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(max_age)
        .build()
}

/// The lease cookie: HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age = the lease's life.
pub fn lease(token: &str, max_age: Duration) -> Cookie<'static> {
    host_cookie(LEASE_COOKIE, token.to_owned(), max_age)
}

/// The flow cookie, same attributes, for the flow's life.
pub fn flow(secret: &str, max_age: Duration) -> Cookie<'static> {
    host_cookie(FLOW_COOKIE, secret.to_owned(), max_age)
}

/// A cookie that makes the browser forget `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    host_cookie(name, String::new(), Duration::ZERO)
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
        let gone = removal(FLOW_COOKIE).to_string();
        assert!(gone.starts_with("__Host-ll_flow=;") && gone.contains("Max-Age=0"));
    }
}
