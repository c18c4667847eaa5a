//! Recovery codes: ten single-use codes of 16 characters (80 random bits) from Crockford's
//! alphabet (no I, L, O or U: nothing to misread), shown once in groups of four. Only a keyed
//! hash of each is kept, bound to its person; a typed code is read leniently (any case, with or
//! without the dashes, O for 0 and I or L for 1).

use crate::store::security::Person;
use rand::Rng;
use zeroize::Zeroizing;

/// How many codes a person gets at a time.
pub const COUNT: usize = 10;
const LENGTH: usize = 16;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new set of codes, each as shown: `XXXX-XXXX-XXXX-XXXX`.
pub fn generate() -> Vec<Zeroizing<String>> {
    let mut rng = rand::rngs::OsRng;
    (0..COUNT)
        .map(|_| {
            let chars: Zeroizing<Vec<u8>> =
                Zeroizing::new((0..LENGTH).map(|_| ALPHABET[rng.gen_range(0..32)]).collect());
            let groups: Vec<&str> = chars.chunks(4).map(|g| std::str::from_utf8(g).unwrap_or_default()).collect();
            Zeroizing::new(groups.join("-"))
        })
        .collect()
}

/// A typed code as it was made, or `None` when it cannot be one.
pub fn normalise(typed: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(LENGTH));
    for c in typed.chars().filter(|c| !c.is_whitespace() && *c != '-') {
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() == LENGTH {
            return None;
        }
        out.push(c);
    }
    (out.len() == LENGTH).then_some(out)
}

/// The keyed hash of a code as [`generate`] shows it.
pub fn hash_of_shown(key: &crate::crypto::MacKey, person: Person<'_>, shown: &str) -> String {
    hash(key, person, &shown.replace('-', ""))
}

/// The keyed hash a code is kept (and looked up) as: bound to its person.
pub fn hash(key: &crate::crypto::MacKey, person: Person<'_>, normalised: &str) -> String {
    key.hash(&[b"recovery-code", person.directory.as_bytes(), person.anchor.as_bytes(), normalised.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_read_back_however_typed() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let first = codes[0].as_str();
        assert_eq!(first.len(), 19, "{first}");
        assert_eq!(first.matches('-').count(), 3, "{first}");
        assert!(codes.iter().skip(1).all(|c| c.as_str() != first), "all different");
        let plain: String = first.chars().filter(|c| *c != '-').collect();
        assert_eq!(normalise(first).as_deref().map(String::as_str), Some(plain.as_str()));
        assert_eq!(
            normalise(&format!(" {} ", first.to_lowercase())).as_deref().map(String::as_str),
            Some(plain.as_str())
        );
        assert_eq!(normalise("0O1I-L000-0000-0000").as_deref().map(String::as_str), Some("0011100000000000"));
        assert_eq!(normalise("ABCD-EFGH-JKMN-PQRU"), None, "U is not in the alphabet");
        assert_eq!(normalise("ABCD-EFGH-JKMN"), None, "too short");
        assert_eq!(normalise("ABCD-EFGH-JKMN-PQRS-T"), None, "too long");
    }
}
