//! A small SMTP server that keeps what it receives in memory: the demo's outgoing mail and the
//! tests' real SMTP peer. Loopback only; it speaks just enough SMTP for a well-behaved client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct CaughtMail {
    pub from: String,
    pub to: Vec<String>,
    /// The whole message as received (headers and body).
    pub data: String,
}

impl CaughtMail {
    pub fn subject(&self) -> &str {
        self.data.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("")
    }

    /// The first run of `digits` consecutive digits after `marker` in the message.
    pub fn code_after(&self, marker: &str, digits: usize) -> Option<String> {
        let start = self.data.find(marker)? + marker.len();
        let rest = &self.data[start..];
        let s: String = rest.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
        (s.len() == digits).then_some(s)
    }
}

#[derive(Clone, Default)]
pub struct Mailbox(Arc<Mutex<Vec<CaughtMail>>>);

impl Mailbox {
    pub fn all(&self) -> Vec<CaughtMail> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn last_to(&self, address: &str) -> Option<CaughtMail> {
        self.all().into_iter().rev().find(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
    }

    fn push(&self, m: CaughtMail) {
        if let Ok(mut v) = self.0.lock() {
            v.push(m);
        }
    }
}

/// Starts the sink on 127.0.0.1 (port 0 = any free port). Returns its address and mailbox.
pub async fn start(port: u16) -> std::io::Result<(SocketAddr, Mailbox)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let mailbox = Mailbox::default();
    let mb = mailbox.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mb = mb.clone();
            tokio::spawn(async move {
                if let Err(e) = session(stream, mb).await {
                    tracing::debug!(error = %e, "smtp sink session ended");
                }
            });
        }
    });
    Ok((addr, mailbox))
}

fn strip_angle(s: &str) -> String {
    let s = s.trim();
    let s = s.split_whitespace().next().unwrap_or("");
    s.trim_start_matches('<').trim_end_matches('>').to_string()
}

async fn session(stream: tokio::net::TcpStream, mailbox: Mailbox) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 passback-sink ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-passback-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n").await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 passback-sink\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = strip_angle(&cmd[10..]);
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(strip_angle(&cmd[8..]));
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            mailbox.push(CaughtMail { from: from.clone(), to: to.clone(), data });
            w.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 Bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"502 Command not implemented\r\n").await?;
        }
    }
}
