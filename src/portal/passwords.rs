//! The portal's own password hashes (cloud-only and hash-synced people): argon2id, computed off
//! the async workers, and the cloud password policy.

use crate::config::CloudPolicyConfig;
use crate::domain::{meets_ad_complexity, NewPassword, Outcome, PolicyFacts};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

/// An argon2id PHC string of `password`, made on the blocking pool.
pub async fn hash(password: &SecretString) -> anyhow::Result<String> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    })
    .await?
}

/// The cloud policy's verdict on a new password: `None` when it passes.
pub fn cloud_rule(policy: &CloudPolicyConfig, password: &NewPassword, username: &str) -> Option<Outcome> {
    if (password.expose().chars().count() as u64) < u64::from(policy.min_length) {
        return Some(Outcome::TooShort { min_length: Some(policy.min_length) });
    }
    if policy.complexity && !meets_ad_complexity(password.expose(), username) {
        return Some(Outcome::NotComplex);
    }
    None
}

/// The cloud policy as the new-password form states it.
pub fn cloud_facts(policy: &CloudPolicyConfig) -> PolicyFacts {
    PolicyFacts {
        min_length: Some(policy.min_length),
        history: None,
        min_age_secs: None,
        complexity: Some(policy.complexity),
    }
}
