//! Message catalogues: every sentence a person reads, in each language the portal speaks.
//!
//! One TOML file per language under `locales/`, built into the binary. English is complete by
//! definition; a test checks that every other catalogue has exactly its keys and placeholders.
//! A page learns its language from the request (see [`negotiate`]) and reads text through [`Tr`].
//! This module imports nothing of the application: the domain's error keys point into it.

use std::collections::HashMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Fr,
    De,
    Es,
    Nl,
    It,
    Pt,
    Pl,
    Sv,
    Tr,
    Ja,
    Ar,
}

/// What the portal knows of each language: its code, its name in itself (for the switch on
/// every page), its catalogue, and the thousands separator of its numbers.
struct About {
    code: &'static str,
    name: &'static str,
    source: &'static str,
    thousands: &'static str,
}

impl Lang {
    pub const ALL: [Lang; 12] = [
        Lang::En,
        Lang::Fr,
        Lang::De,
        Lang::Es,
        Lang::Nl,
        Lang::It,
        Lang::Pt,
        Lang::Pl,
        Lang::Sv,
        Lang::Tr,
        Lang::Ja,
        Lang::Ar,
    ];

    fn about(self) -> About {
        let (code, name, source, thousands) = match self {
            Lang::En => ("en", "English", include_str!("../locales/en.toml"), ","),
            Lang::Fr => ("fr", "Français", include_str!("../locales/fr.toml"), "\u{202f}"),
            Lang::De => ("de", "Deutsch", include_str!("../locales/de.toml"), "."),
            Lang::Es => ("es", "Español", include_str!("../locales/es.toml"), "."),
            Lang::Nl => ("nl", "Nederlands", include_str!("../locales/nl.toml"), "."),
            Lang::It => ("it", "Italiano", include_str!("../locales/it.toml"), "."),
            Lang::Pt => ("pt", "Português", include_str!("../locales/pt.toml"), "."),
            Lang::Pl => ("pl", "Polski", include_str!("../locales/pl.toml"), "\u{a0}"),
            Lang::Sv => ("sv", "Svenska", include_str!("../locales/sv.toml"), "\u{a0}"),
            Lang::Tr => ("tr", "Türkçe", include_str!("../locales/tr.toml"), "."),
            Lang::Ja => ("ja", "日本語", include_str!("../locales/ja.toml"), ","),
            Lang::Ar => ("ar", "العربية", include_str!("../locales/ar.toml"), ","),
        };
        About { code, name, source, thousands }
    }

    pub fn code(self) -> &'static str {
        self.about().code
    }

    /// The language's name in itself, for the switch on every page.
    pub fn native_name(self) -> &'static str {
        self.about().name
    }

    /// Whether the language is written right to left.
    pub fn right_to_left(self) -> bool {
        self == Lang::Ar
    }

    pub fn parse(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        Lang::ALL.into_iter().find(|l| l.code() == primary)
    }

    fn source(self) -> &'static str {
        self.about().source
    }

    /// CLDR's plural category of the whole number `n` in this language (`one`, `few`…).
    fn plural_category(self, n: u64) -> &'static str {
        use icu_plurals::{PluralCategory, PluralRules};
        thread_local! {
            // Rules are not shared between threads; each thread makes its own, once.
            static RULES: HashMap<Lang, PluralRules> = Lang::ALL
                .into_iter()
                .filter_map(|l| {
                    let locale: icu_locale_core::Locale = l.code().parse().ok()?;
                    Some((l, PluralRules::try_new_cardinal(locale.into()).ok()?))
                })
                .collect();
        }
        match RULES.with(|rules| rules.get(&self).map(|r| r.category_for(n))) {
            Some(PluralCategory::Zero) => "zero",
            Some(PluralCategory::One) => "one",
            Some(PluralCategory::Two) => "two",
            Some(PluralCategory::Few) => "few",
            Some(PluralCategory::Many) => "many",
            _ => "other",
        }
    }
}

