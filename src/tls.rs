//! TLS set-up shared by every client and server in passback: rustls with the ring provider only.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process-wide crypto provider. Call first thing in `main` and in tests.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The public web roots, plus the certificates of `extra_ca` if given.
pub fn root_store(extra_ca: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading CA file {}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing CA file {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "CA file {} holds no certificate", path.display());
        for cert in certs {
            roots.add(cert).with_context(|| format!("CA file {}", path.display()))?;
        }
    }
    Ok(roots)
}

/// A verifying client configuration. There is no way to turn verification off.
pub fn client_config(extra_ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = root_store(extra_ca)?;
    Ok(Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

pub fn server_config(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| format!("reading key {}", key_file.display()))?;
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
