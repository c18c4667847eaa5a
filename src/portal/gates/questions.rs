//! The security-questions method. Answers are normalised (case, spaces) before they are hashed
//! with argon2id, so "  Paris " and "paris" are the same answer; each is 3–40 characters and no
//! two of a person's answers may be alike. Never offered to privileged accounts.

use crate::i18n::Tr;
use secrecy::{ExposeSecret, SecretString};

/// The predefined questions, by id; their text is in the message catalogues.
pub const PREDEFINED: [&str; 10] = [
    "first_pet",
    "birth_city",
    "first_school",
    "childhood_friend",
    "first_street",
    "parents_met",
    "first_job_town",
    "favourite_teacher",
    "first_concert",
    "grandmother_first_name",
];

pub const MIN_CHARS: usize = 3;
pub const MAX_CHARS: usize = 40;

/// Every question on offer: (id, text in the person's language). The administrator's own are
/// `custom:<n>`, in the words they wrote.
pub fn offered(tr: Tr, custom: &[String]) -> Vec<(String, String)> {
    PREDEFINED
        .iter()
        .map(|id| ((*id).to_string(), tr.t(&format!("questions.{id}")).to_string()))
        .chain(custom.iter().enumerate().map(|(i, q)| (format!("custom:{i}"), q.clone())))
        .collect()
}

/// The text of one question id, if it is on offer.
pub fn text(tr: Tr, custom: &[String], id: &str) -> Option<String> {
    offered(tr, custom).into_iter().find(|(q, _)| q == id).map(|(_, t)| t)
}

/// The answer as it is hashed: lower case, runs of spaces made one, trimmed. `Err` holds the
/// catalogue key of what is wrong with it.
pub fn normalise(answer: &str) -> Result<String, &'static str> {
    let n = answer.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    match n.chars().count() {
        c if c < MIN_CHARS => Err("questions.too_short"),
        c if c > MAX_CHARS => Err("questions.too_long"),
        _ if n.chars().any(char::is_control) => Err("questions.too_short"),
        _ => Ok(n),
    }
}

/// Checks a whole registration: known, distinct questions, the right number, and answers that
/// are valid and not alike. Returns the normalised answers, or the catalogue key of the problem.
pub fn check_registration(
    pairs: &[(String, SecretString)],
    wanted: usize,
    custom: &[String],
) -> Result<Vec<(String, SecretString)>, &'static str> {
    if pairs.len() != wanted {
        return Err("questions.answer_all");
    }
    let mut out: Vec<(String, SecretString)> = Vec::with_capacity(pairs.len());
    for (q, a) in pairs {
        if text(Tr::default(), custom, q).is_none() {
            return Err("questions.choose_each");
        }
        if out.iter().any(|(seen, _)| seen == q) {
            return Err("questions.distinct_questions");
        }
        let n: SecretString = normalise(a.expose_secret())?.into();
        if out.iter().any(|(_, seen)| seen.expose_secret() == n.expose_secret()) {
            return Err("questions.distinct_answers");
        }
        out.push((q.clone(), n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_same_whatever_the_case_and_spacing() {
        assert_eq!(normalise("  New   York ").unwrap(), "new york");
        assert_eq!(normalise("PARIS").unwrap(), normalise("paris").unwrap());
        assert_eq!(normalise("ab"), Err("questions.too_short"));
        assert_eq!(normalise(&"x".repeat(41)), Err("questions.too_long"));
    }

    #[test]
    fn a_registration_needs_distinct_questions_and_answers() {
        let custom = vec!["Name of your first boat?".to_string()];
        let pair = |q: &str, a: &str| (q.to_string(), SecretString::from(a.to_string()));
        let ok = check_registration(&[pair("first_pet", "Rex"), pair("custom:0", "Wave Dancer")], 2, &custom);
        assert_eq!(ok.unwrap()[1].1.expose_secret(), "wave dancer");
        assert_eq!(
            check_registration(&[pair("first_pet", "Rex"), pair("first_pet", "Max")], 2, &custom).err(),
            Some("questions.distinct_questions")
        );
        assert_eq!(
            check_registration(&[pair("first_pet", "Rex"), pair("birth_city", " rex")], 2, &custom).err(),
            Some("questions.distinct_answers")
        );
        assert_eq!(check_registration(&[pair("first_pet", "Rex")], 2, &custom).err(), Some("questions.answer_all"));
        assert_eq!(
            check_registration(&[pair("nope", "Rex"), pair("first_pet", "Max")], 2, &custom).err(),
            Some("questions.choose_each")
        );
    }
}