/// The language an `Accept-Language` header prefers most among ours (English if none).
pub fn negotiate(accept_language: &str) -> Lang {
    let mut wanted: Vec<(f32, usize, Lang)> = accept_language
        .split(',')
        .enumerate()
        .filter_map(|(i, item)| {
            let mut parts = item.split(';');
            let lang = Lang::parse(parts.next()?)?;
            let q =
                parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (q > 0.0).then_some((q, i, lang))
        })
        .collect();
    // Highest quality first; among equals, the order the browser gave.
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    wanted.first().map_or(Lang::En, |w| w.2)
}

type Catalogue = HashMap<String, String>;

fn parse_catalogue(src: &str) -> Result<Catalogue, String> {
    let table: toml::Table = toml::from_str(src).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    flatten("", &table, &mut out)?;
    Ok(out)
}

/// `[reset] title = "…"` becomes `reset.title`.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Catalogue) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            toml::Value::Table(t) => flatten(&key, t, out)?,
            _ => return Err(format!("{key}: only text and sections belong in a catalogue")),
        }
    }
    Ok(())
}

fn catalogues() -> &'static HashMap<Lang, Catalogue> {
    static ALL: OnceLock<HashMap<Lang, Catalogue>> = OnceLock::new();
    ALL.get_or_init(|| {
        Lang::ALL
            .into_iter()
            .map(|l| {
                // A catalogue that does not parse is caught by the tests; at run time it falls
                // back to English key by key rather than taking the portal down.
                let c = parse_catalogue(l.source()).unwrap_or_else(|e| {
                    tracing::error!(lang = l.code(), error = %e, "message catalogue does not parse");
                    HashMap::new()
                });
                (l, c)
            })
            .collect()
    })
}

tokio::task_local! {
    static CURRENT: Lang;
}

/// Runs `f` with `lang` as the language of everything it renders.
pub async fn scope<F: std::future::Future>(lang: Lang, f: F) -> F::Output {
    CURRENT.scope(lang, f).await
}

/// Text in one language. Cheap to copy; every page carries one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tr(pub Lang);

impl Tr {
    /// The language of the request being answered (English outside of one).
    pub fn current() -> Self {
        Tr(CURRENT.try_with(|l| *l).unwrap_or_default())
    }

