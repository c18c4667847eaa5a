//! How hard a password would be to guess, as zxcvbn estimates it: a score from 0 to 4 and
//! advice, as keys into the message catalogues (`strength.*`). It advises the person choosing;
//! it never refuses a password on its own (the directory's and the portal's rules do).

use zeroize::Zeroizing;
use zxcvbn::feedback::{Suggestion, Warning};

/// Longer passwords are estimated on their first this many characters: the estimate's work grows
/// faster than the length, and past it every password scores the highest anyway.
const ESTIMATED_CHARS: usize = 64;

/// The advice that symbols, digits and capitals are not needed: wrong where the policy asks
/// for them.
pub const NO_SYMBOLS_NEEDED: &str = "strength.s_no_symbols_needed";

/// zxcvbn's verdict, in catalogue keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strength {
    /// 0 (guessed within a thousand tries) to 4 (more than ten billion).
    pub score: u8,
    pub warning: Option<&'static str>,
    pub suggestions: Vec<&'static str>,
}

impl Strength {
    /// The catalogue key of the score's word ("Very weak" … "Strong").
    pub fn label(&self) -> &'static str {
        match self.score {
            0 => "strength.score_0",
            1 => "strength.score_1",
            2 => "strength.score_2",
            3 => "strength.score_3",
            _ => "strength.score_4",
        }
    }
}

/// The estimate for `password`, knowing the person's `names` (which make a password weaker).
pub fn estimate(password: &str, names: &[&str]) -> Strength {
    // Reserved up front, so that no copy is left behind by a reallocation.
    let mut head = Zeroizing::new(String::with_capacity(password.len()));
    head.extend(password.chars().take(ESTIMATED_CHARS));
    let entropy = zxcvbn::zxcvbn(&head, names);
    let feedback = entropy.feedback();
    Strength {
        score: u8::from(entropy.score()),
        warning: feedback.and_then(|f| f.warning()).map(warning_key),
        suggestions: feedback.map(|f| f.suggestions().iter().map(|s| suggestion_key(*s)).collect()).unwrap_or_default(),
    }
}

fn warning_key(w: Warning) -> &'static str {
    match w {
        Warning::StraightRowsOfKeysAreEasyToGuess => "strength.w_rows",
        Warning::ShortKeyboardPatternsAreEasyToGuess => "strength.w_keyboard",
        Warning::RepeatsLikeAaaAreEasyToGuess => "strength.w_repeats",
        Warning::RepeatsLikeAbcAbcAreOnlySlightlyHarderToGuess => "strength.w_repeated_groups",
        Warning::ThisIsATop10Password => "strength.w_top10",
        Warning::ThisIsATop100Password => "strength.w_top100",
        Warning::ThisIsACommonPassword => "strength.w_common",
        Warning::ThisIsSimilarToACommonlyUsedPassword => "strength.w_similar",
        Warning::SequencesLikeAbcAreEasyToGuess => "strength.w_sequences",
        Warning::RecentYearsAreEasyToGuess => "strength.w_years",
        Warning::AWordByItselfIsEasyToGuess => "strength.w_word",
        Warning::DatesAreOftenEasyToGuess => "strength.w_dates",
        Warning::NamesAndSurnamesByThemselvesAreEasyToGuess => "strength.w_names",
        Warning::CommonNamesAndSurnamesAreEasyToGuess => "strength.w_common_names",
    }
}

fn suggestion_key(s: Suggestion) -> &'static str {
    match s {
        Suggestion::UseAFewWordsAvoidCommonPhrases => "strength.s_few_words",
        Suggestion::NoNeedForSymbolsDigitsOrUppercaseLetters => NO_SYMBOLS_NEEDED,
        Suggestion::AddAnotherWordOrTwo => "strength.s_another_word",
        Suggestion::CapitalizationDoesntHelpVeryMuch => "strength.s_capitals",
        Suggestion::AllUppercaseIsAlmostAsEasyToGuessAsAllLowercase => "strength.s_all_upper",
        Suggestion::ReversedWordsArentMuchHarderToGuess => "strength.s_reversed",
        Suggestion::PredictableSubstitutionsDontHelpVeryMuch => "strength.s_substitutions",
        Suggestion::UseALongerKeyboardPatternWithMoreTurns => "strength.s_keyboard",
        Suggestion::AvoidRepeatedWordsAndCharacters => "strength.s_repeats",
        Suggestion::AvoidSequences => "strength.s_sequences",
        Suggestion::AvoidRecentYears => "strength.s_recent_years",
        Suggestion::AvoidYearsThatAreAssociatedWithYou => "strength.s_your_years",
        Suggestion::AvoidDatesAndYearsThatAreAssociatedWithYou => "strength.s_your_dates",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_common_password_is_very_weak_and_says_why_a_long_phrase_is_strong() {
        let weak = estimate("password", &[]);
        assert_eq!(weak.score, 0);
        assert_eq!(weak.warning, Some("strength.w_top10"));
        assert_eq!(weak.label(), "strength.score_0");
        let strong = estimate("quiet harbour lantern morning", &[]);
        assert_eq!(strong.score, 4, "{strong:?}");
        assert!(strong.warning.is_none() && strong.suggestions.is_empty());
    }

    #[test]
    fn the_persons_own_names_make_a_password_weaker() {
        let plain = estimate("liddellwonder", &[]);
        let named = estimate("liddellwonder", &["alice", "liddell"]);
        assert!(named.score < plain.score, "{plain:?} {named:?}");
    }

    #[test]
    fn a_very_long_password_is_estimated_quickly_on_its_head() {
        let long = "a1!".repeat(10_000);
        assert!(estimate(&long, &[]).score <= 4);
    }
}
