//! A small pool of encrypted LDAP connections to one directory, each bound as the service
//! account, made when first needed. Every operation runs under the configured timeout; a
//! pooled connection that turns out to be dead is dropped and the operation tried once more on a
//! new one, unless the operation is a write that may already have reached the directory.
//!
//! There is no way to get a plain connection out of this module: only `ldaps://` or `ldap://` with
//! StartTLS are accepted, always with a verifying TLS configuration.

mod refusal;

use super::answer::Failure;
use anyhow::bail;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use refusal::Refusal;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// LDAP's "invalid credentials" (AD adds why: 52e wrong password, 773 must change, 775 locked…).
const INVALID_CREDENTIALS: u32 = 49;

/// Whether an operation may be sent a second time after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads: safe to repeat.
    Safe,
    /// Password writes: repeat only if the request cannot have left this process, because a
    /// second, identical write would fail on history and tell the person something false.
    UnlessSent,
}

/// One bound connection lent to an operation, with the timeout to use.
pub(crate) struct Conn {
    ldap: Ldap,
    timeout: Duration,
}

impl Conn {
    /// The handle, armed with the operation timeout for the next request.
    pub(crate) fn op(&mut self) -> &mut Ldap {
        self.ldap.with_timeout(self.timeout)
    }
}

pub(crate) struct Pool {
    url: String,
    starttls: bool,
    tls: Arc<rustls::ClientConfig>,
    bind_dn: String,
    bind_password: Mutex<SecretString>,
    /// Where the password comes from, read again before each new connection: a corrected file
    /// is used without a restart.
    password_file: Option<std::path::PathBuf>,
    /// The service account's last refused bind: what is tried again, and when.
    refused: Mutex<Option<Refusal>>,
    /// Held while the service account binds: connections opened at once must not each try a
    /// password before the first refusal is known.
    bind_turn: tokio::sync::Mutex<()>,
    /// Sent with the service account's bind: ppolicy's request control on OpenLDAP, so that a
    /// locked account tells itself apart from a wrong password.
    service_controls: Vec<ldap3::controls::RawControl>,
    timeout: Duration,
    idle: Mutex<Vec<Ldap>>,
    /// Connections used only to check people's passwords (each left bound as the last person
    /// checked, or anonymous after a refusal): reused for the next check, never lent to anything
    /// else, so many sign-ins do not each cost the directory a new TLS connection.
    person_idle: Mutex<Vec<Ldap>>,
    /// Password checks have their own allowance, so a flood of sign-ins cannot starve resets.
    person_permits: Semaphore,
    permits: Semaphore,
    size: usize,
}

