//! The consumer's journeys in a real browser: Debian's chromium driven through chromedriver.
//! Every page is checked with axe-core (serious or critical violations fail) and photographed at
//! phone and desktop width into `docs/screenshots/`.
//!
//! Needs `chromium` and `chromium-driver` (Debian) and axe-core from npm (fetched once into
//! `target/axe` with `npm install` if missing). Without them the test says so and passes, except
//! under CI, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../http/harness.rs"]
mod harness;
mod webdriver;
mod webmail;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::TestServer;
use linklease_store::testing::TestDb;
use webdriver::Browser;
use webmail::Webmail;

const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);
const AXE_VERSION: &str = "4.10.3";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// axe-core's script, installed into `target/axe` with npm on first use.
fn axe_source() -> Option<String> {
    if let Ok(path) = std::env::var("LINKLEASE_AXE_JS") {
        return std::fs::read_to_string(path).ok();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let dir = target.join("axe");
    let script = dir.join("node_modules/axe-core/axe.min.js");
    if !script.exists() {
        let _ = Command::new("npm")
            .args(["install", "--prefix"])
            .arg(&dir)
            .args([
                &format!("axe-core@{AXE_VERSION}"),
                "--no-audit",
                "--no-fund",
                "--silent",
            ])
            .status();
    }
    std::fs::read_to_string(script).ok()
}

/// One page checked: no serious or critical axe violation, screenshots at both widths.
struct Checker {
    axe: String,
    shots: PathBuf,
    checked: Vec<String>,
}

impl Checker {
    fn check(&mut self, b: &Browser, name: &str) {
        b.run(&format!("{};return true;", self.axe), json!([]));
        let violations = b.run_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag',
                 values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})
               .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,
                   help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))
               .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e)}]));",
            json!([]),
        );
        let bad: Vec<&Value> = violations
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["impact"] == "serious" || v["impact"] == "critical")
            .collect();
        assert!(bad.is_empty(), "axe on {name}: {bad:#?}");
        for (label, (width, height)) in [("phone", PHONE), ("desktop", DESKTOP)] {
            b.resize(width, height);
            let png = b.screenshot(width);
            std::fs::write(self.shots.join(format!("{name}-{label}.png")), png).unwrap();
        }
        b.resize(PHONE.0, PHONE.1);
        self.checked.push(format!(
            "{name}: {} minor/moderate axe findings",
            violations.as_array().unwrap().len()
        ));
    }
}

fn set_value(b: &Browser, css: &str, value: &str) {
    b.run(
        "document.querySelector(arguments[0]).value = arguments[1];",
        json!([css, value]),
    );
}

fn grant_body() -> Value {
    json!({
        "payload": {
            "patient_id": "P-1042",
            "test": "SARS-CoV-2 PCR",
            "result": "negative",
            "collected": {"site": "Clinic North", "date": "2026-11-20"},
            "notes": ["Stay home if you feel unwell", "Call us with questions"]
        },
        "permissions": {
            "write_fields": {
                "result_ack": {"type": "boolean"},
                "note": {"type": "string", "max_length": 200},
                "symptoms_since": {"type": "date"},
                "household_size": {"type": "integer"},
                "preferred_contact": {"type": "string", "enum": ["phone", "e-mail", "letter"]}
            },
            "create": {"kind": "contact", "max": 2,
                       "fields": {"name": {"type": "string", "max_length": 80},
                                  "phone": {"type": "string", "max_length": 20}}}
        },
        "factor": {"kind": "dob", "value": "1984-03-02"},
        "otp": {"channel": "email", "to": "pat@example.org"}
    })
}

/// Whether the browser is installed; under CI its absence fails the test.
fn browser_available() -> bool {
    let ci = std::env::var_os("CI").is_some();
    if !webdriver::available() {
        assert!(
            !ci,
            "CI needs chromium and chromium-driver (apt-get install)"
        );
        eprintln!("skipping the browser test: chromium or chromedriver is not installed");
        return false;
    }
    true
}

