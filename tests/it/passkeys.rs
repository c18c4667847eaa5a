//! Passkeys over HTTP, with a software authenticator that signs exactly what a platform
//! authenticator would (attestation "none", user verified, a P-256 key). It can also be made to
//! go wrong the ways an attacker would: an old challenge, a counter going back (a copied
//! authenticator), another origin. The browser tests use Chromium's own virtual authenticator.

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use passback::sandbox::INITIAL_USER_PASSWORD;
use passback::store::Stmt;
use sha2::{Digest, Sha256};

const NEW_PASSWORD: &str = "Corr3ct-Horse-Battery!";

/// A passkey held in memory.
pub struct SoftKey {
    key: p256::ecdsa::SigningKey,
    pub id: Vec<u8>,
    /// The signature counter: it goes up by one per use.
    pub counter: u32,
    /// Whether the authenticator says it verified its user (a PIN, a fingerprint).
    pub verifies: bool,
    user_handle: Vec<u8>,
}

/// CBOR's head of an item: major type and length.
fn head(major: u8, n: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | u8::try_from(n).unwrap()),
        24..=255 => out.extend([m | 24, u8::try_from(n).unwrap()]),
        _ => {
            out.push(m | 25);
            out.extend(u16::try_from(n).unwrap().to_be_bytes());
        }
    }
}

fn text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len(), out);
    out.extend(s.as_bytes());
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len(), out);
    out.extend(b);
}

fn json_field(options: &serde_json::Value, path: &[&str]) -> String {
    let mut v = options;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_else(|| panic!("{path:?} in {options}")).to_string()
}

impl SoftKey {
    pub fn new() -> SoftKey {
        let secret: [u8; 32] = rand::random();
        let key = p256::ecdsa::SigningKey::from_bytes(&secret.into()).unwrap();
        SoftKey { key, id: rand::random::<[u8; 32]>().to_vec(), counter: 0, verifies: true, user_handle: Vec::new() }
    }

