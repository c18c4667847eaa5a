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
    /// When it arrived (Unix seconds).
    pub at: i64,
}

impl CaughtMail {
    /// The subject as a person reads it: a folded header unfolded, encoded words decoded.
    pub fn subject(&self) -> String {
        // The headers only: up to the first empty line.
        let mut lines = self.data.split("\r\n").flat_map(|l| l.split('\n')).take_while(|l| !l.is_empty());
        let Some(first) = lines.by_ref().find_map(|l| l.strip_prefix("Subject: ")) else { return String::new() };
        let mut raw = first.to_string();
        for more in lines.take_while(|l| l.starts_with([' ', '\t'])) {
            raw.push_str(more);
        }
        decode_words(&raw)
    }

    /// The plain-text part as a person reads it (its transfer encoding undone), or the whole
    /// message where it has none.
    pub fn text(&self) -> String {
        self.part("text/plain")
    }

    /// The HTML part, its transfer encoding undone (or the whole message where it has none).
    pub fn html(&self) -> String {
        self.part("text/html")
    }

    fn part(&self, content_type: &str) -> String {
        let data = self.data.replace("\r\n", "\n");
        let Some(start) = data.find(&format!("Content-Type: {content_type}")) else { return data };
        let part = &data[start..];
        let (headers, body) = part.split_once("\n\n").unwrap_or((part, ""));
        // The part ends where the next boundary begins.
        let body = body.split("\n--").next().unwrap_or(body);
        let bytes = match headers.lines().find_map(|l| l.strip_prefix("Content-Transfer-Encoding: ")) {
            Some(e) if e.trim().eq_ignore_ascii_case("base64") => {
                use base64::Engine;
                let joined: String = body.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD.decode(joined).unwrap_or_default()
            }
            Some(e) if e.trim().eq_ignore_ascii_case("quoted-printable") => quoted_printable(body),
            _ => body.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&bytes).into_owned()
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
            let at = time::OffsetDateTime::now_utc().unix_timestamp();
            mailbox.push(CaughtMail { from: from.clone(), to: to.clone(), data, at });
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

/// A header with RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) as plain text; the
/// space between two encoded words is not part of the text.
fn decode_words(header: &str) -> String {
    let mut out = String::new();
    let mut rest = header;
    let mut after_word = false;
    while !rest.is_empty() {
        let decoded = rest.strip_prefix("=?").and_then(|r| {
            let (_charset, r) = r.split_once('?')?;
            let (encoding, r) = r.split_once('?')?;
            let (text, r) = r.split_once("?=")?;
            Some((decode_word(encoding, text)?, r))
        });
        match decoded {
            Some((text, r)) => {
                out.push_str(&text);
                rest = r;
                after_word = true;
            }
            None => {
                let skip = rest.chars().next().map_or(1, char::len_utf8);
                let next = rest[skip..].find("=?").map_or(rest.len(), |i| i + skip);
                let plain = &rest[..next];
                // Only white space between two encoded words: dropped.
                if !(after_word && plain.trim().is_empty() && next < rest.len()) {
                    out.push_str(plain);
                }
                rest = &rest[next..];
                after_word = false;
            }
        }
    }
    out
}

/// A quoted-printable body as bytes: `=XX` is a byte, `=` at a line's end joins it to the next.
fn quoted_printable(body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let mut bytes = line.bytes();
        while let Some(b) = bytes.next() {
            let hex = (b == b'=').then(|| [bytes.next(), bytes.next()]);
            match hex {
                Some([Some(h), Some(l)]) => {
                    match std::str::from_utf8(&[h, l]).ok().and_then(|s| u8::from_str_radix(s, 16).ok()) {
                        Some(v) => out.push(v),
                        None => out.extend_from_slice(&[b'=', h, l]),
                    }
                }
                Some(_) => out.push(b'='),
                None => out.push(b),
            }
        }
        if !soft && lines.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

fn decode_word(encoding: &str, text: &str) -> Option<String> {
    use base64::Engine;
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD.decode(text).ok()?,
        "q" | "Q" => {
            let mut out = Vec::new();
            let mut bytes = text.bytes();
            while let Some(b) = bytes.next() {
                match b {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = [bytes.next()?, bytes.next()?];
                        out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                    }
                    b => out.push(b),
                }
            }
            out
        }
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn encoded_subjects_are_read_as_text() {
        let mail = |subject: &str| super::CaughtMail {
            from: String::new(),
            to: Vec::new(),
            data: format!("From: a@b\r\nSubject: {subject}\r\nTo: c@d\r\n\r\nbody"),
            at: 0,
        };
        assert_eq!(mail("Your verification code").subject(), "Your verification code");
        assert_eq!(
            mail("=?utf-8?b?SWhyIFBhc3N3b3J0IHd1cmRlIGdlw6RuZGVydA==?=").subject(),
            "Ihr Passwort wurde geändert"
        );
        assert_eq!(
            mail("=?utf-8?q?Votre_mot_de_passe_a_=C3=A9t=C3=A9?=\r\n =?utf-8?q?_chang=C3=A9?=").subject(),
            "Votre mot de passe a été changé"
        );
        assert_eq!(mail("plain =?x?z?bad?= stays").subject(), "plain =?x?z?bad?= stays");
        assert_eq!(mail("déjà =?utf-8?q?vu?= ünd").subject(), "déjà vu ünd");
    }
}
