//! The banned-password check, the way Microsoft Entra Password Protection documents it: the
//! password is normalised, banned terms are looked for in it with one typo allowed, and what is
//! left must be worth something.
//!
//! 1. **Normalise**: lower case, then look-alikes become the letter they stand for. The table is
//!    the substitutions people actually make to dress up a word (`0→o 1→l 3→e 4→a 5→s 7→t
//!    8→b @→a $→s !→i`): each stands for one letter, except `1`, read both as `l` and as `i`
//!    (every reading is checked, and the weakest counts). Other digits (2, 6, 9) stay digits:
//!    in passwords they stand for themselves far more often than for a letter, and mapping them
//!    would turn years and numbers into words that are not there.
//! 2. **Names**: the person's own names and the organisation's name (each token of 4 characters
//!    or more, normalised the same way) found anywhere in it refuse it outright.
//! 3. **Fuzzy match**: a banned term is found where a part of the password is within one edit
//!    of it (a letter changed, added or left out). A match is never shorter than 4 characters,
//!    so a 4-letter term is not found in any 3 letters of it.
//! 4. **Score**: each banned term found is 1 point, each character not part of one is 1 point;
//!    under 5 points it is refused. Found terms do not overlap, and of all the ways to read the
//!    password as terms and other characters, the one that scores least counts.

/// The fewest points a password must score.
pub const MIN_SCORE: usize = 5;
/// Names and terms shorter than this are not looked for.
pub const MIN_TERM: usize = 4;
/// Custom terms longer than this are refused by the configuration check.
pub const MAX_TERM: usize = 16;

/// A list of banned terms, normalised once.
#[derive(Debug, Clone, Default)]
pub struct BannedTerms {
    terms: Vec<Term>,
    /// Each normalised form, as (term, form), by its characters 0 and 1, by 1 and 2, and by 2
    /// and 3: a part of a password within one edit of a form shares one of these pairs with it
    /// at a place the edit decides (see [`candidates`]), so only a few forms are tried at each
    /// place of a password, not every form that starts with its letter.
    by_pair: [PairIndex; 3],
}

/// Forms, as (term, form), by a pair of their characters (see [`pair`]).
type PairIndex = std::collections::HashMap<u64, Vec<(usize, usize)>, std::hash::BuildHasherDefault<PairHash>>;

/// Two characters as one key.
fn pair(a: char, b: char) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// The hash of a [`pair`]: one multiplication, where the standard library's keyed hash took
/// longer than the look-up itself (five look-ups at each place of a password). The index is
/// built once from the lists, never from what a request sends, so a key chosen to collide can
/// only land in one of its buckets, each as long as the lists made it.
#[derive(Default)]
struct PairHash(u64);

impl std::hash::Hasher for PairHash {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone)]
struct Term {
    /// As listed (lower case), to name it in a refusal.
    listed: String,
    /// Every normalised reading of it.
    forms: Vec<Vec<char>>,
}

impl BannedTerms {
    /// The terms of `list` of at least [`MIN_TERM`] characters once normalised; the same term
    /// listed twice is kept once.
    pub fn new<S: AsRef<str>>(list: impl IntoIterator<Item = S>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let terms: Vec<Term> = list
            .into_iter()
            .filter_map(|t| {
                let listed = fold(t.as_ref().trim());
                let forms = readings(&listed);
                let long_enough = forms.iter().all(|f| f.len() >= MIN_TERM);
                (long_enough && seen.insert(forms[0].clone())).then_some(Term { listed, forms })
            })
            .collect();
        let mut by_pair: [PairIndex; 3] = Default::default();
        for (t, term) in terms.iter().enumerate() {
            for (f, form) in term.forms.iter().enumerate() {
                for (at, index) in by_pair.iter_mut().enumerate() {
                    index.entry(pair(form[at], form[at + 1])).or_default().push((t, f));
                }
            }
        }
        BannedTerms { terms, by_pair }
    }

    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// What the check found in a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Its points (see the module's note), for its weakest reading.
    pub score: usize,
    /// The banned terms found in that reading, as listed, in the order they appear.
    pub terms: Vec<String>,
    /// A name of the person's found in it (as given), which refuses it whatever its score.
    pub name: Option<String>,
    /// The organisation's name found in it, which refuses it whatever its score.
    pub organisation: bool,
}