    fn client_data(kind: &str, options: &serde_json::Value, origin: &str) -> Vec<u8> {
        let challenge = json_field(options, &["challenge"]);
        serde_json::json!({ "type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// The authenticator data: the relying party id's hash, the flags (user present, verified
    /// unless told otherwise, and `more` set), and the counter.
    fn auth_data(&self, rp_id: &str, more: u8) -> Vec<u8> {
        let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
        out.push(0x01 | if self.verifies { 0x04 } else { 0 } | more);
        out.extend(self.counter.to_be_bytes());
        out
    }

    /// Answers `navigator.credentials.create` with these options, as the browser's JSON.
    pub fn register(&mut self, options: &str, origin: &str) -> String {
        let options: serde_json::Value = serde_json::from_str(options).unwrap();
        let rp_id = json_field(&options, &["rp", "id"]);
        self.user_handle = B64.decode(json_field(&options, &["user", "id"])).unwrap();
        let point = self.key.verifying_key().to_encoded_point(false);
        let mut cose = Vec::new();
        head(5, 5, &mut cose);
        cose.extend([0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21]);
        bytes(point.x().unwrap(), &mut cose);
        cose.push(0x22);
        bytes(point.y().unwrap(), &mut cose);
        let mut auth_data = self.auth_data(&rp_id, 0x40);
        auth_data.extend([0u8; 16]);
        auth_data.extend(u16::try_from(self.id.len()).unwrap().to_be_bytes());
        auth_data.extend(&self.id);
        auth_data.extend(cose);
        let mut attestation = Vec::new();
        head(5, 3, &mut attestation);
        text("fmt", &mut attestation);
        text("none", &mut attestation);
        text("attStmt", &mut attestation);
        head(5, 0, &mut attestation);
        text("authData", &mut attestation);
        bytes(&auth_data, &mut attestation);
        let id = B64.encode(&self.id);
        serde_json::json!({
            "id": id, "rawId": id, "type": "public-key", "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": B64.encode(Self::client_data("webauthn.create", &options, origin)),
                "attestationObject": B64.encode(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
        .to_string()
    }

    /// Answers `navigator.credentials.get` with these options, from `origin`.
    pub fn assert(&mut self, options: &str, origin: &str) -> String {
        let options: serde_json::Value = serde_json::from_str(options).unwrap();
        let rp_id = json_field(&options, &["rpId"]);
        self.counter += 1;
        let auth_data = self.auth_data(&rp_id, 0);
        let client_data = Self::client_data("webauthn.get", &options, origin);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client_data));
        let signature: p256::ecdsa::Signature = self.key.sign(&signed);
        let id = B64.encode(&self.id);
        serde_json::json!({
            "id": id, "rawId": id, "type": "public-key", "authenticatorAttachment": "platform",
            "response": {
                "clientDataJSON": B64.encode(client_data),
                "authenticatorData": B64.encode(auth_data),
                "signature": B64.encode(signature.to_der().as_bytes()),
                "userHandle": B64.encode(&self.user_handle),
            },
            "clientExtensionResults": {},
        })
        .to_string()
    }
}

/// The passkey options a page carries (`data-options`, HTML-escaped).
pub fn page_options(page: &str) -> String {
    let start = page.find("data-options=\"").unwrap_or_else(|| panic!("no passkey options on {page}")) + 14;
    let end = start + page[start..].find('"').unwrap();
    page[start..end]
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Registers `key` as alice's passkey through security info (a sign-in, the step-up by her
/// mailbox, the page that asks for one); returns the page it ends on.
async fn register(app: &TestApp, key: &mut SoftKey, name: &str) -> String {
    let page = app.sign_in_on(&app.client, "alice", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf").unwrap();
    let before = app.mails_to("alice@example.org");
    let mut start = app.post("/account/passkeys/start", &[("csrf", &csrf)]).await.text().await.unwrap();
    if start.contains("Check your e-mail") {
        let code = app.code_for("alice@example.org", before).await;
        let csrf = hidden(&start, "csrf").unwrap();
        start = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    }
    let made = key.register(&page_options(&start), &app.url);
    let csrf = hidden(&start, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("name", name), ("credential", made.as_str())];
    let saved = app.post("/account/passkeys", &fields).await.text().await.unwrap();
    assert!(saved.contains("The passkey is registered."), "{saved}");
    saved
}

/// The newest audit row of `operation` says `raw`.
async fn audited(app: &TestApp, operation: &str, raw: &str) {
    let rows = app.audit().await;
    let row = rows.iter().find(|r| r.operation == operation);
    assert!(row.is_some_and(|r| r.raw.contains(raw)), "{operation} audited as {raw:?}: {row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_registered_in_security_info_resets_a_password_alone_and_nothing_else_passes() {
    let app = spawn_app().await;
    let origin = app.url.clone();
    let mut key = SoftKey::new();

    // Registered after a sign-in and a step-up (the mailbox), under a name of the person's.
    let page = app.sign_in_on(&app.client, "alice", INITIAL_USER_PASSWORD).await.text().await.unwrap();
    assert!(page.contains("Add a passkey"), "{page}");
    let csrf = hidden(&page, "csrf").unwrap();
    let gate = app.post("/account/passkeys/start", &[("csrf", &csrf)]).await.text().await.unwrap();
    assert!(gate.contains("Check your e-mail"), "a step-up first: {gate}");
    let code = app.code_for("alice@example.org", 0).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let start = app.post("/account/verify", &[("csrf", &csrf), ("code", &code)]).await.text().await.unwrap();
    assert!(start.contains("Create passkey") && start.contains("data-passkey=\"create\""), "{start}");
    let options = page_options(&start);
    assert!(
        options.contains("\"userVerification\":\"required\"") && options.contains("\"attestation\":\"none\""),
        "{options}"
    );
    assert!(!options.contains("alice@") && !options.contains("uid="), "nothing but the user name: {options}");
    let made = key.register(&options, &origin);
    let csrf = hidden(&start, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("name", "Work  laptop\u{7}"), ("credential", made.as_str())];
    let saved = app.post("/account/passkeys", &fields).await.text().await.unwrap();
    // On failure, what the portal logged of passkeys says why (the page only says it failed).
    let log = portal_log();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains("passkey")).collect();
    let registered = saved.contains("The passkey is registered.") && saved.contains("<h3>Work laptop</h3>");
    assert!(registered, "{saved}\nlogged: {logged:#?}");
    assert!(saved.contains("not used yet"), "{saved}");
    let told = app.wait_for_mails("Your security info changed", 1).await;
    assert!(told[0].data.contains("a passkey was added"), "{}", told[0].data);
    // The same answer again registers nothing (its challenge is spent).
    let again = app.post("/account/passkeys", &fields).await.text().await.unwrap();
    assert!(!again.contains("The passkey is registered."), "{again}");
    // Nothing of the credential is kept in the clear.
    for (path, contents) in app.database_files().await {
        let id_hex = hex::encode(&key.id);
        assert!(!hex::encode(&contents).contains(&id_hex), "the credential id in the clear in {path:?}");
    }

    // A forgotten password: the passkey alone opens the way, and the directory confirms it.
    let chooser = app.identify("alice").await;
    assert!(chooser.contains("id=\"method-passkey\"") && chooser.contains("data-passkey-only hidden"), "{chooser}");
    let choose = |page: String| {
        let app = &app;
        async move {
            let csrf = hidden(&page, "csrf").unwrap();
            app.post("/reset/method", &[("csrf", &csrf), ("method", "passkey")]).await.text().await.unwrap()
        }
    };
    let gate = choose(chooser).await;
    assert!(gate.contains("Use your passkey"), "{gate}");
    let options = page_options(&gate);
    assert!(options.contains("\"allowCredentials\":[]"), "no credential of the person's is named: {options}");
    let used = key.assert(&options, &origin);
    let csrf = hidden(&gate, "csrf").unwrap();
    let form = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &used)]).await.text().await.unwrap();
    assert!(form.contains("name=\"form_key\""), "the new-password form: {form}");
    let done = app.submit_password(&form, NEW_PASSWORD, NEW_PASSWORD).await;
    assert!(done.contains("Your password has been changed"), "{done}");
    assert!(app.bind_works("alice", NEW_PASSWORD).await);

    // Another session cannot answer this one's challenge (nor, so, ride on it).
    let gate = choose(app.identify("alice").await).await;
    let stolen = key.assert(&page_options(&gate), &origin);
    let elsewhere = app.new_client();
    let first = elsewhere.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&first, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("credential", stolen.as_str()), ("intent", "reset")];
    let page = app.post_on(&elsewhere, "/reset/passkey", &fields).await;
    assert!(page.contains("That passkey was not accepted here"), "{page}");
    audited(&app, "reset.identify.passkey", "no challenge waits in this session").await;
    // An authenticator that did not verify its user (no PIN, no fingerprint) opens nothing.
    key.verifies = false;
    let lax = key.assert(&page_options(&gate), &origin);
    key.verifies = true;
    let csrf = hidden(&gate, "csrf").unwrap();
    let page = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &lax)]).await.text().await.unwrap();
    assert!(!page.contains("form_key"), "{page}");
    audited(&app, "reset.verify.passkey", "did not verify the person").await;

    // The same signed answer once more: its challenge was spent.
    let gate = choose(app.identify("alice").await).await;
    let csrf = hidden(&gate, "csrf").unwrap();
    let replayed = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &used)]).await.text().await.unwrap();
    assert!(replayed.contains("did not prove who you are") && !replayed.contains("form_key"), "{replayed}");
    audited(&app, "reset.verify.passkey", "the challenge was used before").await;

    // Signed for another origin (a look-alike site passing the challenge on).
    let options = page_options(&replayed);
    let phished = key.assert(&options, "https://passback.example.net");
    let csrf = hidden(&replayed, "csrf").unwrap();
    let page = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &phished)]).await.text().await.unwrap();
    assert!(!page.contains("form_key"), "{page}");
    audited(&app, "reset.verify.passkey", "made for another origin").await;

    // A copy of the authenticator, whose counter is behind the real one's.
    key.counter = 0;
    let options = page_options(&page);
    let cloned = key.assert(&options, &origin);
    let csrf = hidden(&page, "csrf").unwrap();
    let page = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &cloned)]).await.text().await.unwrap();
    assert!(!page.contains("form_key"), "{page}");
    audited(&app, "reset.verify.passkey", "signature counter went backwards").await;
    // …and the owner's own audit says so, where the helpdesk looks.
    let copied = app.audit().await.into_iter().find(|r| r.operation == "security.passkey_copied");
    assert_eq!(copied.and_then(|r| r.target).as_deref(), Some("alice"));
    assert!(!app.audit().await.iter().any(|r| r.raw.contains(&B64.encode(&key.id))), "no credential id audited");
    let id = B64.encode(&key.id);
    assert!(!portal_log().contains(&id) && !portal_log().contains(&hex::encode(&key.id)), "no credential id logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_names_its_owner_at_the_first_step_and_a_removed_one_names_nobody() {
    let app = spawn_app_with(Options {
        gates: Some(|g| {
            g.required = 2;
        }),
        ..Default::default()
    })
    .await;
    let origin = app.url.clone();
    let mut key = SoftKey::new();
    // With two methods required, a step-up asks for as many as alice has (her mailbox alone).
    register(&app, &mut key, "Phone").await;

    // No name typed: the passkey says whose it is, and counts as the first of two methods.
    let client = app.new_client();
    let first = client.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(first.contains("Use a passkey") && first.contains("data-options-url=\"/reset/passkey/options\""));
    let csrf = hidden(&first, "csrf").unwrap();
    let ask = |client: &reqwest::Client, csrf: &str| {
        let (client, url, csrf) = (client.clone(), app.url.clone(), csrf.to_string());
        async move {
            let r = client.post(format!("{url}/reset/passkey/options")).form(&[("csrf", csrf)]).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let used = key.assert(&ask(&client, &csrf).await, &origin);
    let fields = [("csrf", csrf.as_str()), ("credential", used.as_str()), ("intent", "reset")];
    let mails = app.mails_to("alice@example.org");
    let second = app.post_on(&client, "/reset/passkey", &fields).await;
    assert!(second.contains("Check your e-mail") && second.contains("second"), "the second method: {second}");
    let code = app.code_for("alice@example.org", mails).await;
    let csrf2 = hidden(&second, "csrf").unwrap();
    let form = app.post_on(&client, "/reset/verify", &[("csrf", &csrf2), ("code", &code)]).await;
    assert!(form.contains("name=\"form_key\""), "both passed: {form}");
    audited(&app, "reset.identify", "identified by a passkey").await;

    // Removed (by the helpdesk, say): it names nobody any more, and says only that.
    let before = app.audit().await.len();
    let anchor = app.anchor_of("alice").await;
    passback::store::passkeys::remove_all(
        &app.db,
        passback::store::passkeys::Owner {
            kind: passback::store::passkeys::Kind::Person,
            directory: DIR_ID,
            anchor: &anchor,
        },
    )
    .await
    .unwrap();
    let client = app.new_client();
    let first = client.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&first, "csrf").unwrap();
    let used = key.assert(&ask(&client, &csrf).await, &origin);
    let fields = [("csrf", csrf.as_str()), ("credential", used.as_str()), ("intent", "reset")];
    let refused = app.post_on(&client, "/reset/passkey", &fields).await;
    assert!(refused.contains("That passkey was not accepted here") && refused.contains("name=\"login\""), "{refused}");
    assert!(!refused.contains("alice"), "{refused}");
    assert!(app.audit().await.len() > before);
    audited(&app, "reset.identify.passkey", "not registered here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkey_holders_must_use_it_its_challenge_lasts_five_minutes_and_it_unlocks_too() {
    let app = spawn_app_with(Options {
        gates: Some(|g| {
            g.passkey_holders_must_use = true;
        }),
        ..Default::default()
    })
    .await;
    let mut key = SoftKey::new();
    // A name is shown as typed, never as markup.
    let saved = register(&app, &mut key, "<i>Phone</i>").await;
    assert!(saved.contains("&#60;i&#62;Phone&#60;/i&#62;") && !saved.contains("<i>Phone"), "{saved}");

    // Alice has a passkey: it is the only way offered, at once (no chooser, no other way).
    let gate = app.identify("alice").await;
    assert!(gate.contains("Use your passkey") && !gate.contains("Verify another way"), "{gate}");
    assert!(!gate.contains("Check your e-mail"), "{gate}");
    // Bob has none: his mailbox, as before.
    let bob = app.new_client();
    let first = bob.get(format!("{}/reset", app.url)).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&first, "csrf").unwrap();
    let page = app.post_on(&bob, "/reset", &[("csrf", &csrf), ("login", "bob")]).await;
    assert!(page.contains("Check your e-mail"), "{page}");

    // A challenge answered after more than five minutes is refused, and audited.
    let options = page_options(&gate);
    app.clock.advance(301);
    let late = key.assert(&options, &app.url);
    let csrf = hidden(&gate, "csrf").unwrap();
    let page = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &late)]).await.text().await.unwrap();
    assert!(page.contains("did not prove who you are") && !page.contains("form_key"), "{page}");
    audited(&app, "reset.verify.passkey", "the challenge expired").await;

    // "My account is locked": the passkey opens the unlock form just the same.
    app.lock_out("alice").await;
    let (_, csrf) = app.page("/reset").await;
    let gate = app.post("/reset", &[("csrf", &csrf), ("login", "alice"), ("intent", "unlock")]).await;
    let gate = gate.text().await.unwrap();
    let used = key.assert(&page_options(&gate), &app.url);
    let csrf = hidden(&gate, "csrf").unwrap();
    let page = app.post("/reset/verify", &[("csrf", &csrf), ("credential", &used)]).await.text().await.unwrap();
    assert!(page.contains("Unlock your account"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staff_passkey_takes_a_current_code_guessing_it_stops_and_an_administrators_reset_removes_it() {
    use crate::helpdesk::{add_staff, client, get, post, staff_signin};
    use passback::store::{staff::Role, users::Scope};
    let app = spawn_app().await;
    let hd = add_staff(&app, "hd", Role::Helpdesk, Scope::everyone(), false).await;
    let c = client(&app);
    staff_signin(&app, &c, &hd, 0).await;
    let mut key = SoftKey::new();
    let (_, page) = get(&app, &c, "/staff/passkeys").await;
    let made = key.register(&page_options(&page), &app.url);
    let csrf = hidden(&page, "csrf").unwrap();
    let code = hd.code(&app, 1);
    let fields = [("csrf", csrf.as_str()), ("name", "Desk"), ("credential", made.as_str()), ("code", code.as_str())];
    let (_, added) = post(&app, &c, "/staff/passkeys", &fields).await;
    assert!(added.contains("The passkey is registered") && added.contains("Desk"), "{added}");

    // The password and the passkey sign in (no code).
    let other = client(&app);
    let (_, form) = get(&app, &other, "/staff/signin").await;
    let csrf = hidden(&form, "csrf").unwrap();
    let (status, options) = post(&app, &other, "/staff/signin/passkey", &[("csrf", &csrf)]).await;
    assert_eq!(status, 200, "{options}");
    let used = key.assert(&options, &app.url);
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", "hd"),
        ("password", hd.password.as_str()),
        ("credential", used.as_str()),
    ];
    let (_, signed_in) = post(&app, &other, "/staff/signin", &fields).await;
    assert!(signed_in.contains("Find a person"), "{signed_in}");

    // A session someone else got hold of cannot guess the code: wrong ones count as wrong
    // sign-ins do, and stop at the account's limit.
    let mut last = String::new();
    for _ in 0..31 {
        let (_, page) = get(&app, &c, "/staff/passkeys").await;
        let csrf = hidden(&page, "csrf").unwrap();
        let fields = [("csrf", csrf.as_str()), ("name", "Thief"), ("credential", "{}"), ("code", "000000")];
        last = post(&app, &c, "/staff/passkeys", &fields).await.1;
    }
    assert!(last.contains("Too many wrong sign-ins for this account"), "{last}");

    // A lost phone: an administrator's new sign-in for the account removes its passkeys too.
    let admin = add_staff(&app, "admin1", Role::Administrator, Scope::default(), false).await;
    let a = client(&app);
    staff_signin(&app, &a, &admin, 0).await;
    let id: String = Stmt::new("SELECT id FROM staff WHERE username = 'hd'").scalar_one(&app.db).await.unwrap();
    let (_, list) = get(&app, &a, "/admin/staff").await;
    let csrf = hidden(&list, "csrf").unwrap();
    post(&app, &a, "/admin/staff/reset", &[("csrf", &csrf), ("id", &id)]).await;
    let left: i64 = Stmt::new("SELECT COUNT(*) FROM passkeys WHERE kind = 'staff'").scalar_one(&app.db).await.unwrap();
    assert_eq!(left, 0);
    let rows = app.audit().await;
    assert!(rows.iter().any(|r| r.operation == "staff.reset" && r.raw.contains("1 passkey(s) removed")), "{rows:?}");
}
