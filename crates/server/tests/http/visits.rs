//! Opening a link again in the same browser (a second tab, a second click in the mail, the back
//! button) goes on with the flow that browser holds, instead of opening another.

use crate::exchange::lab_result;
use crate::harness::{Reply, TestServer};
use crate::http_tests;
use linklease_store::{audit, flows};

http_tests!(a_second_visit_goes_on_with_the_held_flow);

fn flow_cookie(r: &Reply) -> Option<String> {
    r.headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-ll_flow="))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
}

fn open_flows(s: &TestServer, grant: &str) -> u32 {
    let id = grant.parse().unwrap();
    s.store
        .read(|c| flows::open_of_grant(c, id, s.now()))
        .unwrap()
        .0
}

fn a_second_visit_goes_on_with_the_held_flow(s: &TestServer) {
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &lab_result());
    let (id, link) = (
        grant["id"].as_str().unwrap(),
        format!("/l/{}", grant["token"].as_str().unwrap()),
    );
    let first = s.request("GET", &link, &[], None);
    assert_eq!(first.status, 303);
    let cookie = flow_cookie(&first).unwrap();

    // Again with the cookie: the same flow, no new cookie, a second `link.visited`.
    let again = s.request("GET", &link, &[("cookie", &cookie)], None);
    assert_eq!(
        (again.status, again.header("location")),
        (303, Some("/flow"))
    );
    assert_eq!(flow_cookie(&again), None, "{:?}", again.headers);
    assert_eq!(open_flows(s, id), 1);
    let visits: Vec<serde_json::Value> = s
        .store
        .read(|c| audit::for_grant(c, id.parse().unwrap()))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "link.visited")
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(visits.len(), 2);
    assert_eq!(visits[0]["flow"], visits[1]["flow"]);
    assert_eq!(visits[1]["again"], true);

    // The cookie of another grant's flow, or of an unknown one, opens a flow of this grant.
    let other = s.create(&key, &lab_result());
    let other_link = format!("/l/{}", other["token"].as_str().unwrap());
    let elsewhere = s.request("GET", &other_link, &[("cookie", &cookie)], None);
    assert!(flow_cookie(&elsewhere).is_some());
    let forged = "__Host-ll_flow=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let unknown = s.request("GET", &link, &[("cookie", forged)], None);
    assert!(flow_cookie(&unknown).is_some());
    assert_eq!(open_flows(s, id), 2);

    // An expired flow is not taken up again.
    s.advance(time::Duration::minutes(16));
    let later = s.request("GET", &link, &[("cookie", &cookie)], None);
    assert_eq!(later.status, 303);
    assert!(flow_cookie(&later).is_some());
    assert_eq!(open_flows(s, id), 1);
}
