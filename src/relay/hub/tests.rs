//! Tests of [`super`].

use super::*;

#[test]
fn an_older_key_is_accepted_until_the_grace_after_its_replacement() {
    let public = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap().to_public_key();
    let version = |v: u32, at: i64| KeyVersion {
        version: v,
        public: public.clone(),
        package: PackageKey::generate(&mut rand::rngs::OsRng),
        created_at: at,
    };
    let keys = vec![version(2, 1_000), version(1, 0)];
    assert!(accepted_key(&keys, 2, i64::MAX, 10).is_some(), "the newest always");
    assert!(accepted_key(&keys, 1, 1_010, 10).is_some());
    assert!(accepted_key(&keys, 1, 1_011, 10).is_none());
    assert!(accepted_key(&keys, 3, 0, 10).is_none(), "an unknown version never");
}