    pub fn lang(&self) -> &'static str {
        self.0.code()
    }

    /// The direction this language is written in, for `dir` on a page or a mail.
    pub fn dir(&self) -> &'static str {
        if self.0.right_to_left() {
            "rtl"
        } else {
            "ltr"
        }
    }

    /// The text of `key`: in this language, else in English, else the key itself (which the
    /// tests make sure never happens).
    pub fn t(&self, key: &str) -> &'static str {
        let all = catalogues();
        all.get(&self.0)
            .and_then(|c| c.get(key))
            .or_else(|| all.get(&Lang::En).and_then(|c| c.get(key)))
            .map_or_else(|| leak_key(key), |s| s.as_str())
    }

    /// The text of `key` with `{name}` replaced by `value`.
    pub fn f(&self, key: &str, name: &str, value: impl std::fmt::Display) -> String {
        self.t(key).replace(&format!("{{{name}}}"), &value.to_string())
    }

    /// The text of `key` with two placeholders filled in.
    pub fn f2(
        &self,
        key: &str,
        name1: &str,
        value1: impl std::fmt::Display,
        name2: &str,
        value2: impl std::fmt::Display,
    ) -> String {
        self.fill(key, &[(name1, value1.to_string()), (name2, value2.to_string())])
    }

    /// The text of `key` with each `{name}` replaced.
    pub fn fill(&self, key: &str, args: &[(&str, String)]) -> String {
        args.iter().fold(self.t(key).to_string(), |s, (name, value)| s.replace(&format!("{{{name}}}"), value))
    }

    /// The form of `key` that `n` takes in this language (`key.one`, `key.few`…, as CLDR's
    /// cardinal rules say; `key.other` where the catalogue has no such form), `{n}` filled in.
    pub fn plural(&self, key: &str, n: u64) -> String {
        let form = format!("{key}.{}", self.0.plural_category(n));
        let has_form = catalogues().get(&self.0).is_some_and(|c| c.contains_key(&form));
        let form = if has_form { form } else { format!("{key}.other") };
        self.f(&form, "n", n)
    }

    /// A whole number with this language's thousands separator: "3,861,493", "3.861.493".
    pub fn number(&self, n: u64) -> String {
        let separator = self.0.about().thousands;
        let digits = n.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
        for (i, d) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push_str(separator);
            }
            out.push(d);
        }
        out
    }

    /// A duration in words: "2 hours", "1 day".
    pub fn duration(&self, secs: u64) -> String {
        match secs {
            s if s % 86_400 == 0 && s >= 86_400 => self.plural("duration.days", s / 86_400),
            s if s % 3_600 == 0 && s >= 3_600 => self.plural("duration.hours", s / 3_600),
            s if s >= 60 => self.plural("duration.minutes", s.div_ceil(60)),
            s => self.plural("duration.seconds", s),
        }
    }

    /// How far ahead a moment `secs` away is, roughly, for "in 21 hours": whole days from two
    /// days on, whole hours from two hours on, else minutes (rounded up: never "in 0 minutes").
    pub fn ahead(&self, secs: u64) -> String {
        match secs {
            s if s >= 2 * 86_400 => self.plural("duration.days", s / 86_400),
            s if s >= 2 * 3_600 => self.plural("duration.hours", s / 3_600),
            s => self.plural("duration.minutes", s.div_ceil(60).max(1)),
        }
    }

    /// A moment in words, in this language: "4 December 2026 at 10:30 UTC+01:00", at
    /// `offset_minutes` east of UTC (clamped to real time zones; `None`: UTC, named so).
    pub fn datetime(&self, unix: i64, offset_minutes: Option<i32>) -> String {
        let minutes = offset_minutes.unwrap_or(0).clamp(-14 * 60, 14 * 60);
        let offset = time::UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(time::UtcOffset::UTC);
        let Ok(at) = time::OffsetDateTime::from_unix_timestamp(unix) else { return String::new() };
        let at = at.to_offset(offset);
        let zone = match minutes {
            0 => "UTC".to_string(),
            m => format!("UTC{}{:02}:{:02}", if m < 0 { '-' } else { '+' }, m.abs() / 60, m.abs() % 60),
        };
        self.fill(
            "date.at",
            &[
                ("day", at.day().to_string()),
                ("month", self.t(&format!("date.m{}", u8::from(at.month()))).to_string()),
                ("year", at.year().to_string()),
                ("time", format!("{:02}:{:02}", at.hour(), at.minute())),
                ("zone", zone),
            ],
        )
    }

    /// The languages for the switch on every page: (code, name, is this one).
    pub fn languages(&self) -> Vec<(&'static str, &'static str, bool)> {
        Lang::ALL.into_iter().map(|l| (l.code(), l.native_name(), l == self.0)).collect()
    }
}

