//! A throwaway certificate authority and one server certificate for `localhost`, so the sandbox's
//! services can speak TLS that clients really verify (no "accept any certificate" switch exists).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The PEM files of a throwaway CA and of a server certificate it signed for `localhost`,
/// `127.0.0.1` and `::1`.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate: what clients trust.
    pub ca_file: PathBuf,
    /// The server certificate (leaf only).
    pub cert_file: PathBuf,
    /// The server's private key, PKCS#8, file mode 0600.
    pub key_file: PathBuf,
    /// SHA-256 of the server key's SubjectPublicKeyInfo, base64: what a browser can be told to
    /// trust (`--ignore-certificate-errors-spki-list`) instead of trusting everything.
    pub spki_sha256: String,
}

impl TestCa {
    /// Makes a new CA and server certificate and writes `ca.pem`, `server.pem` and `server.key`
    /// into `dir` (created if missing). The CA's private key is never written anywhere: it is
    /// forgotten once the server certificate is signed.
    pub fn create(dir: &Path) -> anyhow::Result<TestCa> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = OffsetDateTime::now_utc();
        // Slightly back-dated so that a clock a little behind still accepts it; long enough for a
        // demo that is left running.
        let not_before = now - Duration::days(1);
        let not_after = now + Duration::days(3650);

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        ca_params.distinguished_name.push(DnType::OrganizationName, "passback sandbox");
        ca_params.distinguished_name.push(DnType::CommonName, "passback sandbox CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = not_before;
        ca_params.not_after = not_after;
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the CA certificate")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(Vec::<String>::new()).context("server parameters")?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().context("SAN localhost")?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params.signed_by(&key, &issuer).context("signing the server certificate")?;

        let spki_sha256 = {
            use base64::Engine;
            use sha2::Digest;
            base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key)))
        };
        let ca = TestCa {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            spki_sha256,
        };
        std::fs::write(&ca.ca_file, ca_cert.pem()).with_context(|| format!("writing {}", ca.ca_file.display()))?;
        std::fs::write(&ca.cert_file, cert.pem()).with_context(|| format!("writing {}", ca.cert_file.display()))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        crate::files::write_private(&ca.key_file, key_pem.as_bytes())?;
        Ok(ca)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_server_certificate_verifies_against_the_ca_for_every_local_name() {
        let dir = crate::files::scratch_dir("ca");

        let ca = TestCa::create(&dir).unwrap();

        let mode = std::fs::metadata(&ca.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key_pem = std::fs::read_to_string(&ca.key_file).unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        crate::tls::install_crypto_provider();
        crate::tls::server_config(&ca.cert_file, &ca.key_file).unwrap();
        let roots = crate::tls::root_store(Some(&ca.ca_file)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots)).build().unwrap();
        let leaf = CertificateDer::from_pem_file(&ca.cert_file).unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let server_name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
