//! The keys and hashes passback keeps its secrets with: the data key (AES-256-GCM for secrets
//! at rest, bound to the row they belong to), keys derived from it for keyed hashes (HMAC-SHA256,
//! for one-time codes), random tokens, and the hashes of high-entropy tokens, compared in
//! constant time.

pub mod totp;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use rand::RngCore;
use zeroize::Zeroizing;

/// What the keyed hashes of one-time codes (and of typed names in counters) are derived for.
pub const CODE_KEY_PURPOSE: &str = "passback/one-time-codes/v1";

/// The key from configuration that encrypts secrets at rest (package keys).
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_base64(s: &str) -> anyhow::Result<Self> {
        use base64::Engine;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD.decode(s.trim()).context("secrets.data_key is not base64")?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("secrets.data_key must be 32 bytes (44 base64 characters)"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The portal's data key, as its configuration gives it (`secrets.data_key[_file]`).
    pub fn from_config(cfg: &crate::config::SecretsConfig) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        let key = crate::config::read_secret(&cfg.data_key, &cfg.data_key_file, "secrets.data_key")?
            .ok_or_else(|| anyhow::anyhow!("secrets.data_key_file is required (32 random bytes, base64)"))?;
        Self::from_base64(key.expose_secret())
    }

    pub fn generate_base64() -> Zeroizing<String> {
        use base64::Engine;
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(k.as_ref()))
    }

    /// Encrypts `plain`, bound to `context` (which row it belongs to): nonce ‖ ciphertext.
    pub fn encrypt(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: context.as_bytes() })
            .unwrap_or_default();
        [nonce.as_slice(), &ct].concat()
    }

    pub fn decrypt(&self, context: &str, sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        anyhow::ensure!(sealed.len() > 12, "stored secret is truncated");
        let (nonce, ct) = sealed.split_at(12);
        let cipher = Aes256Gcm::new(self.0.as_ref().into());
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| anyhow::anyhow!("stored secret does not open with the configured data key"))
    }
}

impl DataKey {
    /// A separate key for one purpose, derived from the data key (HMAC-SHA256 of the purpose).
    pub fn derive(&self, purpose: &str) -> MacKey {
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&hmac_sha256(self.0.as_ref(), &[purpose.as_bytes()]));
        MacKey(k)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new(&Default::default()));
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A keyed hash (HMAC-SHA256) for short secrets such as one-time codes: without the key, a copy
/// of the database does not let anyone try all the codes. Cheap, so it cannot be used to exhaust
/// the server, and compared in constant time.
#[derive(Clone)]
pub struct MacKey(Zeroizing<[u8; 32]>);

impl MacKey {
    /// The keyed hash of `parts` (each length-prefixed, so they cannot run into each other), hex.
    pub fn hash(&self, parts: &[&[u8]]) -> String {
        hex::encode(hmac_sha256(self.0.as_ref(), parts))
    }

    pub fn matches(&self, parts: &[&[u8]], stored_hex: &str) -> bool {
        hashes_equal(self.hash(parts).as_bytes(), stored_hex.as_bytes())
    }
}

/// A random 256-bit token as 64 hex digits: safe in URLs, headers and on a command line (a
/// token starting with `-` would be taken for an option).
pub fn random_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// SHA-256, for high-entropy tokens that are stored only as hashes.
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time comparison of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A random password that meets any sensible directory policy (16 characters with upper- and
/// lower-case letters, digits and symbols; nothing easily misread), for a temporary password
/// shown once.
pub fn temporary_password() -> secrecy::SecretString {
    use rand::seq::SliceRandom;
    use rand::Rng;
    const CLASSES: [&[u8]; 4] = [b"ABCDEFGHJKLMNPQRSTUVWXYZ", b"abcdefghijkmnopqrstuvwxyz", b"23456789", b"#%+-=?@_"];
    let mut rng = rand::rngs::OsRng;
    let mut chars = zeroize::Zeroizing::new(Vec::with_capacity(16));
    for class in CLASSES {
        chars.push(class[rng.gen_range(0..class.len())]);
    }
    let all: Vec<u8> = CLASSES.concat();
    while chars.len() < 16 {
        chars.push(all[rng.gen_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    secrecy::SecretString::from(String::from_utf8_lossy(&chars).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn temporary_passwords_meet_ad_complexity_and_differ() {
        let a = temporary_password();
        let b = temporary_password();
        assert_eq!(a.expose_secret().len(), 16);
        assert!(crate::domain::meets_ad_complexity(a.expose_secret(), "someone"));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn keyed_hashes_depend_on_the_key_and_on_where_the_parts_split() {
        let key = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let codes = key.derive("codes");
        let h = codes.hash(&[b"id", b"12345678"]);
        assert!(codes.matches(&[b"id", b"12345678"], &h));
        assert!(!codes.matches(&[b"id1", b"2345678"], &h));
        assert!(!key.derive("other").matches(&[b"id", b"12345678"], &h));
    }

    #[test]
    fn data_key_round_trips_and_binds_its_context() {
        let key = DataKey::from_base64(&DataKey::generate_base64()).unwrap();
        let sealed = key.encrypt("agent_keys|a|1", b"secret");
        assert_eq!(key.decrypt("agent_keys|a|1", &sealed).unwrap().as_slice(), b"secret");
        assert!(key.decrypt("agent_keys|b|1", &sealed).is_err());
    }
}