impl Pool {
    /// Checks the URL and remembers everything needed to connect later; no network yet.
    pub(crate) fn new(
        url: &str,
        starttls: bool,
        tls: Arc<rustls::ClientConfig>,
        bind_dn: &str,
        bind_password: SecretString,
        size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Pool> {
        crate::config::check_ldap_url(url, starttls)?;
        if size == 0 {
            bail!("directory pool size must be at least 1");
        }
        if timeout.is_zero() {
            bail!("directory timeout must be positive");
        }
        Ok(Pool {
            url: url.to_string(),
            starttls,
            tls,
            bind_dn: bind_dn.to_string(),
            bind_password: Mutex::new(bind_password),
            password_file: None,
            refused: Mutex::new(None),
            bind_turn: tokio::sync::Mutex::new(()),
            service_controls: Vec::new(),
            timeout,
            idle: Mutex::new(Vec::new()),
            person_idle: Mutex::new(Vec::new()),
            person_permits: Semaphore::new(size),
            permits: Semaphore::new(size),
            size,
        })
    }

    /// The pool a directory's configuration describes.
    pub(crate) fn for_directory(
        cfg: &crate::config::DirectoryConfig,
        tls: Arc<rustls::ClientConfig>,
        bind_password: SecretString,
    ) -> anyhow::Result<Pool> {
        let mut pool = Pool::new(
            &cfg.url,
            cfg.starttls,
            tls,
            &cfg.bind_dn,
            bind_password,
            cfg.pool_size,
            Duration::from_secs(cfg.timeout_secs),
        )?;
        pool.password_file = cfg.bind_password_file.clone();
        if cfg.kind == crate::config::DirectoryKind::Openldap {
            let ppolicy = super::answer::PPOLICY_OID.to_string();
            pool.service_controls = vec![ldap3::controls::RawControl { ctype: ppolicy, crit: false, val: None }];
        }
        Ok(pool)
    }

    /// Every entry under each of `bases` that matches `filter`, each once, in pages; referrals
    /// are dropped, never chased. A base DN that does not exist holds nobody when looking one
    /// person up; for a full sync (`whole_scope`) it is an error, because a sync that silently
    /// missed a base would make its people look deleted.
    pub(crate) async fn search_bases(
        &self,
        bases: &[String],
        filter: &str,
        attrs: &[&str],
        whole_scope: bool,
    ) -> Result<Vec<ldap3::SearchEntry>, Failure> {
        use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
        const PAGE_SIZE: i32 = 500;
        let mut found: Vec<ldap3::SearchEntry> = Vec::new();
        // An entry under two bases (one inside the other) is kept once. A set, not a scan of
        // what was found for each entry: a full sync reads every person, and the agent's one
        // thread answers nothing else meanwhile.
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let several = bases.len() > 1;
        for base in bases {
            let result = self
                .run(Retry::Safe, |mut c: Conn| async move {
                    let adapters: Vec<Box<dyn Adapter<_, _>>> =
                        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE_SIZE))];
                    let mut stream = c
                        .op()
                        .streaming_search_with(adapters, base, ldap3::Scope::Subtree, filter, attrs.to_vec())
                        .await?;
                    let mut entries = Vec::new();
                    while let Some(entry) = stream.next().await? {
                        entries.push(ldap3::SearchEntry::construct(entry));
                    }
                    stream.finish().await.success()?;
                    Ok(entries)
                })
                .await;
            match result {
                Ok(entries) => {
                    for e in entries {
                        if !several || seen.insert(e.dn.to_ascii_lowercase()) {
                            found.push(e);
                        }
                    }
                }
                Err(Failure::Result { rc: 32, .. }) if !whole_scope => {
                    tracing::warn!(%base, "configured base DN does not exist")
                }
                Err(Failure::Result { rc: 4, text }) => {
                    return Err(Failure::Result {
                        rc: 4,
                        text: format!("{text} (raise the size limit for the service account)"),
                    })
                }
                Err(f) => return Err(f),
            }
        }
        Ok(found)
    }

    /// Runs `op` on a bound connection of the pool. `op` gets its own handle and must map an
    /// error result to `Err` itself (e.g. with `.success()`) only when it wants a [`Failure`].
    pub(crate) async fn run<T, F, Fut>(&self, retry: Retry, op: F) -> Result<T, Failure>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let _permit = match tokio::time::timeout(self.timeout, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Failure::Internal("directory pool closed".into())),
            Err(_) => {
                return Err(Failure::Unreachable(format!(
                    "all {} directory connections stayed busy for {} s",
                    self.size,
                    self.timeout.as_secs()
                )))
            }
        };
        let mut retried = false;
        loop {
            let (ldap, reused) = match self.take_idle() {
                Some(ldap) => (ldap, true),
                None => (self.connect().await?, false),
            };
            let result = op(Conn { ldap: ldap.clone(), timeout: self.timeout }).await;
            match result {
                Ok(value) => {
                    self.give_back(ldap);
                    return Ok(value);
                }
                Err(e) if is_transport(&e) => {
                    // The connection is not trusted again, whatever happened to it.
                    drop(ldap);
                    let never_sent = matches!(e, LdapError::OpSend { .. });
                    // A fresh connection that fails at once means the directory is down:
                    // trying again would only double the person's wait.
                    if reused && !retried && (retry == Retry::Safe || never_sent) {
                        tracing::debug!(error = %e, "pooled directory connection was dead; trying a new one");
                        retried = true;
                        continue;
                    }
                    if retry == Retry::UnlessSent && !never_sent {
                        return Err(Failure::Unconfirmed(e.to_string()));
                    }
                    return Err(Failure::Unreachable(e.to_string()));
                }
                Err(LdapError::LdapResult { result }) => {
                    self.give_back(ldap);
                    return Err(Failure::Result { rc: result.rc, text: result.text });
                }
                Err(e) => {
                    self.give_back(ldap);
                    return Err(Failure::Internal(e.to_string()));
                }
            }
        }
    }

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn give_back(&self, mut ldap: Ldap) {
        if ldap.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.size {
            idle.push(ldap);
        }
    }

    /// Binds as `dn` with a person's password on a connection kept for such checks only (never
    /// one of the service account's), with `controls`, and returns the directory's answer. Only
    /// for checking that the password is right. An empty password is refused here, since a
    /// simple bind without one would be an anonymous bind, which "succeeds".
    pub(crate) async fn bind_as(
        &self,
        dn: &str,
        password: &SecretString,
        controls: Vec<ldap3::controls::RawControl>,
    ) -> Result<ldap3::LdapResult, Failure> {
        if password.expose_secret().is_empty() {
            return Ok(ldap3::LdapResult {
                rc: 49,
                matched: String::new(),
                text: "empty password refused before any bind".into(),
                refs: Vec::new(),
                ctrls: Vec::new(),
            });
        }
        let _permit = tokio::time::timeout(self.timeout, self.person_permits.acquire())
            .await
            .map_err(|_| Failure::Unreachable(format!("no free connection to {} in time", self.url)))?;
        let reused = self.person_idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let bind = |mut ldap: Ldap| {
            let controls = controls.clone();
            async move {
                let r = ldap
                    .with_timeout(self.timeout)
                    .with_controls(controls)
                    .simple_bind(dn, password.expose_secret())
                    .await;
                (ldap, r)
            }
        };
        let (mut ldap, result) = match reused {
            Some(ldap) => match bind(ldap).await {
                // A kept connection the directory closed meanwhile: once more on a new one. Not
                // after a timeout: the directory may have counted that attempt already.
                (_, Err(e)) if !matches!(e, LdapError::Timeout { .. }) => bind(self.open().await?).await,
                done => done,
            },
            None => bind(self.open().await?).await,
        };
        match result {
            Ok(r) => {
                let surplus = {
                    let mut idle = self.person_idle.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() < self.size {
                        idle.push(ldap);
                        None
                    } else {
                        Some(ldap)
                    }
                };
                if let Some(mut ldap) = surplus {
                    let _ = ldap.unbind().await;
                }
                Ok(r)
            }
            Err(e) => {
                let _ = ldap.unbind().await;
                Err(Failure::Unreachable(format!("binding as the person at {}: {e}", self.url)))
            }
        }
    }

    /// The service account's password now: the file read again (a corrected one is used at
    /// once), or as configured.
    fn service_password(&self) -> SecretString {
        let mut current = self.bind_password.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = &self.password_file {
            match crate::config::read_secret(&None, &Some(file.clone()), "bind_password_file") {
                Ok(Some(fresh)) => *current = fresh,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading the bind password file again failed"),
            }
        }
        current.clone()
    }

    fn fingerprint(password: &SecretString) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(password.expose_secret().as_bytes()).into()
    }

    /// Opens an encrypted connection and binds it as the service account, unless the directory
    /// refused this very password before as invalid credentials: binding again with it would
    /// only count towards locking the service account out (AD locks it within a minute).
    /// Connections are opened (TCP and TLS) side by side; only their binds take turns.
    async fn connect(&self) -> Result<Ldap, Failure> {
        self.bind_allowed()?;
        let mut ldap = self.open().await?;
        let _turn = self.bind_turn.lock().await;
        // Asked again in turn: a bind that just ended may have been refused.
        let (password, print, now) = self.bind_allowed()?;
        let bound = ldap
            .with_timeout(self.timeout)
            .with_controls(self.service_controls.clone())
            .simple_bind(&self.bind_dn, password.expose_secret())
            .await
            .map_err(|e| Failure::Unreachable(format!("binding to {}: {e}", self.url)))?;
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if bound.rc == INVALID_CREDENTIALS {
            let locked = bound.ctrls.iter().any(|c| {
                c.1.ctype == super::answer::PPOLICY_OID
                    && c.1.val.as_deref().and_then(super::answer::ppolicy_error)
                        == Some(super::answer::ppolicy::ACCOUNT_LOCKED)
            });
            let text = if locked { format!("{} (ppolicy: account locked)", bound.text) } else { bound.text.clone() };
            let next = Refusal::after(refused.take(), print, &text, locked, now);
            tracing::error!(bind_dn = %self.bind_dn, text = %text, retry = %next.retry_words(now), "the service account's bind was refused");
            *refused = Some(next);
            drop(refused);
            return Err(Failure::BindRefused { rc: bound.rc, text });
        } else if bound.rc == 0 {
            *refused = None;
        }
        drop(refused);
        if bound.rc != 0 {
            return Err(Failure::BindRefused { rc: bound.rc, text: bound.text });
        }
        Ok(ldap)
    }

    /// The service account's password, its fingerprint and now, unless the directory refused
    /// this very password and its wait is not over.
    fn bind_allowed(&self) -> Result<(SecretString, [u8; 32], std::time::Instant), Failure> {
        let password = self.service_password();
        let print = Self::fingerprint(&password);
        let now = std::time::Instant::now();
        if let Some(r) = self.refused.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if let Err(text) = r.allows(&print, now) {
                return Err(Failure::BindRefused { rc: INVALID_CREDENTIALS, text });
            }
        }
        Ok((password, print, now))
    }

    /// Opens an encrypted connection, not bound yet.
    async fn open(&self) -> Result<Ldap, Failure> {
        self.open_unbound().await.map_err(|e| Failure::Unreachable(format!("connecting to {}: {e}", self.url)))
    }

    /// Opens an encrypted connection, not bound yet, with ldap3's own error: `agent doctor` tells
    /// an untrusted certificate apart from a closed port with it.
    pub(crate) async fn open_unbound(&self) -> Result<Ldap, LdapError> {
        let settings = LdapConnSettings::new()
            .set_config(self.tls.clone())
            .set_starttls(self.starttls)
            .set_conn_timeout(self.timeout);
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    /// Binds `ldap` as the service account and returns the directory's answer, whatever it is.
    pub(crate) async fn bind_service(&self, ldap: &mut Ldap) -> Result<ldap3::LdapResult, LdapError> {
        let password = self.service_password();
        ldap.with_timeout(self.timeout).simple_bind(&self.bind_dn, password.expose_secret()).await
    }

    pub(crate) fn bind_dn(&self) -> &str {
        &self.bind_dn
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Errors after which the connection cannot be trusted: it broke, or an answer never came.
fn is_transport(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::Timeout { .. }
            | LdapError::EndOfStream
            | LdapError::Rustls { .. }
    )
}

#[cfg(test)]
mod tests;
