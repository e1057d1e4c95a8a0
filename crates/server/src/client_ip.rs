//! The client's address: the socket peer, or, when the peer is a trusted proxy
//! (`--trust-proxy`), the right-most untrusted address in `X-Forwarded-For`.

use actix_web::HttpRequest;
use std::net::IpAddr;

use linklease_grant::IpBlock;

/// The address the request came from, as far as it can be trusted.
pub fn client_ip(req: &HttpRequest, trusted: &[IpBlock]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.iter().any(|b| b.contains(peer)) {
        return Some(peer);
    }
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Walk from the nearest hop outwards; the first address no trusted proxy vouches for is
    // the client. Everything to its left could have been written by the client itself, and an
    // entry that is not an address ends the walk.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !trusted.iter().any(|b| b.contains(ip)) {
            break;
        }
    }
    Some(client)
}

/// The user agent, cut to 256 characters for storage.
pub fn user_agent(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(peer: &str, xff: &[&str]) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(format!("{peer}:4000").parse().unwrap());
        for v in xff {
            r = r.append_header(("X-Forwarded-For", *v));
        }
        r.to_http_request()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpBlock> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(&req("203.0.113.5", &["198.51.100.1"]), &trusted),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["198.51.100.1"]), &trusted),
            Some(ip("198.51.100.1"))
        );
        // The client prepended a fake hop; the proxy appended the real one.
        assert_eq!(
            client_ip(&req("10.0.0.2", &["1.1.1.1, 198.51.100.1"]), &trusted),
            Some(ip("198.51.100.1"))
        );
        // Two trusted proxies in a row.
        assert_eq!(
            client_ip(&req("10.0.0.2", &["198.51.100.1, 10.0.0.9"]), &trusted),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["198.51.100.1", "10.0.0.9"]), &trusted),
            Some(ip("198.51.100.1"))
        );
        // Nothing forwarded: the proxy itself.
        assert_eq!(
            client_ip(&req("10.0.0.2", &[]), &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["garbage"]), &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["garbage, 198.51.100.1"]), &trusted),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["198.51.100.1, garbage"]), &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client_ip(&req("10.0.0.2", &["198.51.100.1"]), &[]),
            Some(ip("10.0.0.2"))
        );
    }
}
