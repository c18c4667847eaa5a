//! Anti-automation for the first steps (identify, sign-in, change): a self-hosted proof of work
//! that the page's script solves while the person types (no third party, no tracking), a delay
//! instead for a browser without JavaScript, and rate limits per client address and per account:
//! kept in the database (a cell rate algorithm, see [`take_allowance`]), so that every instance
//! and every restart shares one allowance; governor's keyed limiters of the same quotas in this
//! process go first, a cheap layer that turns a flood away without touching the database.
//!
//! A challenge is `nonce.expires.bits.mac`: stateless to hand out, authenticated by a key derived
//! from the data key, and spent on use, so one solution buys one attempt.

use super::PortalError;
use crate::config::AntiAutomationConfig;
use crate::store::security::take_allowance;
use crate::store::{Db, MacKey};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// How long a challenge stays valid: a person may take a while to type their name.
const CHALLENGE_TTL_SECS: i64 = 30 * 60;

/// A challenge as the form carries it.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub token: String,
    pub bits: u32,
}

pub struct Guard {
    key: MacKey,
    bits: u32,
    /// What the proof of work costs more while the portal is under attack.
    attack_extra_bits: u32,
    /// Failed verifications in the last hour, everywhere, as last counted; and whether that is
    /// past the attack level.
    failures_last_hour: std::sync::atomic::AtomicI64,
    under_attack: std::sync::atomic::AtomicBool,
    no_script_delay: Duration,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    /// First steps without a valid proof of work: a much smaller allowance.
    unproven: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address_per_minute: u32,
    per_account_per_hour: u32,
}

/// The key an address is limited under: an IPv6 address by its /64 (one subscriber's network),
/// since anyone with one has countless addresses in it.
/// The address as limits count it (an IPv6 client by its /64), as text.
pub(crate) fn address_key_text(ip: IpAddr) -> String {
    address_key(ip).to_string()
}

fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// What a first step may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Admit(Proof),
    /// Too many requests from this address: refuse, and say when to try again.
    TooMany,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Guard {
    pub fn new(cfg: &AntiAutomationConfig, key: MacKey) -> Guard {
        Guard {
            key,
            bits: cfg.pow_bits,
            attack_extra_bits: cfg.attack_extra_bits,
            failures_last_hour: Default::default(),
            under_attack: Default::default(),
            no_script_delay: Duration::from_millis(cfg.no_script_delay_ms),
            per_address: RateLimiter::keyed(Quota::per_minute(nonzero(cfg.per_address_per_minute))),
            unproven: RateLimiter::keyed(Quota::per_minute(nonzero(cfg.per_address_per_minute.div_ceil(4)))),
            per_account: RateLimiter::keyed(Quota::per_hour(nonzero(cfg.per_account_per_hour))),
            per_address_per_minute: cfg.per_address_per_minute.max(1),
            per_account_per_hour: cfg.per_account_per_hour.max(1),
        }
    }

    /// A fresh challenge for a form, or `None` when the proof of work is off.
    pub fn challenge(&self, now: i64) -> Option<Challenge> {
        if self.bits == 0 {
            return None;
        }
        let bits = self.required_bits();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let payload = format!("{nonce}.{}.{bits}", now + CHALLENGE_TTL_SECS);
        let mac = self.key.hash(&[payload.as_bytes()]);
        Some(Challenge { token: format!("{payload}.{mac}"), bits })
    }

    /// The proof of work asked now: more while under attack.
    pub fn required_bits(&self) -> u32 {
        if self.bits > 0 && self.under_attack() {
            (self.bits + self.attack_extra_bits).min(24)
        } else {
            self.bits
        }
    }

    pub fn under_attack(&self) -> bool {
        self.under_attack.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn failures_last_hour(&self) -> i64 {
        self.failures_last_hour.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes the failures counted in the last hour, and whether they are past the attack level;
    /// true when the portal has just come under attack.
    pub fn set_pressure(&self, failures: i64, under_attack: bool) -> bool {
        use std::sync::atomic::Ordering;
        self.failures_last_hour.store(failures, Ordering::Relaxed);
        !self.under_attack.swap(under_attack, Ordering::Relaxed) && under_attack
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP passback_gate_failures_last_hour Failed verifications in the last hour, everywhere.\n\
             # TYPE passback_gate_failures_last_hour gauge\npassback_gate_failures_last_hour {}\n\
             # HELP passback_under_attack 1 while failed verifications are past the configured level.\n\
             # TYPE passback_under_attack gauge\npassback_under_attack {}\n\
             # HELP passback_pow_bits The proof of work asked now.\n\
             # TYPE passback_pow_bits gauge\npassback_pow_bits {}\n",
            self.failures_last_hour(),
            u8::from(self.under_attack()),
            self.required_bits()
        )
    }

    /// Whether `token` is a challenge of ours, unexpired, that `counter` solves; spends it.
    async fn solved(&self, db: &Db, token: &str, counter: &str, now: i64) -> Result<bool, PortalError> {
        let mut parts = token.rsplitn(2, '.');
        let (Some(mac), Some(payload)) = (parts.next(), parts.next()) else { return Ok(false) };
        if !self.key.matches(&[payload.as_bytes()], mac) {
            return Ok(false);
        }
        let fields: Vec<&str> = payload.split('.').collect();
        let [nonce, expires, bits] = fields.as_slice() else { return Ok(false) };
        let (Ok(expires), Ok(bits)) = (expires.parse::<i64>(), bits.parse::<u32>()) else { return Ok(false) };
        if expires < now || bits < self.required_bits() || counter.is_empty() || counter.len() > 20 {
            return Ok(false);
        }
        if leading_zero_bits(&Sha256::digest(format!("{token}:{counter}").as_bytes())) < bits {
            return Ok(false);
        }
        Ok(crate::store::security::spend_challenge(db, nonce, expires).await?)
    }

    /// The gate of a first step: the address's rate, then the proof (or, without one, a wait
    /// long enough to make scripted use slow; a browser without JavaScript still gets through).
    pub async fn admit(
        &self,
        db: &Db,
        client: IpAddr,
        token: &str,
        counter: &str,
        now: i64,
    ) -> Result<Verdict, PortalError> {
        Ok(self.admit_with((db, client, now), (token, counter), std::future::ready(())).await?.0)
    }

    /// [`Self::admit`], with `alongside` (a read the request needs next) run while the address's
    /// allowance shared by every instance, and the proof, are checked in the database: one wait
    /// where there were two. `alongside` starts only once this instance's own count of the
    /// address let the request through, so a client past that costs no more than before. A
    /// request refused after that (past the shared allowance, or without a proof past the
    /// allowance for those) may cost that read, whose answer is then thrown away: at most this
    /// instance's own allowance of reads a minute from one address.
    pub async fn admit_with<T>(
        &self,
        (db, client, now): (&Db, IpAddr, i64),
        (token, counter): (&str, &str),
        alongside: impl std::future::Future<Output = T>,
    ) -> Result<(Verdict, Option<T>), PortalError> {
        if !self.address_fits_here(client) {
            return Ok((Verdict::TooMany, None));
        }
        let gate = async {
            if !self.address_fits_everywhere(db, client, now).await? {
                return Ok(Verdict::TooMany);
            }
            self.proven((db, client, now), (token, counter)).await
        };
        let (verdict, beside) = tokio::join!(gate, alongside);
        Ok((verdict?, Some(beside)))
    }

    /// The proof of a first step already within its address's rate.
    async fn proven(
        &self,
        (db, client, now): (&Db, IpAddr, i64),
        (token, counter): (&str, &str),
    ) -> Result<Verdict, PortalError> {
        if self.bits == 0 {
            return Ok(Verdict::Admit(Proof::Off));
        }
        if self.solved(db, token, counter, now).await? {
            return Ok(Verdict::Admit(Proof::Solved));
        }
        let unproven = format!("unproven:{}", address_key(client));
        if self.unproven.check_key(&address_key(client)).is_err()
            || !take_allowance(db, &unproven, 60, self.per_address_per_minute.div_ceil(4), now).await?
        {
            tracing::warn!(%client, "rate limit reached for first steps without a proof of work");
            return Ok(Verdict::TooMany);
        }
        tokio::time::sleep(self.no_script_delay).await;
        Ok(Verdict::Admit(Proof::Delayed))
    }

    /// Spends one of the address's requests for this minute (first steps, and each answer at a
    /// gate); false when none is left.
    pub async fn address_allowed(&self, db: &Db, client: IpAddr, now: i64) -> Result<bool, PortalError> {
        Ok(self.address_fits_here(client) && self.address_fits_everywhere(db, client, now).await?)
    }

    /// Spends one of the address's requests on this instance's own count (in memory).
    fn address_fits_here(&self, client: IpAddr) -> bool {
        let fits = self.per_address.check_key(&address_key(client)).is_ok();
        if !fits {
            tracing::warn!(%client, "rate limit reached for a client address on this instance");
        }
        fits
    }

    /// Spends one of the address's requests on the count every instance shares (in the
    /// database).
    async fn address_fits_everywhere(&self, db: &Db, client: IpAddr, now: i64) -> Result<bool, PortalError> {
        let bucket = format!("address:{}", address_key(client));
        let fits = take_allowance(db, &bucket, 60, self.per_address_per_minute, now).await?;
        if !fits {
            tracing::warn!(%client, "rate limit reached for a client address, counted on every instance");
        }
        Ok(fits)
    }

    /// Whether another identify step for this account is allowed this hour.
    pub async fn account_allowed(&self, db: &Db, subject: &str, now: i64) -> Result<bool, PortalError> {
        Ok(self.per_account.check_key(&subject.to_string()).is_ok()
            && take_allowance(db, &format!("account:{subject}"), 3600, self.per_account_per_hour, now).await?)
    }

    /// Forgets limiter state that no longer matters (called now and then).
    pub fn tidy(&self) {
        self.per_address.retain_recent();
        self.unproven.retain_recent();
        self.per_account.retain_recent();
    }
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut n = 0;
    for b in digest {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// How a first step proved it was worth answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The proof of work is turned off.
    Off,
    Solved,
    /// No valid proof (JavaScript off, or a script): answered after the delay.
    Delayed,
}

impl Proof {
    /// For the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Off => "proof of work off",
            Proof::Solved => "proof of work solved",
            Proof::Delayed => "no proof of work: delayed",
        }
    }
}

