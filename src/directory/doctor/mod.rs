//! `passback agent doctor`, the directory half: is the directory reachable over verified TLS, does
//! the service account bind, do the base DNs hold people, and does the account hold every right
//! the agent needs there. Each answer is a [`Check`] a test can assert on.
//!
//! The rights are probed on a real person in scope with requests that the directory must refuse
//! whatever its policy, only later or earlier depending on whether the right is there: values
//! that cannot be a password, or the removal of a value nobody has. Nothing here changes a
//! password or an account's state. Each probe, and what Samba 4.17 and OpenLDAP 2.5 answered to
//! it, is described where it is made (`ad.rs`, `openldap.rs`).

mod ad;
mod openldap;

use super::pool::Pool;
use super::{Backend, Directory};
use crate::config::DirectoryConfig;
use crate::domain::SyncedUser;
use ldap3::{LdapError, Scope};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// A fact worth knowing, neither good nor bad.
    Info,
    /// Works, but not as well as it could, or not for everyone.
    Warn,
    /// The agent will not work (fully) until this is fixed.
    Fail,
    /// Could not be checked, safely or at all; the detail says why.
    NotChecked,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::NotChecked => "not checked",
        }
    }
}

/// One row of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    /// The directory's id, or `portal` / `agent`.
    pub scope: String,
    /// What was checked, e.g. `right: write pwdLastSet`.
    pub name: String,
    pub detail: String,
    /// For a failure or a warning: what to do about it, in plain words.
    pub fix: Option<String>,
}

/// The checks of one scope, in the order they were made.
pub struct Checks {
    scope: String,
    list: Vec<Check>,
}

impl Checks {
    pub fn new(scope: &str) -> Checks {
        Checks { scope: scope.to_string(), list: Vec::new() }
    }

    pub fn add(&mut self, status: Status, name: &str, detail: impl Into<String>, fix: Option<String>) {
        self.list.push(Check { status, scope: self.scope.clone(), name: name.to_string(), detail: detail.into(), fix });
    }

    pub fn pass(&mut self, name: &str, detail: impl Into<String>) {
        self.add(Status::Pass, name, detail, None);
    }

    pub fn info(&mut self, name: &str, detail: impl Into<String>) {
        self.add(Status::Info, name, detail, None);
    }

    pub fn warn(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Warn, name, detail, Some(fix.into()));
    }

    pub fn fail(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(Status::Fail, name, detail, Some(fix.into()));
    }

    pub fn not_checked(&mut self, name: &str, why: impl Into<String>) {
        self.add(Status::NotChecked, name, why, None);
    }

    pub fn into_vec(self) -> Vec<Check> {
        self.list
    }
}

/// A person the rights are probed on, and the base DN that put them in scope.
struct ProbePerson<'a> {
    base: &'a str,
    user: &'a SyncedUser,
}

/// Every check of one configured directory. Stops at the first step that makes the rest
/// meaningless (no connection, no bind), saying so.
pub async fn check_directory(cfg: &DirectoryConfig) -> Vec<Check> {
    let mut out = Checks::new(&cfg.id);
    let dir = match Directory::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            out.fail(
                "configuration",
                format!("{e:#}"),
                "correct this [[directories]] entry of the agent's configuration (url, ca_file, \
                 bind_password_file, user_filter)",
            );
            return out.into_vec();
        }
    };
    let pool = match &dir.backend {
        Backend::Ad(d) => d.pool(),
        Backend::OpenLdap(d) => d.pool(),
    };
    if !connects(cfg, pool, &mut out).await {
        return out.into_vec();
    }
    let Some(people) = scope(&dir, &mut out).await else { return out.into_vec() };
    lockout(&dir, &mut out).await;
    nist(&dir, &mut out).await;
    match &dir.backend {
        Backend::Ad(d) => ad::checks(d, cfg, &people, &mut out).await,
        Backend::OpenLdap(d) => openldap::checks(d, cfg, &people, &mut out).await,
    }
    out.into_vec()
}

/// The directory's lockout threshold, and what the portal makes of it: `/signin` and `/change`
/// try at most one wrong password fewer per person and day, so nobody typing a name can lock its
/// owner out. A threshold of 1 or 2 leaves people almost no room to mistype.
async fn lockout(dir: &Directory, out: &mut Checks) {
    match dir.policy().await.map(|p| p.lockout_threshold) {
        None => out.warn(
            "lockout threshold",
            "the default password policy could not be read, so the portal cannot keep its sign-in              attempts below the directory's lockout threshold",
            "give the service account read access to the policy (OpenLDAP: policy_dn; AD: the domain object)",
        ),
        Some(None | Some(0)) => out.info("lockout threshold", "the directory never locks accounts out"),
        Some(Some(n)) if n <= 2 => out.warn(
            "lockout threshold",
            format!("the directory locks an account after {n} wrong passwords: the portal tries 1 a day"),
            "a threshold of at least 5 lets people mistype without being refused at sign-in",
        ),
        Some(Some(n)) => out.pass(
            "lockout threshold",
            format!(
                "the directory locks an account after {n} wrong passwords: /signin and /change try at most {} a day",
                n - 1
            ),
        ),
    }
}

