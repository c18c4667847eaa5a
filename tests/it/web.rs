//! A real browser for the tests: Debian's headless Chromium driven through chromedriver over
//! WebDriver. Each [`Browser`] has its own chromedriver, profile and cookies. It trusts exactly
//! the test portal's key (by its SPKI hash), nothing more. `check` runs axe-core on the page and
//! saves screenshots at phone and desktop widths under `target/screenshots/`.

use crate::harness::TestApp;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    client: Client,
    driver: Child,
    base: String,
    /// Names the screenshots: one folder per test.
    name: String,
    js: bool,
    /// The window's width, to which it returns after a check.
    width: u32,
    _profile: PathBuf,
}

#[derive(Clone, Copy)]
pub struct Options {
    /// JavaScript on (the default) or off, to prove every flow works without it.
    pub js: bool,
    /// What the browser says it prefers in `Accept-Language`.
    pub lang: &'static str,
    /// The window's width in pixels: 360 for a phone.
    pub width: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { js: true, lang: "en-GB", width: 1280 }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp; the screenshots go beside it, kept as CI artefacts.
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots")
}

impl Browser {
    pub async fn open(app: &TestApp, name: &str) -> Browser {
        Self::open_with(app, name, Options::default()).await
    }

    pub async fn open_with(app: &TestApp, name: &str, opts: Options) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) is installed");
        let profile = app.dir.join(format!("chromium-{name}"));
        std::fs::create_dir_all(&profile).unwrap();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter".into(),
            format!("--window-size={},900", opts.width),
            format!("--lang={}", opts.lang),
            format!("--user-data-dir={}", profile.display()),
            format!("--ignore-certificate-errors-spki-list={}", app.ca.spki_sha256),
        ];
        if !opts.js {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let mut prefs = json!({ "intl.accept_languages": opts.lang });
        if !opts.js {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        let caps = json!({
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args, "prefs": prefs }
        });
        let caps = caps.as_object().unwrap().clone();
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        base: app.url.clone(),
                        name: name.into(),
                        js: opts.js,
                        width: opts.width,
                        _profile: profile,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a browser: {last:?}");
    }

    /// Opens a page of another site.
    pub async fn goto_url(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The page's address, without the portal's origin.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        url.as_str().strip_prefix(&self.base).unwrap_or(url.as_str()).to_string()
    }

    pub async fn text(&self) -> String {
        self.client.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
    }

    pub async fn html(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Types into the field labelled by `id`, replacing what it held.
    pub async fn fill(&self, id: &str, value: &str) {
        let field = self.client.find(Locator::Id(id)).await.unwrap_or_else(|e| panic!("field #{id}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// The field whose label says `label`, as a person finds it.
    async fn labelled(&self, label: &str) -> fantoccini::elements::Element {
        let xpath =
            format!("//*[@id=//label[normalize-space()='{label}']/@for] | //label[normalize-space()='{label}']//input");
        self.client.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("no field labelled {label:?}: {e}"))
    }

    /// Types into the field labelled `label`, replacing what it held.
    pub async fn fill_labelled(&self, label: &str, value: &str) {
        let field = self.labelled(label).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// The `type` of the field labelled `label` (`password`, or `text` while it is shown).
    pub async fn type_of(&self, label: &str) -> String {
        self.labelled(label).await.prop("type").await.unwrap().unwrap_or_default()
    }

    /// Clicks the first button (or label) whose visible text is `text`, on this page: a toggle, a
    /// choice.
    pub async fn click(&self, text: &str) {
        let xpath = format!("(//button[normalize-space()='{text}'] | //label[normalize-space()='{text}'])[1]");
        let el =
            self.client.find(Locator::XPath(&xpath)).await.unwrap_or_else(|e| panic!("nothing named {text:?}: {e}"));
        el.click().await.unwrap();
    }

    /// Clicks the button or link whose visible text is `text`, and waits for the next page.
    pub async fn press(&self, text: &str) {
        let xpath = format!(
            "//button[normalize-space()='{text}'] | //a[normalize-space()='{text}'] | //label[normalize-space()='{text}']"
        );
        let el = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button or link {text:?}: {e}"));
        let before = self.client.find(Locator::Css("html")).await.unwrap();
        el.click().await.unwrap();
        // Every press here leads to a new page: wait until the old document is gone (the form
        // post may take as long as the directory does), then for the new one.
        for _ in 0..300 {
            if before.tag_name().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.client.wait().for_element(Locator::Css("body")).await.unwrap();
    }

    /// Chooses the radio button or checkbox with this id.
    pub async fn choose(&self, id: &str) {
        self.client.find(Locator::Id(id)).await.unwrap().click().await.unwrap();
    }

    /// Picks the option with this value in the list `id`.
    pub async fn select(&self, id: &str, value: &str) {
        self.client.find(Locator::Id(id)).await.unwrap().select_by_value(value).await.unwrap();
    }

    /// The text of the element `id`.
    pub async fn text_of(&self, id: &str) -> String {
        self.client.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
    }

    /// The text of the label of the field `id`.
    pub async fn label_of(&self, id: &str) -> String {
        let css = format!("label[for='{id}']");
        self.client.find(Locator::Css(&css)).await.unwrap().text().await.unwrap()
    }

    /// A property of the element `id` (`type`, `value`), or of its attribute when there is no
    /// such property (`aria-pressed`).
    pub async fn prop(&self, id: &str, name: &str) -> String {
        let el = self.client.find(Locator::Id(id)).await.unwrap();
        match el.prop(name).await.unwrap() {
            Some(v) => v,
            None => el.attr(name).await.unwrap().unwrap_or_default(),
        }
    }

    pub async fn value(&self, id: &str) -> String {
        self.client.find(Locator::Id(id)).await.unwrap().prop("value").await.unwrap().unwrap_or_default()
    }

    /// Checks the page as a person would meet it, on a phone (360 pixels wide) and on a desktop
    /// (1280): with JavaScript on, axe-core finds no accessibility violation and nothing is wider
    /// than the screen; screenshots at both widths are saved as `label`.
    pub async fn check(&self, label: &str) {
        let dir = screenshots_dir().join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        for width in [360u32, 1280] {
            self.client.set_window_size(width, 900).await.unwrap();
            if self.js {
                let violations = self.axe().await;
                assert!(
                    violations.is_empty(),
                    "axe-core found accessibility violations on {label} at {width} px ({}):\n{}",
                    self.path().await,
                    serde_json::to_string_pretty(&violations).unwrap()
                );
                let wider = "document.documentElement.scrollWidth - document.documentElement.clientWidth";
                let (wider, seen) = (self.eval(wider).await, self.eval("window.innerWidth").await);
                assert_eq!(wider, "0", "{label} is wider than a {width} px screen ({seen} px seen) by {wider} px");
            }
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{label}-{width}.png")), png).unwrap();
        }
        self.client.set_window_size(self.width, 900).await.unwrap();
    }

    /// The axe-core violations on the page now (with impact, rule and the nodes involved).
    async fn axe(&self) -> Vec<serde_json::Value> {
        let source = axe_source();
        self.client.execute(source, vec![]).await.unwrap();
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.html) }))))
                    .catch(e => done([{ id: 'axe-error', help: String(e) }]));",
                vec![],
            )
            .await
            .unwrap();
        result.as_array().cloned().unwrap_or_default()
    }

    /// Whether the page's scripts run.
    pub fn scripts(&self) -> bool {
        self.js
    }

    /// The value of a script expression in the page, as text.
    pub async fn eval(&self, expression: &str) -> String {
        let value = self.client.execute(&format!("return String({expression})"), vec![]).await.unwrap();
        value.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 10 s until the text of the element `id` contains `text`.
    pub async fn wait_for(&self, id: &str, text: &str) {
        let script = format!("var e = document.getElementById('{id}'); return e ? e.textContent : ''");
        let mut seen = String::new();
        for _ in 0..200 {
            let value = self.client.execute(&script, vec![]).await.unwrap();
            seen = value.as_str().unwrap_or_default().to_string();
            if seen.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("#{id} never said {text:?}; it says {seen:?}");
    }

    /// Runs a script in the page (to spoil a form on purpose, say).
    pub async fn run(&self, script: &str) {
        self.client.execute(script, vec![]).await.unwrap();
    }

    /// The text inside the first frame of the page (empty if it shows nothing).
    pub async fn frame_text(&self) -> String {
        self.client.enter_frame(0).await.unwrap();
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        self.client.enter_parent_frame().await.unwrap();
        text
    }

    /// Whether the page is in a document of this language (`<html lang>`).
    pub async fn lang(&self) -> String {
        self.client.find(Locator::Css("html")).await.unwrap().attr("lang").await.unwrap().unwrap_or_default()
    }

    /// Whether the element `id` is shown (not hidden, by an attribute or by style).
    pub async fn shown(&self, id: &str) -> bool {
        let el = self.client.find(Locator::Id(id)).await.unwrap_or_else(|e| panic!("#{id}: {e}"));
        el.is_displayed().await.unwrap()
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium processes it started share one process group: stop them
        // all, also when a test failed half-way.
        // `--` matters: without it `kill` may read "-<pid>" as an option.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

fn axe_source() -> &'static str {
    static AXE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AXE.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/node_modules/axe-core/axe.min.js");
        std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("{path}: {e}; install it with `npm ci --prefix tests/browser` (scripts/test.sh does)")
        })
    })
}

