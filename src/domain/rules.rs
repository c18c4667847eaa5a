//! Password rules that can be checked without the directory, to tell a person which rule a
//! refused password broke when the directory does not say (and, later, to check as they type).

/// Active Directory's complexity rule: characters from at least three of five kinds (upper case,
/// lower case, digits, symbols, other letters), and not the account name (when it is longer
/// than two characters), ignoring case.
pub fn meets_ad_complexity(password: &str, account_name: &str) -> bool {
    ad_complexity_refusal(password, account_name).is_none()
}

/// Which part of Active Directory's complexity rule `password` breaks, named as the person
/// should hear it: too few kinds of character (`NotComplex`), or, mixing them well enough, the
/// account name inside it (`ContainsUserName`), which AD reports as "complexity" too.
pub fn ad_complexity_refusal(password: &str, account_name: &str) -> Option<super::Outcome> {
    let kinds = [
        password.chars().any(char::is_uppercase),
        password.chars().any(char::is_lowercase),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
        password.chars().any(|c| c.is_alphabetic() && !c.is_uppercase() && !c.is_lowercase()),
    ];
    if kinds.iter().filter(|k| **k).count() < 3 {
        return Some(super::Outcome::NotComplex);
    }
    let name = account_name.to_lowercase();
    let contains_name = name.chars().count() > 2 && password.to_lowercase().contains(&name);
    contains_name.then_some(super::Outcome::ContainsUserName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_kinds_of_characters_make_a_complex_password() {
        assert!(meets_ad_complexity("Passw0rd", "bob"));
        assert!(meets_ad_complexity("pass-w0rd", "bob"));
        assert!(!meets_ad_complexity("password", "bob"));
        assert!(!meets_ad_complexity("Password", "bob"));
        assert!(!meets_ad_complexity("Alice#2024", "alice"), "contains the account name");
        assert!(meets_ad_complexity("Al#2024x", "al"), "names of two characters do not count");
        // Said as the rule it breaks: mixing kinds well enough, the name is what is wrong.
        assert_eq!(ad_complexity_refusal("Bob#2024xyz", "bob"), Some(crate::domain::Outcome::ContainsUserName));
        assert_eq!(ad_complexity_refusal("password", "bob"), Some(crate::domain::Outcome::NotComplex));
    }
}
