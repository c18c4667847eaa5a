//! A request's passwords, sealed apart from the rest of the package: a content key wrapped with
//! the agent's RSA key, the passwords under it bound to the message id; and secrets at rest in the
//! agent's files, under the same RSA key.

use super::*;

/// A request's passwords: a 256-bit content key wrapped with the agent's RSA key (one OAEP block),
/// and the new and old passwords under it with AES-256-GCM, bound to the message id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecrets {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// `new` and, for a change, `old`: length-prefixed (2 bytes each), then encrypted.
    #[serde(with = "b64")]
    pub ct: Vec<u8>,
}

fn secrets_aad(msg_id: &MsgId) -> String {
    format!("passback/v{VERSION}|secrets|{msg_id}")
}

/// A content key and its RSA-wrapped form. The portal reuses one for a while (an epoch) for all
/// of an agent's requests, so the agent unwraps it with RSA once per epoch, not once per request;
/// every request still seals its passwords under it with its own nonce, bound to its message id.
#[derive(Clone)]
pub struct ContentKey {
    key: PackageKey,
    wrapped: Vec<u8>,
}

impl ContentKey {
    pub fn new(public: &RsaPublicKey, rng: &mut (impl RngCore + CryptoRng)) -> Result<ContentKey, EnvelopeError> {
        let key = PackageKey::generate(rng);
        let wrapped =
            public.encrypt(rng, Oaep::new::<rsa::sha2::Sha256>(), key.as_bytes()).map_err(|_| EnvelopeError::Rsa)?;
        Ok(ContentKey { key, wrapped })
    }
}

/// Unwraps a content key with the agent's private key (RSA): call only on a package that
/// [`open`] authenticated.
pub fn unwrap_key(private: &RsaPrivateKey, wrapped: &[u8]) -> Result<PackageKey, EnvelopeError> {
    let raw =
        Zeroizing::new(private.decrypt(Oaep::new::<rsa::sha2::Sha256>(), wrapped).map_err(|_| EnvelopeError::Rsa)?);
    PackageKey::from_slice(&raw).ok_or(EnvelopeError::Malformed)
}

/// Seals a request's passwords under `content` (a fresh nonce each time, bound to the message).
pub fn seal_secrets(
    content: &ContentKey,
    msg_id: &MsgId,
    new: &str,
    old: Option<&str>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<SealedSecrets, EnvelopeError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(4 + new.len() + old.map_or(0, str::len)));
    for s in std::iter::once(new).chain(old) {
        let len = u16::try_from(s.len()).map_err(|_| EnvelopeError::Malformed)?;
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(s.as_bytes());
    }
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let aad = secrets_aad(msg_id);
    let ct = Aes256Gcm::new(content.key.as_bytes().into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plain, aad: aad.as_bytes() })
        .map_err(|_| EnvelopeError::Malformed)?;
    Ok(SealedSecrets { key: content.wrapped.clone(), nonce: nonce.to_vec(), ct })
}

/// Opens what [`seal_secrets`] made, with the content key already unwrapped (see
/// [`unwrap_key`]): the new password, and the old one for a change.
pub fn open_secrets(
    content: &PackageKey,
    msg_id: &MsgId,
    sealed: &SealedSecrets,
) -> Result<(SecretString, Option<SecretString>), EnvelopeError> {
    let nonce: [u8; 12] = sealed.nonce.as_slice().try_into().map_err(|_| EnvelopeError::Malformed)?;
    let aad = secrets_aad(msg_id);
    let plain = Zeroizing::new(
        Aes256Gcm::new(content.as_bytes().into())
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &sealed.ct, aad: aad.as_bytes() })
            .map_err(|_| EnvelopeError::Tampered)?,
    );
    let mut rest: &[u8] = &plain;
    let mut out = Vec::with_capacity(2);
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(2).ok_or(EnvelopeError::Malformed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (s, tail) = tail.split_at_checked(len).ok_or(EnvelopeError::Malformed)?;
        out.push(SecretString::from(std::str::from_utf8(s).map_err(|_| EnvelopeError::Malformed)?.to_string()));
        rest = tail;
    }
    let mut out = out.into_iter();
    let new = out.next().ok_or(EnvelopeError::Malformed)?;
    Ok((new, out.next()))
}

/// Encrypts a short secret with the agent's public key (RSA-OAEP-SHA256), base64 without padding:
/// how the package key reaches the agent at enrollment and rotation.
pub fn encrypt_secret(
    key: &RsaPublicKey,
    secret: &str,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<String, EnvelopeError> {
    let ct = key.encrypt(rng, Oaep::new::<rsa::sha2::Sha256>(), secret.as_bytes()).map_err(|_| EnvelopeError::Rsa)?;
    Ok(B64.encode(ct))
}

/// Decrypts what [`encrypt_secret`] made.
pub fn decrypt_secret(key: &RsaPrivateKey, ct_b64: &str) -> Result<SecretString, EnvelopeError> {
    let ct = B64.decode(ct_b64).map_err(|_| EnvelopeError::Malformed)?;
    let pt = Zeroizing::new(key.decrypt(Oaep::new::<rsa::sha2::Sha256>(), &ct).map_err(|_| EnvelopeError::Rsa)?);
    let s = std::str::from_utf8(&pt).map_err(|_| EnvelopeError::Malformed)?;
    Ok(SecretString::from(s.to_string()))
}
