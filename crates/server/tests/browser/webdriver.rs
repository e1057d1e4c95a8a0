//! A small synchronous W3C WebDriver client over `ureq`, enough to drive Debian's chromium
//! through chromedriver: navigate, find, type, click, run a script, take a screenshot.

use base64::Engine as _;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Where Debian installs the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether the browser and driver are installed.
pub fn available() -> bool {
    std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists()
}

impl Browser {
    /// Starts chromedriver and a headless chromium of `width` × `height`.
    pub fn start(width: u32, height: u32) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars",
                         format!("--window-size={width},{height}")]
            }
        }}});
        let created = post(&agent, &format!("{base}/session"), &caps);
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let browser = Self {
            driver,
            base,
            session,
            agent,
        };
        browser.resize(width, height);
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        let reply = post(&self.agent, &self.url(path), &body);
        if let Some(error) = reply["value"]["error"].as_str() {
            panic!("webdriver {path}: {error}: {}", reply["value"]["message"]);
        }
        reply["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let mut reply = self.agent.get(self.url(path)).call().unwrap();
        let value: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        value["value"].clone()
    }

    /// Sets the window's size (CSS pixels).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("/window/rect", json!({"width": width, "height": height}));
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.cmd("/url", json!({ "url": url }));
    }

    /// The browser's Back button; waits for the page it goes back to.
    pub fn back(&self) {
        self.run("window.__linklease_before = true;", json!([]));
        self.cmd("/back", json!({}));
        self.wait_for_new_page();
    }

    /// Opens a new tab and returns its handle (the current tab stays current).
    pub fn new_tab(&self) -> String {
        let tab = self.cmd("/window/new", json!({"type": "tab"}));
        tab["handle"].as_str().unwrap().to_owned()
    }

    /// The current tab's handle.
    pub fn tab(&self) -> String {
        self.get("/window").as_str().unwrap().to_owned()
    }

    /// Makes the tab `handle` current.
    pub fn switch_to(&self, handle: &str) {
        self.cmd("/window", json!({ "handle": handle }));
    }

    /// The address bar.
    pub fn current_url(&self) -> String {
        self.get("/url").as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML.
    pub fn source(&self) -> String {
        self.get("/source").as_str().unwrap_or_default().to_owned()
    }

    /// The text of the page's `h1`, once the page after a navigation has one (waits up to 10 s).
    pub fn heading(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self.run(
                "const h = document.querySelector('h1');
                 return document.readyState === 'complete' && h ? h.innerText : '';",
                json!([]),
            );
            let text = ready.as_str().unwrap_or_default().to_owned();
            if !text.is_empty() || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.get(&format!("/element/{el}/text"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css` (panics if there is none).
    pub fn find(&self, css: &str) -> String {
        let found = self.cmd("/element", json!({"using": "css selector", "value": css}));
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd(&format!("/element/{el}/clear"), json!({}));
        self.cmd(&format!("/element/{el}/value"), json!({ "text": text }));
    }

    /// Clicks the element matching `css`; if that submits a form, waits for the next page.
    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.run("window.__linklease_before = true;", json!([]));
        self.cmd(&format!("/element/{el}/click"), json!({}));
        let submits = self
            .run(
                "const e = document.querySelector(arguments[0]);
                 return !!(e && e.form && (e.type === 'submit'));",
                json!([css]),
            )
            .as_bool()
            .unwrap_or(false);
        if submits || self.run("return window.__linklease_before === true;", json!([])) != true {
            self.wait_for_new_page();
        }
    }

    /// Waits until the document is a new one (the marker set before a click is gone) and loaded.
    fn wait_for_new_page(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let fresh = self.run(
                "return window.__linklease_before !== true && document.readyState === 'complete';",
                json!([]),
            );
            if fresh == true {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs `script` (a function body) with `args`; returns its result.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.cmd("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Runs an async `script` whose last argument is the callback.
    pub fn run_async(&self, script: &str, args: Value) -> Value {
        self.cmd("/execute/async", json!({ "script": script, "args": args }))
    }

    /// A PNG of the whole page, by resizing the window to the document's height first.
    pub fn screenshot(&self, width: u32) -> Vec<u8> {
        let height = self
            .run("return document.documentElement.scrollHeight;", json!([]))
            .as_u64()
            .unwrap_or(800) as u32;
        self.resize(width, height.max(400));
        let shot = self.get("/screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap_or_default())
            .unwrap()
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Value {
    let mut reply = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap()
}