#[test]
fn consumer_journeys_in_a_real_browser() {
    let ci = std::env::var_os("CI").is_some();
    if !browser_available() {
        return;
    }
    let Some(axe) = axe_source() else {
        assert!(!ci, "CI needs axe-core (npm install axe-core)");
        eprintln!("skipping the browser test: axe-core could not be installed");
        return;
    };
    let shots = workspace().join("docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut checker = Checker {
        axe,
        shots,
        checked: Vec::new(),
    };

    let db = TestDb::sqlite();
    let s = TestServer::start_self_addressed(db.store.clone());
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &grant_body());
    let token = grant["token"].as_str().unwrap();
    let b = Browser::start(PHONE.0, PHONE.1);

    // The link, clicked in a message on another site (as links arrive: webmail, chat): the
    // token leaves the address bar, the factor is asked for.
    let mail = Webmail::with_link(&format!("{}/l/{token}", s.base));
    b.goto(&mail.url);
    b.click("#mail-link");
    assert!(b.current_url().ends_with("/flow"), "{}", b.current_url());
    assert_eq!(b.heading(), "Confirm it is you");
    assert!(s.outbox().is_empty(), "opening a link sends nothing");
    checker.check(&b, "01-factor");

    // A wrong date of birth: the error summary, linked to the field, with attempts left.
    set_value(&b, "#factor", "1990-01-01");
    b.click("main button[type=submit]");
    assert_eq!(b.heading(), "Confirm it is you", "{}", b.source());
    let summary = b.text(".error-summary");
    assert!(summary.contains("Attempts left: 4"), "{summary}");
    assert!(b.source().contains("href=\"#factor\""));
    checker.check(&b, "02-factor-wrong");

    // The right one: a code is sent and asked for.
    set_value(&b, "#factor", "1984-03-02");
    b.click("main button[type=submit]");
    assert_eq!(b.heading(), "Enter your code", "{}", b.text("main"));
    assert!(b.text(".notice").contains("p***@example.org"));
    checker.check(&b, "03-code");
    let code = s.last_code();

    // A wrong code, then the right one.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    b.type_into("#code", wrong);
    b.click("main form[action='/flow/otp'] button");
    assert!(b.text(".error-summary").contains("not right"));
    checker.check(&b, "04-code-wrong");
    b.type_into("#code", &code);
    b.click("main form[action='/flow/otp'] button");
    assert!(b.current_url().ends_with("/view"), "{}", b.current_url());
    assert_eq!(b.heading(), "Your information");
    let page = b.text("main");
    assert!(
        page.contains("Patient id") && page.contains("Clinic North"),
        "{page}"
    );
    checker.check(&b, "05-view");

    // An answer with a mistake (an e-mail address as a phone number is fine; a household size
    // that is not a whole number is not), then the corrected answer.
    b.click("[id='f.result_ack']");
    b.type_into("[id='f.note']", "Thank you");
    set_value(&b, "[id='f.household_size']", "2.5");
    b.type_into("[id='c.0.name']", "Ana");
    b.type_into("[id='c.0.phone']", "+15550100");
    b.click("form[action='/view/submit'] button");
    assert!(b.text(".error-summary").contains("whole number"));
    assert_eq!(
        b.run(
            "return document.querySelector(\"[id='c.0.name']\").value;",
            json!([])
        ),
        "Ana",
        "entered values are kept"
    );
    checker.check(&b, "06-view-errors");
    set_value(&b, "[id='f.household_size']", "3");
    b.click("form[action='/view/submit'] button");
    assert_eq!(b.heading(), "Thank you");
    checker.check(&b, "07-thanks");
    let stored = s.get(
        &format!("/v1/grants/{}/submissions", grant["id"].as_str().unwrap()),
        &key,
    );
    let stored = stored.json();
    let first = &stored["submissions"][0];
    assert_eq!(first["fields"]["household_size"], 3);
    assert_eq!(first["fields"]["result_ack"], true);
    assert_eq!(
        first["creates"],
        json!([{"name": "Ana", "phone": "+15550100"}])
    );

    // The used link.
    b.goto(&format!("{}/l/{token}", s.base));
    assert_eq!(b.heading(), "Link already used");
    checker.check(&b, "08-used-link");

    // A link without factor or code, typed into the address bar: Continue, then log out.
    let plain = s.create(
        &key,
        &json!({"payload": {"message": "Your appointment is on Monday"}, "max_uses": 3}),
    );
    b.goto(&format!(
        "{}/l/{}",
        s.base,
        plain["token"].as_str().unwrap()
    ));
    assert_eq!(b.heading(), "Open your information");
    checker.check(&b, "09-continue");
    b.click("main button[type=submit]");
    assert!(b.text("main").contains("Monday"));
    b.click("form[action='/logout'] button");
    assert_eq!(b.heading(), "You are logged out");
    checker.check(&b, "10-logged-out");
    b.goto(&format!("{}/view", s.base));
    assert_eq!(b.heading(), "Session ended");

    // An unknown link, and an expired one.
    b.goto(&format!("{}/l/{}", s.base, "A".repeat(43)));
    assert_eq!(b.heading(), "Link not found");
    checker.check(&b, "11-unknown-link");
    let later = s.create(&key, &json!({"payload": {"a": 1}}));
    s.advance(time::Duration::days(8));
    b.goto(&format!(
        "{}/l/{}",
        s.base,
        later["token"].as_str().unwrap()
    ));
    assert_eq!(b.heading(), "Link expired");
    checker.check(&b, "12-expired-link");

    eprintln!(
        "axe: no serious or critical violations on\n  {}",
        checker.checked.join("\n  ")
    );
}

