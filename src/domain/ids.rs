//! Identifiers and names, each checked once when it enters the program.

use super::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a person types to say who they are: a user name or an e-mail address.
/// Kept lower-cased so that lookups are case-insensitive, as directories are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName(String);

impl LoginName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParseError("error.login_empty"));
        }
        if s.chars().count() > 256 {
            return Err(ParseError("error.login_long"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(ParseError("error.login_bad"));
        }
        Ok(Self(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, with a deliberately loose check: one `@`, something on both sides,
/// no spaces or control characters. The SMTP server has the last word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let bad = ParseError("error.email_bad");
        let (local, domain) = s.split_once('@').ok_or(bad.clone())?;
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || s.len() > 254
            || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(bad);
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `a•••@example.org`: enough for a person to recognise the address, not enough to learn it.
    pub fn masked(&self) -> String {
        let (local, domain) = self.0.split_once('@').unwrap_or((&self.0, ""));
        let first: String = local.chars().take(1).collect();
        format!("{first}•••@{domain}")
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Self::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $max:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                let ok = !raw.is_empty()
                    && raw.len() <= $max
                    && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if ok {
                    Ok(Self(raw.to_string()))
                } else {
                    Err(ParseError(concat!("not a valid ", $what)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// The name an administrator gives a directory in the agent's configuration (`corp`, `eu-forest`).
    DirectoryId, 64, "directory id"
);
token_id!(
    /// The directory's own immutable id of a person (`entryUUID`, `objectGUID`), as text.
    Anchor, 64, "anchor"
);
token_id!(
    /// The id of one relay message; also the one-use key of the form that caused it.
    MsgId, 64, "message id"
);

impl MsgId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_codes_are_two_groups_of_five_from_the_unambiguous_alphabet_and_all_of_it_is_used() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let code = SupportCode::new().0;
            let (a, b) = code.split_once('-').unwrap();
            assert_eq!((a.len(), b.len()), (5, 5), "{code}");
            seen.extend(a.chars().chain(b.chars()));
        }
        // 2,000 draws over 32 characters: each turns up (the chance one does not is ~1e-26).
        assert_eq!(seen.into_iter().collect::<String>(), "23456789ABCDEFGHJKLMNPQRSTUVWXYZ");
    }

    #[test]
    fn login_names_are_trimmed_and_lower_cased() {
        assert_eq!(LoginName::parse("  Alice ").unwrap().as_str(), "alice");
        assert!(LoginName::parse("   ").is_err());
        assert!(LoginName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn an_address_is_masked_to_its_first_letter_and_domain() {
        let e = EmailAddress::parse("alice@example.org").unwrap();
        assert_eq!(e.masked(), "a•••@example.org");
        assert!(EmailAddress::parse("no-at-sign").is_err());
        assert!(EmailAddress::parse("a@b@c").is_err());
        assert!(EmailAddress::parse("a <b>@c").is_err());
    }

    #[test]
    fn ids_refuse_anything_but_a_safe_alphabet() {
        assert!(DirectoryId::parse("corp-1").is_ok());
        assert!(DirectoryId::parse("corp/1").is_err());
        assert!(Anchor::parse("").is_err());
        assert!(Anchor::parse(&"a".repeat(65)).is_err());
    }
}

/// A short code shown to the person, logged, and stored in the audit row, so an administrator can
/// find what happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SupportCode(pub String);

impl SupportCode {
    pub fn new() -> Self {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        // One draw from the system for the ten characters: 32 letters, so the five low bits of
        // each random byte pick one without bias.
        let mut bytes = [0u8; 10];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let mut s = String::with_capacity(11);
        for (i, b) in bytes.iter().enumerate() {
            if i == 5 {
                s.push('-');
            }
            s.push(char::from(ALPHABET[usize::from(b & 31)]));
        }
        Self(s)
    }
}

impl Default for SupportCode {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SupportCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