impl Verdict {
    pub fn refused(&self) -> bool {
        self.name.is_some() || self.organisation || self.score < MIN_SCORE
    }
}

/// Checks `password` against `lists` (the global one and the organisation's own), the person's
/// `names` (user name, display name: split into tokens here) and the `organisation`'s name.
pub fn check(password: &str, lists: &[&BannedTerms], names: &[&str], organisation: Option<&str>) -> Verdict {
    let person: Vec<(String, Vec<Vec<char>>)> =
        names.iter().flat_map(|n| tokens(&nfkc(n))).map(|t| (t.clone(), readings(&t.to_lowercase()))).collect();
    let organisation: Vec<Vec<Vec<char>>> = organisation
        .map(fold)
        .into_iter()
        .flat_map(|o| tokens(&o).into_iter().chain(joined(&o)))
        .map(|t| readings(&t.to_lowercase()))
        .collect();
    let mut weakest: Option<Verdict> = None;
    // The password's readings are wiped once checked, as the password is.
    let lower = zeroize::Zeroizing::new(password.to_lowercase());
    for reading in readings(&lower).into_iter().map(zeroize::Zeroizing::new) {
        let name = person
            .iter()
            .find(|(_, forms)| forms.iter().any(|f| contains(&reading, f)))
            .map(|(token, _)| token.clone());
        let organisation = organisation.iter().any(|forms| forms.iter().any(|f| contains(&reading, f)));
        let (score, terms) = score(&reading, lists);
        let verdict = Verdict { score, terms, name, organisation };
        let weaker = match &weakest {
            None => true,
            Some(w) => {
                (verdict.refused(), std::cmp::Reverse(verdict.score)) > (w.refused(), std::cmp::Reverse(w.score))
            }
        };
        if weaker {
            weakest = Some(verdict);
        }
    }
    weakest.unwrap_or(Verdict { score: 0, terms: Vec::new(), name: None, organisation: false })
}

/// The tokens of a name worth looking for: runs of letters and digits of [`MIN_TERM`] or more.
/// A name or a listed term as a password is compared with it: NFKC (the password itself comes
/// normalised so, see [`super::nist::normalised`]), then lower case.
fn fold(text: &str) -> String {
    nfkc(text).to_lowercase()
}

fn nfkc(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    text.nfkc().collect()
}

fn tokens(name: &str) -> Vec<String> {
    name.split(|c: char| !c.is_alphanumeric()).filter(|t| t.chars().count() >= MIN_TERM).map(str::to_string).collect()
}

/// A name of several words written as one ("Contoso Pharma" as "contosopharma").
fn joined(name: &str) -> Option<String> {
    let all: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
    (all.chars().count() >= MIN_TERM && name.split_whitespace().nth(1).is_some()).then_some(all)
}

/// Every normalised reading of `lower` (already lower case): one per way of reading `1`.
fn readings(lower: &str) -> Vec<Vec<char>> {
    let one_as: &[char] = if lower.contains('1') { &['l', 'i'] } else { &['l'] };
    one_as.iter().map(|&one| lower.chars().map(|c| look_alike(c, one)).collect()).collect()
}

fn look_alike(c: char, one: char) -> char {
    match c {
        '0' => 'o',
        '1' => one,
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        '!' => 'i',
        other => other,
    }
}

