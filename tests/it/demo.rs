//! `passback demo` as a newcomer runs it: what it prints leads to every page and to a way to
//! check a new password, and its mailbox shows when each mail came and its subject as sent.

use crate::harness::{hidden, passback_bin};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Stops the demo (and the directory and agent it started) when the test ends, however it ends.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // The demo stops its agent and directory on SIGTERM.
        let _ = Command::new("kill").args(["-TERM", "--", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_every_page_and_its_mailbox_reads_like_mail() {
    let dir = std::env::temp_dir().join(format!("passback-test-demo-{}", uuid::Uuid::new_v4().simple()));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new(passback_bin())
        .args(["demo", "--dir", &dir.display().to_string(), "--port", &port.to_string()])
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let printed = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Stop the demo with Ctrl-C") {
                break;
            }
        }
        printed
    });
    let printed = tokio::time::timeout(std::time::Duration::from_secs(90), printed).await.unwrap().unwrap();

    let url = format!("https://localhost:{port}");
    for page in ["/reset", "/change", "/signin", "/demo/mail", "/staff/signin", "/helpdesk", "/audit", "/admin/health"]
    {
        assert!(printed.contains(&format!("{url}{page} ")), "{page} in:\n{printed}");
    }
    assert!(printed.contains("otpauth://totp/passback%20demo%20staff:admin?secret="), "{printed}");
    assert!(printed.lines().filter(|l| l.contains('█')).count() > 20, "a QR code to scan: {printed}");
    assert!(printed.contains("ldapwhoami") && printed.contains("-D uid=USER,"), "{printed}");

    // A code asked for in German arrives in the demo mailbox, with its time and its subject
    // decoded as the person's mail program would show it.
    let tls = (*passback::tls::client_config(Some(&dir.join("tls").join("ca.pem"))).unwrap()).clone();
    let c = reqwest::Client::builder().use_preconfigured_tls(tls).cookie_store(true).build().unwrap();
    let get = |path: &str| c.get(format!("{url}{path}")).header("Accept-Language", "de").send();
    let form = get("/reset").await.unwrap().text().await.unwrap();
    let csrf = hidden(&form, "csrf").unwrap();
    let fields = [("csrf", csrf.as_str()), ("login", "alice"), ("intent", "reset")];
    let sent = c.post(format!("{url}/reset")).header("Accept-Language", "de").form(&fields).send().await.unwrap();
    assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());
    let mut mailbox = String::new();
    for _ in 0..100 {
        mailbox = get("/demo/mail").await.unwrap().text().await.unwrap();
        if mailbox.contains("Ihr Bestätigungscode") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(mailbox.contains("<h2>Ihr Bestätigungscode</h2>"), "{mailbox}");
    assert!(mailbox.contains("Empfangen 20") && mailbox.contains(" UTC"), "{mailbox}");
    let _ = std::fs::remove_dir_all(&dir);
}