/// Where the directory's default policy departs from NIST SP 800-63B-4, for a portal set to
/// `password_policy.profile = "nist-800-63b-4"` (this host does not know the portal's settings):
/// information, one row per difference, with what to change.
async fn nist(dir: &Directory, out: &mut Checks) {
    use crate::domain::nist::{contradictions, Dialect};
    const NAME: &str = "NIST SP 800-63B-4";
    let Some(policy) = dir.policy().await else {
        out.not_checked(NAME, "the default password policy could not be read");
        return;
    };
    let dialect = match dir.backend {
        Backend::Ad(_) => Dialect::Ad,
        Backend::OpenLdap(_) => Dialect::OpenLdap,
    };
    let found = contradictions(&policy, dialect);
    if found.is_empty() {
        out.info(NAME, "the default password policy agrees with the portal's nist-800-63b-4 profile");
    }
    for c in found {
        out.add(Status::Info, NAME, format!("for the portal's nist-800-63b-4 profile: {}", c.detail), Some(c.fix));
    }
}

/// Reachable, TLS verified, service account bound: one row each.
async fn connects(cfg: &DirectoryConfig, pool: &Pool, out: &mut Checks) -> bool {
    let Some((host, port)) = host_port(&cfg.url) else {
        out.fail(
            "reachable",
            format!("{} is not an LDAP URL", cfg.url),
            "set url to ldaps://host:636, or ldap://host:389 with starttls = true",
        );
        return false;
    };
    match tokio::time::timeout(pool.timeout(), tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(_)) => out.pass("reachable", format!("{host}:{port} accepts connections")),
        Ok(Err(e)) => {
            out.fail(
                "reachable",
                format!("cannot connect to {host}:{port}: {e}"),
                "check that url names the directory server and its port (LDAPS 636, or 389 with \
                 starttls = true), that it runs, and that no firewall stands between this host and it",
            );
            return false;
        }
        Err(_) => {
            out.fail(
                "reachable",
                format!("no answer from {host}:{port} within {} s", pool.timeout().as_secs()),
                "check the address and any firewall between this host and the directory",
            );
            return false;
        }
    }
    let how = if cfg.starttls { "StartTLS" } else { "LDAPS" };
    let trusted = match &cfg.ca_file {
        Some(ca) => format!("the web roots and ca_file {}", ca.display()),
        None => "the public web roots only (no ca_file)".to_string(),
    };
    let mut ldap = match pool.open_unbound().await {
        Ok(ldap) => {
            out.pass("TLS", format!("{how} to {}: the certificate verifies against {trusted}", cfg.url));
            ldap
        }
        Err(e) => {
            let (detail, fix) = tls_failure(&e, &host, cfg.ca_file.is_some(), cfg.starttls);
            out.fail("TLS", format!("{how} to {}: {detail}", cfg.url), fix);
            out.not_checked("service account bind", "no verified connection");
            return false;
        }
    };
    let bound = pool.bind_service(&mut ldap).await;
    let _ = ldap.unbind().await;
    match bound {
        Ok(res) if res.rc == 0 => {
            out.pass("service account bind", format!("{} binds", pool.bind_dn()));
            true
        }
        Ok(res) => {
            out.fail(
                "service account bind",
                format!("{} was refused: rc={} {:?}", pool.bind_dn(), res.rc, res.text),
                bind_fix(res.rc, &res.text),
            );
            false
        }
        Err(e) => {
            out.fail(
                "service account bind",
                format!("{}: {e}", pool.bind_dn()),
                "the directory dropped the connection during the bind: see its log",
            );
            false
        }
    }
}

/// Host and port of an `ldaps://` or `ldap://` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let parsed = url::Url::parse(url).ok()?;
    let port = parsed.port().unwrap_or(if parsed.scheme() == "ldaps" { 636 } else { 389 });
    let host = parsed.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    Some((host, port))
}

