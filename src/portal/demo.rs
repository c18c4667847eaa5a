//! `/demo/mail`: the demo's caught mail. The route exists only in demo mode.

use super::pages::{DemoMail, DemoMailPage};
use super::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

pub async fn mail(State(st): State<AppState>) -> Response {
    let Some(mb) = &st.demo_mailbox else { return axum::http::StatusCode::NOT_FOUND.into_response() };
    let mails = mb
        .all()
        .into_iter()
        .rev()
        .map(|m| DemoMail {
            at: super::pages::utc(m.at),
            to: m.to.join(", "),
            subject: m.subject(),
            body: text_part(&m.data),
        })
        .collect();
    DemoMailPage { tr: crate::i18n::Tr::current(), mails }.into_response()
}

/// The text/plain part of a message as lettre writes it (7bit for our ASCII templates).
fn text_part(data: &str) -> String {
    let Some(start) = data.find("Content-Type: text/plain") else { return data.to_string() };
    let rest = &data[start..];
    let body_start = rest.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let body = &rest[body_start..];
    let end = body.find("\r\n--").unwrap_or(body.len());
    decode_quoted_printable(&body[..end])
}

/// Undoes quoted-printable (soft line breaks and `=XX`), which lettre uses for long lines.
fn decode_quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_printable_soft_breaks_and_escapes_are_undone() {
        assert_eq!(
            super::decode_quoted_printable("ignore this mes=\r\nsage =3D ok =E2=80=A2"),
            "ignore this message = ok •"
        );
    }
}