/// A page on another origin (HTTPS, the test CA's certificate) that frames `target`: an access
/// panel, or a site that would like to be one. Answers every request with the same page.
/// `listener` is bound beforehand, so that its origin can go into the portal's configuration.
pub fn framing_site(listener: tokio::net::TcpListener, ca: &passback::sandbox::TestCa, target: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = passback::tls::server_config(&ca.cert_file, &ca.key_file).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let body = format!(
        "<!doctype html><html lang=en><title>Apps</title><h1>Apps</h1>\
         <iframe title=reset src=\"{target}\" width=400 height=600></iframe>"
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

/// A command of WebDriver's WebAuthn extension (W3C Web Authentication, "Automation"): the
/// browser's virtual authenticators.
#[derive(Debug)]
struct WebAuthn {
    path: String,
    method: axum::http::Method,
    body: Option<serde_json::Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthn {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/webauthn/{}", session.unwrap_or_default(), self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (self.method.clone(), self.body.as_ref().map(ToString::to_string))
    }
}

impl Browser {
    async fn webauthn(&self, method: axum::http::Method, path: String, body: Option<serde_json::Value>) -> Value {
        let what = format!("{method} {path}");
        self.client.issue_cmd(WebAuthn { path, method, body }).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Gives the browser a platform authenticator (a phone's or laptop's) that holds passkeys
    /// and verifies its user at once; returns its id.
    pub async fn add_authenticator(&self) -> String {
        let options = json!({
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
            "hasUserVerification": true, "isUserConsenting": true, "isUserVerified": true,
        });
        let id = self.webauthn(axum::http::Method::POST, "authenticator".into(), Some(options)).await;
        id.as_str().expect("an authenticator id").to_string()
    }

    /// The passkeys the authenticator holds (id, private key, signature counter…).
    pub async fn passkeys(&self, authenticator: &str) -> Vec<Value> {
        let path = format!("authenticator/{authenticator}/credentials");
        let all = self.webauthn(axum::http::Method::GET, path, None).await;
        all.as_array().cloned().unwrap_or_default()
    }

    /// Replaces the authenticator's passkeys with these (to copy one, say).
    pub async fn replace_passkeys(&self, authenticator: &str, passkeys: Vec<Value>) {
        let path = format!("authenticator/{authenticator}/credentials");
        self.webauthn(axum::http::Method::DELETE, path, None).await;
        for p in passkeys {
            let path = format!("authenticator/{authenticator}/credential");
            self.webauthn(axum::http::Method::POST, path, Some(p)).await;
        }
    }
}