/// The rustls error somewhere in an error's chain, if any: a TLS failure, as opposed to a
/// network one. rustls errors travel inside `io::Error`s, which hide them from `source()`.
pub fn rustls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // An io::Error's source() skips the error it wraps: look inside it instead.
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Why a certificate was not accepted, and what to do, in words for an administrator.
pub fn certificate_advice(e: &rustls::Error, host: &str, has_ca: bool, ca_setting: &str) -> (String, String) {
    use rustls::CertificateError as C;
    match e {
        // BadSignature: a trusted CA of the same name did not sign it.
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => (
            format!("the certificate is not trusted: it does not chain to a CA this agent trusts ({e})"),
            if has_ca {
                format!("{ca_setting} does not hold the CA that issued this certificate: point it at that CA's certificate (PEM)")
            } else {
                format!("set {ca_setting} to the PEM certificate of the CA that issued the server's certificate")
            },
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => (
            format!("the certificate does not name {host} ({e})"),
            format!("use a host name the certificate lists (its subject alternative names), or reissue it for {host}"),
        ),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => (
            format!("the certificate is outside its validity period ({e})"),
            "renew the server's certificate, or correct this host's clock if it is wrong".to_string(),
        ),
        other => (
            format!("TLS failed: {other}"),
            "check the server's certificate and TLS settings (TLS 1.2 or 1.3 is required)".to_string(),
        ),
    }
}

fn tls_failure(e: &LdapError, host: &str, has_ca: bool, starttls: bool) -> (String, String) {
    if let Some(r) = rustls_error(e) {
        return certificate_advice(r, host, has_ca, "ca_file");
    }
    let fix = if starttls {
        "the server did not complete StartTLS: make sure it offers StartTLS on this port, or use ldaps:// on 636"
    } else {
        "the server did not complete a TLS handshake: make sure this port speaks LDAPS (636), or use ldap:// on 389 with starttls = true"
    };
    (format!("no TLS session: {e}"), fix.to_string())
}

/// What a refused service bind means. AD says why in the `data` code of its text.
fn bind_fix(rc: u32, text: &str) -> String {
    match (rc, super::answer::ad_bind_data(text).as_deref()) {
        (49, Some("52e")) => "wrong password: put the service account's current password in bind_password_file \
                              (a running agent stops binding with a refused password, so it cannot lock the \
                              account out, and reads the file again before its next connection)"
            .into(),
        (49, Some("525")) => "no such account: correct bind_dn".into(),
        (49, Some("532")) => {
            "the service account's password has expired: set a new one (and make it never expire)".into()
        }
        (49, Some("533")) => "the service account is disabled: enable it".into(),
        (49, Some("701")) => "the service account has expired: extend its expiry date".into(),
        (49, Some("773")) => {
            "the service account must change its password first: set a new one and clear \"must change at next logon\""
                .into()
        }
        (49, Some("775")) => {
            "the service account is locked out: unlock it, and check that nothing else uses an old password for it"
                .into()
        }
        (49, _) => "wrong bind_dn or password, or the account is locked: check both, and the directory's log \
                    (a running agent does not bind again with a refused password)"
            .into(),
        (8 | 13, _) => "the directory wants a stronger connection: use ldaps:// or starttls = true".into(),
        _ => "see the directory's answer above, and its log".into(),
    }
}

/// The base DNs exist and hold people (with the sync's own filter); everyone in scope, as the
/// sync sees them, when the sync works.
async fn scope(dir: &Directory, out: &mut Checks) -> Option<Vec<SyncedUser>> {
    let (pool, bases, filter) = match &dir.backend {
        Backend::Ad(d) => (d.pool(), d.scope().0, d.scope().1),
        Backend::OpenLdap(d) => (d.pool(), d.scope().0, d.scope().1),
    };
    let mut all_there = true;
    for base in bases {
        let name = "base DN";
        let found = pool
            .run(super::pool::Retry::Safe, |mut c| async move {
                c.op().search(base, Scope::Base, "(objectClass=*)", vec!["1.1"]).await?.success()
            })
            .await;
        match found {
            Ok(_) => {}
            Err(super::answer::Failure::Result { rc: 32, .. }) => {
                all_there = false;
                out.fail(
                    name,
                    format!("{base} does not exist (noSuchObject)"),
                    "correct base_dns: each must be the DN of an existing OU or container",
                );
            }
            Err(f) => {
                all_there = false;
                out.fail(
                    name,
                    format!("{base} cannot be read: {f}"),
                    "let the service account read (list and read) the base DN and the people below it",
                );
            }
        }
    }
    if !all_there {
        out.not_checked("people in scope", "a base DN is missing, so the sync would fail");
        return None;
    }
    let people = match dir.sync_users().await {
        Ok(p) => p,
        Err(e) => {
            out.fail(
                "people in scope",
                format!("the sync's search failed: {e:#}"),
                "see the error: the agent runs the same search to tell the portal who exists",
            );
            return None;
        }
    };
    for base in bases {
        let n = people.iter().filter(|p| under(&p.dn, base)).count();
        let name = "base DN";
        if n == 0 {
            out.warn(
                name,
                format!("{base} exists, but no one in it matches {filter}"),
                "check that people live below this DN and that user_filter lets them through",
            );
        } else {
            out.pass(name, format!("{base} exists; {n} people match {filter}"));
        }
    }
    Some(people)
}

/// Whether `dn` is `base` or below it (DNs compared without case; the server spells both).
fn under(dn: &str, base: &str) -> bool {
    let (dn, base) = (dn.to_ascii_lowercase(), base.to_ascii_lowercase());
    dn == base || dn.ends_with(&format!(",{base}"))
}

/// Per base DN, the first person in scope the rights can be probed on: never a protected one,
/// never the service account itself, an enabled one if there is one.
fn probe_people<'a>(
    bases: &'a [String],
    people: &'a [SyncedUser],
    bind_dn: &str,
) -> Vec<(&'a str, Option<ProbePerson<'a>>)> {
    let facts: Vec<(&str, bool, bool)> = people.iter().map(|p| (p.dn.as_str(), p.protected, p.enabled)).collect();
    bases
        .iter()
        .map(|base| {
            let user = probe_index(base, &facts, bind_dn).and_then(|i| people.get(i));
            (base.as_str(), user.map(|user| ProbePerson { base, user }))
        })
        .collect()
}

