//! The authenticator-app method (RFC 6238 TOTP: SHA-1, 6 digits, 30-second steps, as every
//! authenticator app expects). A code is accepted one step either side of now, and the step it
//! matched is recorded so that no code works twice.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

pub const STEP_SECS: u64 = 30;
pub const DIGITS: usize = 6;

/// A new random seed (160 bits, as RFC 4226 recommends).
pub fn new_seed() -> Zeroizing<Vec<u8>> {
    let mut seed = Zeroizing::new(vec![0u8; 20]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    seed
}

fn totp(seed: &[u8], issuer: &str, account: &str) -> anyhow::Result<TOTP> {
    TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECS, seed.to_vec(), Some(issuer.to_string()), account.to_string())
        .map_err(|e| anyhow::anyhow!("TOTP parameters: {e}"))
}

/// The seed as people type it into an app (base32, in groups of four for reading).
pub fn seed_text(seed: &[u8]) -> Zeroizing<String> {
    let Secret::Encoded(b32) = Secret::Raw(seed.to_vec()).to_encoded() else { return Zeroizing::default() };
    let b32 = Zeroizing::new(b32);
    Zeroizing::new(
        b32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" "),
    )
}

/// The `otpauth://` address itself, for a link an app on the same phone opens when tapped.
pub fn otpauth_url(seed: &[u8], issuer: &str, account: &str) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(totp(seed, issuer, account)?.get_url()))
}

/// The `otpauth://` address as a QR code drawn with block characters, light on dark (as a
/// terminal with a dark background shows it), for `passback demo` to print.
pub fn terminal_qr(seed: &[u8], issuer: &str, account: &str) -> anyhow::Result<Zeroizing<String>> {
    use qrcode::render::unicode::Dense1x2;
    let url = otpauth_url(seed, issuer, account)?;
    let code = qrcode::QrCode::new(url.as_bytes()).map_err(|e| anyhow::anyhow!("QR code: {e}"))?;
    Ok(Zeroizing::new(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build()))
}

/// The `otpauth://` address an app scans, as an SVG QR code in a `data:` URL (so the page needs
/// no script and no request of its own, and the seed never appears in a URL we serve).
pub fn qr_data_url(seed: &[u8], issuer: &str, account: &str) -> anyhow::Result<Zeroizing<String>> {
    use base64::Engine;
    let url = Zeroizing::new(totp(seed, issuer, account)?.get_url());
    let code = qrcode::QrCode::new(url.as_bytes()).map_err(|e| anyhow::anyhow!("QR code: {e}"))?;
    let svg =
        Zeroizing::new(code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).quiet_zone(true).build());
    Ok(Zeroizing::new(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg.as_bytes())
    )))
}

/// The time step a typed code belongs to (now, or one step either side), if it is right.
/// Every candidate is compared, in constant time, whatever matched first.
pub fn matching_step(seed: &[u8], typed: &str, now: i64) -> Option<i64> {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(seed, "passback", "check").ok()?;
    let now = u64::try_from(now).ok()?;
    let step = now / STEP_SECS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        let expected = Zeroizing::new(totp.generate(s * STEP_SECS));
        if bool::from(expected.as_bytes().ct_eq(typed.as_bytes())) {
            found = i64::try_from(s).ok();
        }
    }
    found
}

/// The code for a time: what an authenticator app would show (for tests and rehearsals).
pub fn code_at(seed: &[u8], time: i64) -> String {
    totp(seed, "passback", "check").map(|t| t.generate(u64::try_from(time).unwrap_or(0))).unwrap_or_default()
}

/// The seed back from the base32 text shown at enrolment (spaces allowed): for tests.
pub fn seed_from_text(text: &str) -> Option<Vec<u8>> {
    let b32: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    Secret::Encoded(b32).to_bytes().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_right_one_step_either_side_and_not_two() {
        let seed = new_seed();
        let now = 1_800_000_000;
        for offset in [-30, 0, 30] {
            let code = code_at(&seed, now + offset);
            assert_eq!(matching_step(&seed, &code, now), Some((now + offset) / 30), "offset {offset}");
        }
        let stale = code_at(&seed, now - 61);
        assert_eq!(matching_step(&seed, &stale, now), None);
        assert_eq!(matching_step(&seed, "12345", now), None);
        assert_eq!(matching_step(&seed, "abcdef", now), None);
    }

    #[test]
    fn the_seed_round_trips_through_the_text_people_type() {
        let seed = new_seed();
        let text = seed_text(&seed);
        assert!(text.contains(' '), "grouped for reading: {}", text.as_str());
        assert_eq!(seed_from_text(&text).unwrap(), seed.to_vec());
        let qr = qr_data_url(&seed, "passback", "alice").unwrap();
        assert!(qr.starts_with("data:image/svg+xml;base64,"));
    }
}