fn contains(haystack: &[char], needle: &[char]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// One place a term was found, and how many edits away.
#[derive(Debug, Clone, Copy)]
struct Found {
    term: usize,
    start: usize,
    end: usize,
    edits: usize,
}

/// The points of one reading, and the terms found in it: of all the ways to read it as found
/// terms (which do not overlap) and other characters, the one that scores least, so that a short
/// term found exactly cannot hide a longer one found with a typo (`Passwird`: "password", not
/// "pass" and four characters).
fn score(reading: &[char], lists: &[&BannedTerms]) -> (usize, Vec<String>) {
    let found = found(reading, lists);
    let n = reading.len();
    let mut starting: Vec<Vec<Found>> = vec![Vec::new(); n];
    for f in found {
        starting[f.start].push(f);
    }
    // best[i]: the fewest points for the characters from i on (and of those, the fewest edits:
    // a term found as it is named, rather than one a typo away), and the match taken at i.
    let mut best: Vec<((usize, usize), Option<Found>)> = vec![((0, 0), None); n + 1];
    for i in (0..n).rev() {
        let ((points, edits), _) = best[i + 1];
        best[i] = ((points + 1, edits), None);
        for f in &starting[i] {
            let ((points, edits), _) = best[f.end];
            let this = (points + 1, edits + f.edits);
            if this < best[i].0 {
                best[i] = (this, Some(*f));
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < n {
        match best[i].1 {
            Some(f) => {
                if let Some(term) = listed(lists, f.term).filter(|t| !names.contains(&t.listed)) {
                    names.push(term.listed.clone());
                }
                i = f.end;
            }
            None => i += 1,
        }
    }
    (best[0].0 .0, names)
}

/// Every place in `reading` where a term of `lists` is found within one edit. A term's index
/// counts on from one list to the next.
fn found(reading: &[char], lists: &[&BannedTerms]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut offset = 0;
    for list in lists {
        for start in 0..reading.len() {
            // The same form may come from two pairs: a place found twice changes no score.
            for (t, f) in candidates(list, &reading[start..]) {
                find_at(reading, start, &list.terms[t].forms[f], offset + t, &mut found);
            }
        }
        offset += list.terms.len();
    }
    found
}

/// The forms of `list` that may be found, within one edit, at the start of `text`. Every such
/// part is 4 characters or more (see [`MIN_TERM`]), and where the one edit is decides which pair
/// of the form's characters `text` begins with, or has at 1–2 or 2–3:
/// * no edit, or one at the form's third character or later: the form's 0–1 at 0–1;
/// * its first or second character changed: its 2–3 at 2–3;
/// * a letter added after its first: its 1–2 at 2–3;
/// * its first character left out: its 1–2 at 0–1; its second left out: its 2–3 at 1–2.
fn candidates<'a>(list: &'a BannedTerms, text: &[char]) -> impl Iterator<Item = (usize, usize)> + 'a {
    let keys = match *text {
        [a, b, c, d, ..] => Some([(0, pair(a, b)), (2, pair(c, d)), (1, pair(c, d)), (1, pair(a, b)), (2, pair(b, c))]),
        _ => None,
    };
    keys.into_iter().flatten().filter_map(|(at, pair)| list.by_pair[at].get(&pair)).flatten().copied()
}

/// The term of `lists` at `index`, counting on from one list to the next.
fn listed<'a>(lists: &[&'a BannedTerms], mut index: usize) -> Option<&'a Term> {
    for list in lists {
        match list.terms.get(index) {
            Some(term) => return Some(term),
            None => index -= list.terms.len(),
        }
    }
    None
}