/// Which of `people` (DN, protected, enabled) to probe on under `base`.
fn probe_index(base: &str, people: &[(&str, bool, bool)], bind_dn: &str) -> Option<usize> {
    let candidate =
        |(dn, protected, _): &(&str, bool, bool)| under(dn, base) && !protected && !dn.eq_ignore_ascii_case(bind_dn);
    people.iter().position(|p| candidate(p) && p.2).or_else(|| people.iter().position(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dn_is_under_its_base_and_not_under_a_sibling_with_the_same_ending() {
        assert!(under("CN=a,OU=Staff,DC=corp,DC=test", "ou=staff,dc=corp,dc=test"));
        assert!(under("OU=Staff,DC=corp,DC=test", "OU=Staff,DC=corp,DC=test"));
        assert!(!under("CN=a,OU=OtherStaff,DC=corp,DC=test", "OU=Staff,DC=corp,DC=test"));
    }

    #[test]
    fn ad_bind_refusals_are_explained_by_their_data_code() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1";
        assert!(bind_fix(49, text).contains("locked out"));
        assert!(bind_fix(49, &text.replace("775", "52e")).contains("wrong password"));
        assert!(bind_fix(49, "").contains("wrong bind_dn or password"));
    }

    #[test]
    fn urls_give_their_host_and_default_port() {
        assert_eq!(host_port("ldaps://dc1.corp.test"), Some(("dc1.corp.test".into(), 636)));
        assert_eq!(host_port("ldap://127.0.0.1:3389"), Some(("127.0.0.1".into(), 3389)));
        assert_eq!(host_port("ldaps://[::1]:636"), Some(("::1".into(), 636)));
    }

    #[test]
    fn an_unknown_issuer_asks_for_the_right_ca() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let (detail, fix) = certificate_advice(&e, "dc1", false, "ca_file");
        assert!(detail.contains("not trusted"), "{detail}");
        assert!(fix.contains("set ca_file"), "{fix}");
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, e.clone());
        assert_eq!(rustls_error(&wrapped), Some(&e));
    }

    #[test]
    fn probes_skip_protected_people_and_the_service_account_and_prefer_enabled_ones() {
        let people = [
            ("CN=admin,OU=A,DC=x", true, true),
            ("CN=svc,OU=A,DC=x", false, true),
            ("CN=off,OU=A,DC=x", false, false),
            ("CN=on,OU=A,DC=x", false, true),
            ("CN=boss,OU=B,DC=x", true, true),
        ];
        assert_eq!(probe_index("OU=A,DC=x", &people, "cn=SVC,ou=a,dc=x"), Some(3));
        assert_eq!(probe_index("OU=B,DC=x", &people, "cn=svc,ou=a,dc=x"), None, "only a protected person there");
        assert_eq!(probe_index("OU=A,DC=x", &people[..3], "cn=svc,ou=a,dc=x"), Some(2), "a disabled one if no other");
    }
}
