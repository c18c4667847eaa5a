//! Distinguished names in the one spelling comparisons use (RFC 4514), so a scope's base DN or
//! group matches however the directory or an administrator spelt it.

/// The RDNs of a DN, each in the one spelling comparisons use (RFC 4514): split at commas (or
/// semicolons) that are not escaped; escapes decoded (`\2C` and `\,` alike, `\53` and `S`
/// alike); lower-cased; unescaped spaces around `=` and `+` and at the ends dropped; and the
/// characters that need it escaped again, one way only. An escaped comma stays part of its name.
pub fn dn_rdns(dn: &str) -> Vec<String> {
    // (character, was it escaped)
    let mut rdns: Vec<Vec<(char, bool)>> = vec![Vec::new()];
    let mut chars = dn.chars().peekable();
    while let Some(c) = chars.next() {
        let Some(current) = rdns.last_mut() else { break };
        match c {
            '\\' => {
                let Some(a) = chars.next() else {
                    current.push(('\\', true));
                    break;
                };
                let hex_pair = a.is_ascii_hexdigit() && chars.peek().is_some_and(|b| b.is_ascii_hexdigit());
                let decoded = match (hex_pair, chars.peek().copied()) {
                    (true, Some(b)) => {
                        chars.next();
                        u8::from_str_radix(&format!("{a}{b}"), 16).map(char::from).unwrap_or('?')
                    }
                    _ => a,
                };
                current.push((decoded, true));
            }
            ',' | ';' => rdns.push(Vec::new()),
            _ => current.push((c, false)),
        }
    }
    rdns.iter().map(|tokens| canonical_rdn(tokens)).collect()
}

/// One RDN's tokens in their canonical text (see [`dn_rdns`]).
fn canonical_rdn(tokens: &[(char, bool)]) -> String {
    let blank = |t: &(char, bool)| t.0 == ' ' && !t.1;
    let separator = |t: &(char, bool)| (t.0 == '=' || t.0 == '+') && !t.1;
    let mut kept: Vec<(char, bool)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let next_is_separator = tokens[i..].iter().find(|t| !blank(t)).is_some_and(separator);
        let after_separator = kept.last().is_none_or(separator);
        if blank(t) && (after_separator || next_is_separator) {
            continue;
        }
        kept.push(*t);
    }
    while kept.last().is_some_and(blank) {
        kept.pop();
    }
    let mut out = String::new();
    for (c, escaped) in kept {
        if escaped && (",+\"\\<>;=# ".contains(c) || c.is_control()) {
            out.push('\\');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// A DN in the one spelling that comparisons use (see [`dn_rdns`]).
pub fn normalise_dn(dn: &str) -> String {
    dn_rdns(dn).join(",")
}

/// Whether `dn` is `base` or lies below it, RDN by RDN.
pub fn dn_within(dn: &str, base: &str) -> bool {
    let (dn, base) = (dn_rdns(dn), dn_rdns(base));
    dn.len() >= base.len() && dn[dn.len() - base.len()..] == base[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_have_one_spelling_for_comparison() {
        assert_eq!(normalise_dn("CN=Smith\\2C John , OU = Staff"), "cn=smith\\, john,ou=staff");
        assert_eq!(normalise_dn("cn=Smith\\, John,ou=Staff"), "cn=smith\\, john,ou=staff");
        assert_ne!(normalise_dn("cn=Smith\\, John"), normalise_dn("cn=Smith\\,John"));
        // Escaped characters that need no escape read as themselves; those that do keep one.
        assert_eq!(normalise_dn("OU=\\53ales;DC=corp"), "ou=sales,dc=corp");
        assert_eq!(normalise_dn("CN=\\5c"), normalise_dn("CN=\\\\"));
        // An escaped space at the end is part of the name, and does not swallow the comma.
        assert_ne!(normalise_dn("CN=Tier1\\20,OU=Admins"), normalise_dn("CN=Tier1\\,OU=Admins"));
        assert_eq!(dn_rdns("CN=Tier1\\20,OU=Admins").len(), 2);
        // A space after an escaped "=" is part of the value.
        assert_ne!(normalise_dn("OU=R\\= D"), normalise_dn("OU=R\\=D"));
        // One spelling: normalising again changes nothing.
        for dn in ["CN=\\3141,OU=x", "CN=a\\ +uid=b", "CN=Tier1\\20,OU=Admins", "OU=\\23hash"] {
            assert_eq!(normalise_dn(&normalise_dn(dn)), normalise_dn(dn), "{dn}");
        }
    }
}