/// Whether a part of `text` starting at `start` is within one edit of `term` (that part at
/// least [`MIN_TERM`] long). A letter added counts only inside the term: one added at either end
/// is the term found exactly and a character of the person's own (but a doubled first or last
/// letter, "blankk", reads as one added inside).
fn find_at(text: &[char], start: usize, term: &[char], index: usize, out: &mut Vec<Found>) {
    let (n, m) = (text.len(), term.len());
    // The same length: equal, or one letter changed.
    if start + m <= n {
        let mut differ = text[start..start + m].iter().zip(term).filter(|(a, b)| a != b);
        let first = differ.next();
        if differ.next().is_none() {
            out.push(Found { term: index, start, end: start + m, edits: usize::from(first.is_some()) });
        }
    }
    // One letter more in the text, inside the term.
    if start + m < n
        && text[start] == term[0]
        && text[start + m] == term[m - 1]
        && one_removed_equals(&text[start..=start + m], term)
    {
        out.push(Found { term: index, start, end: start + m + 1, edits: 1 });
    }
    // One letter of the term left out.
    if m > MIN_TERM && start + m - 1 <= n && one_removed_equals(term, &text[start..start + m - 1]) {
        out.push(Found { term: index, start, end: start + m - 1, edits: 1 });
    }
}