/// The page for a client over its rate: what happened and when to try again.
/// Counts the failed verifications of the last hour, everywhere (from the database, so every
/// instance agrees), every half minute: past `global_failures_per_hour` the portal is under
/// attack, the proof of work costs more, and every administrator is e-mailed (at most hourly,
/// whichever instance notices first).
pub async fn watch_failures(st: super::AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = check_failures(&st).await {
            tracing::warn!(error = %format!("{e:#}"), "counting failed verifications failed");
        }
    }
}

/// One count of [`watch_failures`].
pub(crate) async fn check_failures(st: &super::AppState) -> anyhow::Result<()> {
    let now = st.clock.now();
    let failures = crate::store::security::failures_last_hour(&st.db, now).await?;
    let level = i64::from(st.cfg.anti_automation.global_failures_per_hour);
    let under = failures >= level;
    if st.guard.set_pressure(failures, under) {
        tracing::error!(
            failures,
            level,
            pow_bits = st.guard.required_bits(),
            "ALERT: many failed verifications: the portal is under attack"
        );
    }
    if under && crate::store::security::claim_alert(&st.db, "gate_failures", now, 3600).await? {
        let tr = crate::i18n::Tr::default();
        let body = tr.fill(
            "mail.attack_body",
            &[
                ("n", failures.to_string()),
                ("level", level.to_string()),
                ("bits", st.guard.required_bits().to_string()),
                ("when", crate::mail::utc_minutes(now)),
            ],
        );
        for to in crate::store::staff::administrator_emails(&st.db).await? {
            let Ok(to) = crate::domain::EmailAddress::parse(&to) else { continue };
            let msg = crate::mail::alert_message(tr, tr.t("mail.attack_subject").into(), &body)?;
            let mailer = st.mailer.clone();
            tokio::spawn(async move {
                if let Err(e) = mailer.send_in_turn(&to, msg).await {
                    tracing::error!(error = %format!("{e:#}"), "telling an administrator of an attack failed");
                }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bits: u32) -> Guard {
        let cfg = AntiAutomationConfig { pow_bits: bits, no_script_delay_ms: 0, ..Default::default() };
        Guard::new(
            &cfg,
            crate::store::DataKey::from_base64(&crate::store::DataKey::generate_base64()).unwrap().derive("t"),
        )
    }

    fn solve(token: &str, bits: u32) -> String {
        (0u64..)
            .find(|c| leading_zero_bits(&Sha256::digest(format!("{token}:{c}").as_bytes())) >= bits)
            .unwrap()
            .to_string()
    }

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0, 0x10, 0xff]), 19);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
    }

    #[tokio::test]
    async fn a_solution_works_once_and_only_for_its_own_unaltered_unexpired_challenge() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let g = guard(8);
        let now = 1_800_000_000;
        let c = g.challenge(now).unwrap();
        let answer = solve(&c.token, 8);
        assert!(!g.solved(&db, &c.token, "", now).await.unwrap(), "no answer");
        let tampered = c.token.replacen(".8.", ".1.", 1);
        assert!(!g.solved(&db, &tampered, &solve(&tampered, 1), now).await.unwrap(), "the difficulty is signed");
        assert!(!g.solved(&db, &c.token, &answer, now + CHALLENGE_TTL_SECS + 1).await.unwrap(), "expired");
        assert!(g.solved(&db, &c.token, &answer, now).await.unwrap());
        assert!(!g.solved(&db, &c.token, &answer, now).await.unwrap(), "spent");
    }

    #[test]
    fn an_ipv6_network_is_limited_as_one() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }

    #[tokio::test]
    async fn an_address_over_its_rate_is_turned_away_and_others_are_not() {
        let db = crate::store::connect("sqlite::memory:", 1).await.unwrap();
        let cfg = AntiAutomationConfig { pow_bits: 0, per_address_per_minute: 3, ..Default::default() };
        let g = Guard::new(
            &cfg,
            crate::store::DataKey::from_base64(&crate::store::DataKey::generate_base64()).unwrap().derive("t"),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(g.admit(&db, a, "", "", 0).await.unwrap(), Verdict::Admit(Proof::Off));
        }
        assert_eq!(g.admit(&db, a, "", "", 0).await.unwrap(), Verdict::TooMany);
        assert_eq!(g.admit(&db, b, "", "", 0).await.unwrap(), Verdict::Admit(Proof::Off));
    }
}