/// A missing key is shown as itself; kept for the life of the process (there are few keys).
fn leak_key(key: &str) -> &'static str {
    static MISSING: OnceLock<std::sync::Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    tracing::warn!(key, "message key missing from the catalogue");
    let Ok(mut m) = MISSING.get_or_init(Default::default).lock() else { return "?" };
    m.entry(key.to_string()).or_insert_with(|| Box::leak(key.to_string().into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(s: &str) -> Vec<String> {
        let mut out: Vec<String> =
            s.split('{').skip(1).filter_map(|p| p.split_once('}').map(|(n, _)| n.to_string())).collect();
        out.sort();
        out
    }

    /// The plural forms a language's catalogue gives each plural key: every category its rules
    /// give a whole number the portal shows (days, minutes, codes: under a thousand), and
    /// `other`, which every language has and which stands in for the rest (French's and
    /// Spanish's `many` is for millions).
    fn forms(lang: Lang) -> std::collections::BTreeSet<&'static str> {
        (0..=1_000_u64).map(|n| lang.plural_category(n)).chain(["other"]).collect()
    }

    #[test]
    fn every_catalogue_parses_and_has_exactly_the_english_keys_placeholders_and_plural_forms() {
        let en = parse_catalogue(Lang::En.source()).unwrap();
        assert!(en.len() > 50, "the English catalogue looks truncated");
        // Plural keys: English gives `one` and `other` of each.
        let plural: std::collections::BTreeSet<&str> = en
            .keys()
            .filter_map(|k| k.strip_suffix(".other"))
            .filter(|b| en.contains_key(&format!("{b}.one")))
            .collect();
        for lang in Lang::ALL {
            let c = parse_catalogue(lang.source()).unwrap_or_else(|e| panic!("{}: {e}", lang.code()));
            // What this language must have: each plain key, and each plural key in its forms,
            // with the placeholders of the English text it stands for.
            let mut expected: HashMap<String, &str> = HashMap::new();
            for (k, v) in &en {
                match k.rsplit_once('.') {
                    Some((base, _)) if plural.contains(base) => {
                        for form in forms(lang) {
                            expected.insert(format!("{base}.{form}"), &en[&format!("{base}.other")]);
                        }
                    }
                    _ => {
                        expected.insert(k.clone(), v);
                    }
                }
            }
            let mut missing: Vec<_> = expected.keys().filter(|k| !c.contains_key(*k)).collect();
            let mut extra: Vec<_> = c.keys().filter(|k| !expected.contains_key(*k)).collect();
            missing.sort();
            extra.sort();
            assert!(missing.is_empty(), "{} lacks {missing:?}", lang.code());
            assert!(extra.is_empty(), "{} has keys it should not: {extra:?}", lang.code());
            for (k, v) in &c {
                let mut want = placeholders(expected[k]);
                // "One day", "two days": a form for one or two may leave the number out (English
                // does, where a count can only be 1; French's `one` is also 0's, so a text
                // for a count that can be 0 keeps `{n}` there).
                let one_number = k.ends_with(".zero") || k.ends_with(".one") || k.ends_with(".two");
                if one_number && !v.contains("{n}") {
                    want.retain(|p| p != "n");
                }
                assert_eq!(placeholders(v), want, "{}: {k} has other placeholders", lang.code());
                assert!(!v.trim().is_empty(), "{}: {k} is empty", lang.code());
            }
        }
    }

    /// Every `tr.t("…")`, `tr.f("…"`, `Tr::current().t("…")`… in the templates and the code
    /// names a key that exists (keys passed around as constants are checked where rendered).
    #[test]
    fn every_key_the_templates_and_code_use_exists() {
        let en = parse_catalogue(Lang::En.source()).unwrap();
        let mut files = Vec::new();
        for dir in [
            "templates",
            "templates/mail",
            "src",
            "src/mail",
            "src/portal",
            "src/portal/account",
            "src/portal/gates",
            "src/portal/reset",
            "src/portal/staff",
            "src/domain",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(&path).unwrap() {
                let p = entry.unwrap().path();
                if p.is_file() {
                    files.push(p);
                }
            }
        }
        let mut unknown = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            if f.ends_with("i18n.rs") {
                continue;
            }
            for call in ["r.t(\"", ").t(\"", "r.f(\"", ").f(\"", "r.f2(\"", "r.plural(\""] {
                for piece in text.split(call).skip(1) {
                    let key = piece.split('"').next().unwrap();
                    // A plural key names its forms: `key.one`, `key.other`.
                    let stored = if call.ends_with("plural(\"") { format!("{key}.other") } else { key.to_string() };
                    if key.contains('.') && !key.contains(' ') && !key.ends_with('.') && !en.contains_key(&stored) {
                        unknown.push(format!("{}: {key}", f.display()));
                    }
                }
            }
        }
        assert!(unknown.is_empty(), "keys missing from locales/en.toml: {unknown:#?}");
    }

    #[test]
    fn plural_forms_follow_each_languages_rules() {
        let pl = Tr(Lang::Pl);
        assert_eq!(pl.plural("duration.minutes", 1), pl.t("duration.minutes.one").replace("{n}", "1"));
        for (n, form) in [(2, "few"), (4, "few"), (5, "many"), (12, "many"), (22, "few"), (25, "many")] {
            assert_eq!(
                pl.plural("duration.minutes", n),
                pl.t(&format!("duration.minutes.{form}")).replace("{n}", &n.to_string())
            );
        }
        let ar = Tr(Lang::Ar);
        for (n, form) in [(0, "zero"), (1, "one"), (2, "two"), (3, "few"), (11, "many"), (100, "other"), (103, "few")] {
            assert_eq!(
                ar.plural("duration.days", n),
                ar.t(&format!("duration.days.{form}")).replace("{n}", &n.to_string())
            );
        }
        assert!(Tr(Lang::Ja).plural("duration.days", 1).contains('1'), "Japanese has one form, with the number");
        // Every language's rules are there (a language without would say `other` of all).
        for lang in Lang::ALL.into_iter().filter(|l| *l != Lang::Ja) {
            assert_eq!(lang.plural_category(1), "one", "{}", lang.code());
        }
        assert_eq!(Tr(Lang::En).plural("duration.minutes", 0), "0 minutes");
        assert_eq!(Tr(Lang::Fr).plural("duration.minutes", 0), "0 minute", "French says one of 0");
        assert_eq!(Tr(Lang::Fr).plural("duration.minutes", 2), "2 minutes");
        assert_eq!(Tr(Lang::En).plural("password.history", 1), "Not your current password, nor the one before it.");
        assert!(Tr(Lang::De).plural("password.history", 24).contains("24"));
    }

    #[test]
    fn accept_language_picks_the_most_wanted_of_ours() {
        assert_eq!(negotiate("fr-CH, fr;q=0.9, en;q=0.8"), Lang::Fr);
        assert_eq!(negotiate("ko, de;q=0.5, nl;q=0.7"), Lang::Nl);
        assert_eq!(negotiate("es;q=0, de"), Lang::De);
        assert_eq!(negotiate("ko"), Lang::En);
        assert_eq!(negotiate(""), Lang::En);
        assert_eq!(negotiate("*"), Lang::En);
        assert_eq!(negotiate("ar-EG, en;q=0.5"), Lang::Ar);
        assert_eq!(negotiate("pt-BR"), Lang::Pt);
    }

    #[test]
    fn twelve_languages_one_written_right_to_left() {
        assert_eq!(Lang::ALL.len(), 12);
        let codes: std::collections::HashSet<_> = Lang::ALL.iter().map(|l| l.code()).collect();
        assert_eq!(codes.len(), 12, "each its own code");
        assert_eq!(Tr(Lang::Ar).dir(), "rtl");
        assert_eq!(Tr(Lang::Pl).dir(), "ltr");
        assert_eq!(Tr(Lang::Pl).number(3_861_493), "3\u{a0}861\u{a0}493");
    }

    #[test]
    fn text_is_filled_in_and_counted() {
        let tr = Tr(Lang::En);
        assert_eq!(tr.duration(3600), "1 hour");
        assert_eq!(tr.duration(2 * 86_400), "2 days");
        assert_eq!(Tr(Lang::Fr).duration(120), "2 minutes");
        assert_eq!(tr.t("no.such.key"), "no.such.key");
    }
}