/// A person as they really open a link: clicked in a message on another site, then back to the
/// message and clicked again, then through factor and code to the payload; on each backend.
fn link_clicked_on_another_site(db: &TestDb) {
    if !browser_available() {
        return;
    }
    let s = TestServer::start_self_addressed(db.store.clone());
    let (_, key) = s.tenant("clinic");
    let grant = s.create(&key, &grant_body());
    let mail = Webmail::with_link(&format!(
        "{}/l/{}",
        s.base,
        grant["token"].as_str().unwrap()
    ));
    let b = Browser::start(PHONE.0, PHONE.1);
    b.goto(&mail.url);
    b.click("#mail-link");
    assert!(b.current_url().ends_with("/flow"), "{}", b.current_url());
    assert_eq!(b.heading(), "Confirm it is you", "{}", b.text("main"));

    // Back to the message, and the link clicked once more: still the factor, not an error.
    b.back();
    assert_eq!(b.heading(), "Your test result is ready");
    b.click("#mail-link");
    assert_eq!(b.heading(), "Confirm it is you", "{}", b.text("main"));

    // The link opened in a second tab too: both tabs go on with the one flow.
    let first = b.tab();
    let second = b.new_tab();
    b.switch_to(&second);
    b.goto(&mail.url);
    b.click("#mail-link");
    assert_eq!(b.heading(), "Confirm it is you", "{}", b.text("main"));
    set_value(&b, "#factor", "1984-03-02");
    b.click("main button[type=submit]");
    assert_eq!(b.heading(), "Enter your code", "{}", b.text("main"));

    // Back in the first tab, its stale factor form leads to the code step, not an error.
    b.switch_to(&first);
    set_value(&b, "#factor", "1984-03-02");
    b.click("main button[type=submit]");
    assert_eq!(b.heading(), "Enter your code", "{}", b.text("main"));
    assert_eq!(s.outbox().len(), 1, "one code for the one flow");
    b.type_into("#code", &s.last_code());
    b.click("main form[action='/flow/otp'] button");
    assert!(b.current_url().ends_with("/view"), "{}", b.current_url());
    assert!(
        b.text("main").contains("Clinic North"),
        "{}",
        b.text("main")
    );
}

mod sqlite {
    #[test]
    fn link_clicked_on_another_site() {
        super::link_clicked_on_another_site(&super::TestDb::sqlite());
    }
}

mod postgres {
    #[test]
    fn link_clicked_on_another_site() {
        if let Some(db) = super::TestDb::postgres() {
            super::link_clicked_on_another_site(&db);
        }
    }
}
