//! Secrets as they enter the program: wrapped at once, zeroized on drop, never printable.

use super::ParseError;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Any secret text (a password, a one-time code, a relay secret). `Debug` prints a placeholder.
pub type Secret = SecretString;

/// Longest password we accept; Active Directory's own limit is 256 UTF-16 units.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// A new password that a person typed twice, identically, or that the portal made.
pub struct NewPassword(SecretString, Origin);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Typed,
    /// Made by the portal's random generator (the helpdesk's temporary passwords).
    Generated,
}

impl NewPassword {
    /// Checks only what is true whatever the directory's policy: present, typed the same twice,
    /// not absurdly long, no control characters. The directory decides everything else.
    pub fn parse(new: SecretString, confirm: &SecretString) -> Result<Self, ParseError> {
        let n = new.expose_secret();
        if n.is_empty() {
            return Err(ParseError("error.password_empty"));
        }
        if !bool::from(n.as_bytes().ct_eq(confirm.expose_secret().as_bytes())) {
            return Err(ParseError("error.password_mismatch"));
        }
        if n.chars().count() > MAX_PASSWORD_CHARS {
            return Err(ParseError("error.password_long"));
        }
        if n.chars().any(char::is_control) {
            return Err(ParseError("error.password_control"));
        }
        Ok(Self(new, Origin::Typed))
    }

    /// A password the portal made itself at random (only ever from the helpdesk's generator,
    /// `crypto::temporary_password`): nobody chose it, so no rule about guessable choices
    /// applies to it (the directory's own rules still do).
    pub(crate) fn generated(random: SecretString) -> Self {
        Self(random, Origin::Generated)
    }

    /// Made by the portal, not chosen by a person.
    pub fn is_generated(&self) -> bool {
        self.1 == Origin::Generated
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn as_secret(&self) -> &SecretString {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// A one-time code as typed by a person: digits only, spaces and dashes ignored.
pub struct OneTimeCode(SecretString);

impl OneTimeCode {
    pub const DIGITS: usize = 8;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        if digits.len() != Self::DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError("error.code_format"));
        }
        Ok(Self(digits.into()))
    }

    /// A fresh random code; `rng` is a parameter so tests can choose it.
    pub fn generate(rng: &mut impl rand::RngCore) -> Self {
        let n = rng.next_u64() % 10u64.pow(Self::DIGITS as u32);
        Self(format!("{n:0width$}", width = Self::DIGITS).into())
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneTimeCode([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        v.to_string().into()
    }

    #[test]
    fn a_new_password_must_be_typed_twice_the_same() {
        assert!(NewPassword::parse(s("Abc-12345"), &s("Abc-12345")).is_ok());
        assert!(NewPassword::parse(s("Abc-12345"), &s("Abc-12346")).is_err());
        assert!(NewPassword::parse(s(""), &s("")).is_err());
        assert!(NewPassword::parse(s(&"x".repeat(257)), &s(&"x".repeat(257))).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let p = NewPassword::parse(s("Hunter2-secret"), &s("Hunter2-secret")).unwrap();
        assert!(!format!("{p:?}").contains("Hunter2"));
        let c = OneTimeCode::parse("1234 5678").unwrap();
        assert_eq!(c.expose(), "12345678");
        assert!(!format!("{c:?}").contains("1234"));
    }

    #[test]
    fn codes_are_eight_digits_with_leading_zeros_kept() {
        struct Small;
        impl rand::RngCore for Small {
            fn next_u32(&mut self) -> u32 {
                7
            }
            fn next_u64(&mut self) -> u64 {
                7
            }
            fn fill_bytes(&mut self, _: &mut [u8]) {}
            fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), rand::Error> {
                Ok(())
            }
        }
        assert_eq!(OneTimeCode::generate(&mut Small).expose(), "00000007");
        assert!(OneTimeCode::parse("1234567").is_err());
        assert!(OneTimeCode::parse("1234567a").is_err());
    }
}