/// Whether `longer` with one of its characters removed equals `shorter` (one longer).
fn one_removed_equals(longer: &[char], shorter: &[char]) -> bool {
    debug_assert_eq!(longer.len(), shorter.len() + 1);
    let prefix = longer.iter().zip(shorter).take_while(|(a, b)| a == b).count();
    longer[prefix + 1..] == shorter[prefix..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(password: &str, custom: &[&str], global: &[&str], names: &[&str]) -> bool {
        let (c, g) = (BannedTerms::new(custom), BannedTerms::new(global));
        check(password, &[&g, &c], names, None).refused()
    }

    #[test]
    fn entras_examples_are_refused_and_accepted_as_documented() {
        // "blank" banned: its dressed-up forms are found.
        assert!(refused("Bl@nK", &[], &["blank"], &[]));
        // "abcdef" banned: one letter changed, added or left out.
        for p in ["abcdeg", "abcdefg", "abcde"] {
            assert!(refused(p, &["abcdef"], &[], &[]), "{p}");
        }
        // A user named Poll.
        let v = check("p0LL23fb", &[], &["Poll"], None);
        assert_eq!(v.name.as_deref(), Some("Poll"));
        assert!(v.refused());
        // "contoso" custom, "blank" global: 2 terms and 2 characters, 4 points.
        let (custom, global) = (BannedTerms::new(["contoso"]), BannedTerms::new(["blank"]));
        let v = check("C0ntos0Blank12", &[&global, &custom], &[], None);
        assert_eq!((v.score, v.terms.clone()), (4, vec!["contoso".to_string(), "blank".to_string()]));
        assert!(v.refused());
        // The same with "f9!" left: 5 points.
        let v = check("ContoS0Bl@nkf9!", &[&global, &custom], &[], None);
        assert_eq!(v.score, 5);
        assert!(!v.refused());
    }

    #[test]
    fn a_password_without_banned_terms_scores_its_length() {
        let v = check("correct horse battery", &[&BannedTerms::new(["blank"])], &["Alice Smith"], Some("Contoso"));
        assert_eq!(v, Verdict { score: 21, terms: vec![], name: None, organisation: false });
        assert!(!v.refused());
        assert!(check("x9#q", &[], &[], None).refused(), "4 points");
    }

    #[test]
    fn the_organisations_name_refuses_it_outright() {
        assert!(check("Contoso-is-great-2026", &[], &[], Some("Contoso")).organisation);
        assert!(check("ContosoPharma!!", &[], &[], Some("Contoso Pharma")).refused());
        assert!(!check("a long enough passphrase", &[], &[], Some("Contoso")).refused());
    }

    #[test]
    fn one_is_read_both_as_l_and_as_i() {
        let list = BannedTerms::new(["winter", "hello"]);
        assert_eq!(check("w1nter", &[&list], &[], None).terms, vec!["winter"]);
        assert_eq!(check("he11o", &[&list], &[], None).terms, vec!["hello"]);
    }

    #[test]
    fn names_and_terms_under_four_characters_are_not_looked_for() {
        assert!(BannedTerms::new(["abc", "  ", "abcd"]).len() == 1);
        assert_eq!(check("al-2026-xyz", &[], &["Al Li"], None).name, None);
        // A four-letter term is not found in three of its letters.
        assert!(check("passion-fruit", &[&BannedTerms::new(["pass"])], &[], None).terms == vec!["pass"]);
        assert!(check("ass-kicker", &[&BannedTerms::new(["pass"])], &[], None).terms.is_empty());
    }

    #[test]
    fn found_terms_do_not_overlap_and_the_reading_that_scores_least_counts() {
        let list = BannedTerms::new(["password", "pass", "word"]);
        let v = check("password1", &[&list], &[], None);
        assert_eq!((v.score, v.terms), (2, vec!["password".to_string()]));
        // A short term found exactly does not hide a longer one found with a typo.
        let v = check("Passwird!", &[&list], &[], None);
        assert_eq!((v.score, v.terms), (2, vec!["password".to_string()]));
        assert!(check("Passwurd123", &[&list], &[], None).refused());
        // A letter added at the end of a term is a character of one's own.
        assert_eq!(check("blankf", &[&BannedTerms::new(["blank"])], &[], None).score, 2);
        assert_eq!(check("blanxk", &[&BannedTerms::new(["blank"])], &[], None).score, 1);
        // Of two terms covering the same letters, the one found as it is named is named.
        let lists = [&BannedTerms::new(["blink"]), &BannedTerms::new(["blank"])];
        assert_eq!(check("blank-2026", &lists, &[], None).terms, vec!["blank"]);
        let v = check("blankblank", &[&BannedTerms::new(["blank"])], &[], None);
        assert_eq!(v.score, 2, "each time it is found is a point");
    }

    #[test]
    fn the_pairs_find_every_place_that_trying_every_term_everywhere_finds() {
        // Terms and texts over four letters, so that near matches of every kind are common.
        let list = BannedTerms::new(["abcd", "abcab", "bacdcb", "ddcba", "aabbcc", "cabd", "dabcdab"]);
        let every = |reading: &[char]| {
            let mut all = Vec::new();
            for start in 0..reading.len() {
                for (t, term) in list.terms.iter().enumerate() {
                    for form in &term.forms {
                        find_at(reading, start, form, t, &mut all);
                    }
                }
            }
            all
        };
        let key = |f: &Found| (f.term, f.start, f.end, f.edits);
        let set = |found: Vec<Found>| found.iter().map(key).collect::<std::collections::BTreeSet<_>>();
        let mut seed = 0x2545_f491_u32;
        let mut places = 0;
        for _ in 0..3000 {
            let len = 3 + (seed % 12) as usize;
            let reading: Vec<char> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    ['a', 'b', 'c', 'd'][(seed % 4) as usize]
                })
                .collect();
            let expected = set(every(&reading));
            places += expected.len();
            assert_eq!(set(found(&reading, &[&list])), expected, "{}", reading.iter().collect::<String>());
        }
        assert!(places > 3000, "the texts hold near matches of the terms ({places} places)");
    }
}

#[cfg(test)]
mod nfkc_tests {
    use super::*;

    #[test]
    fn full_width_names_and_listed_terms_are_the_letters_they_stand_for() {
        let custom = BannedTerms::new(["ｃｏｎｔｏｓｏ"]);
        let v = check("contoso12", &[&custom], &[], None);
        assert_eq!(v.terms, vec!["contoso".to_string()], "{v:?}");
        assert!(v.refused());
        let named = check("wonderpoll77", &[], &["Ｐｏｌｌ Ｓｍｉｔｈ"], None);
        assert!(named.name.is_some(), "{named:?}");
        let org = check("xxfabrikamxx", &[], &[], Some("ＦＡＢＲＩＫＡＭ"));
        assert!(org.organisation, "{org:?}");
    }
}
