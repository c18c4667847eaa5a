//! Making the Samba DC: provisioning it in its own folder, seeding people, groups and the
//! delegated service account over LDAP, and the smb.conf settings of one instance.

use super::*;

pub(super) async fn seed_entries(
    ldap: &mut Ldap,
    service_dn: &str,
    service_password: &SecretString,
) -> anyhow::Result<String> {
    let policy = DOMAIN_POLICY.iter().map(|(attr, value)| Mod::Replace(*attr, HashSet::from([*value]))).collect();
    ldap.with_timeout(LDAP_TIMEOUT).modify(DOMAIN_DN, policy).await?.success().context("setting the domain policy")?;
    ldap.with_timeout(LDAP_TIMEOUT)
        .add(STAFF_DN, vec![("objectClass", HashSet::from(["organizationalUnit"]))])
        .await?
        .success()
        .context("adding OU=Staff")?;
    for sam in SEEDED_PEOPLE {
        let dn = format!("CN={sam},{STAFF_DN}");
        let mail = format!("{sam}@{UPN_SUFFIX}");
        add_user_entry(ldap, &dn, sam, Some(&mail), INITIAL_AD_PASSWORD).await?;
    }
    add_member(ldap, &format!("CN={SEEDED_ADMIN},{STAFF_DN}"), DOMAIN_ADMINS_DN).await?;
    add_user_entry(ldap, service_dn, SERVICE_SAM, None, service_password.expose_secret()).await?;

    read_sid(ldap, service_dn).await
}

/// The SID of the entry `dn`, as `S-1-5-21-…`.
pub(super) async fn read_sid(ldap: &mut Ldap, dn: &str) -> anyhow::Result<String> {
    let (entries, _) = ldap
        .with_timeout(LDAP_TIMEOUT)
        .search(dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
        .await?
        .success()
        .with_context(|| format!("reading the SID of {dn}"))?;
    let entry = entries.into_iter().next().map(SearchEntry::construct).with_context(|| format!("{dn} is missing"))?;
    // ldap3 files a value under `attrs` when it happens to be valid UTF-8, else under `bin_attrs`.
    let sid = entry
        .bin_attrs
        .get("objectSid")
        .and_then(|values| values.first().cloned())
        .or_else(|| entry.attrs.get("objectSid").and_then(|values| values.first()).map(|v| v.clone().into_bytes()))
        .with_context(|| format!("{dn} has no objectSid"))?;
    crate::directory::ad::parse_sid(&sid).ok_or_else(|| anyhow::anyhow!("the objectSid of {dn} is not a SID"))
}

pub(super) async fn add_user_entry(
    ldap: &mut Ldap,
    dn: &str,
    sam: &str,
    mail: Option<&str>,
    password: &str,
) -> anyhow::Result<()> {
    let text = |s: &str| HashSet::from([s.as_bytes().to_vec()]);
    let mut attrs = vec![
        (b"objectClass".to_vec(), text("user")),
        (b"sAMAccountName".to_vec(), text(sam)),
        (b"userPrincipalName".to_vec(), text(&format!("{sam}@{UPN_SUFFIX}"))),
        (b"unicodePwd".to_vec(), HashSet::from([crate::directory::ad::quoted_utf16(password)])),
        (b"userAccountControl".to_vec(), text(NORMAL_ACCOUNT)),
    ];
    if let Some(mail) = mail {
        attrs.push((b"mail".to_vec(), text(mail)));
    }
    ldap.with_timeout(LDAP_TIMEOUT).add(dn, attrs).await?.success().with_context(|| format!("adding {dn}"))?;
    Ok(())
}

pub(super) async fn add_member(ldap: &mut Ldap, user_dn: &str, group_dn: &str) -> anyhow::Result<()> {
    ldap.with_timeout(LDAP_TIMEOUT)
        .modify(group_dn, vec![Mod::Add("member", HashSet::from([user_dn]))])
        .await?
        .success()
        .with_context(|| format!("adding {user_dn} to {group_dn}"))?;
    Ok(())
}

/// A connection over LDAPS bound as `dn`; a failed bind is an error.
pub(super) async fn connect(url: &str, ca_file: &Path, dn: &str, password: &SecretString) -> anyhow::Result<Ldap> {
    let (ldap, rc) = connect_as(url, ca_file, dn, password).await?;
    anyhow::ensure!(rc == 0, "binding as {dn}: rc {rc}");
    Ok(ldap)
}

/// `--sddl=` for `samba-tool dsacl set`: three inherit-only ACEs for user objects below the OU,
/// the delegation an administrator would give a password-reset service.
pub(super) fn delegation_sddl(trustee_sid: &str) -> String {
    delegation_sddl_of(trustee_sid, &Delegated::ALL)
}

/// `--sddl=` with an inherit-only ACE for user objects below the OU for each of `rights`.
pub(super) fn delegation_sddl_of(trustee_sid: &str, rights: &[Delegated]) -> String {
    let aces: String = rights
        .iter()
        .map(|r| {
            let (access, object) = match r {
                Delegated::ResetPassword => ("CR", RESET_PASSWORD_RIGHT),
                Delegated::WriteLockoutTime => ("WP", LOCKOUT_TIME_ATTRIBUTE),
                Delegated::WritePwdLastSet => ("WP", PWD_LAST_SET_ATTRIBUTE),
            };
            format!("(OA;CIIO;{access};{object};{USER_CLASS};{trustee_sid})")
        })
        .collect();
    format!("--sddl={aces}")
}

/// What this instance changes in the provisioned smb.conf: LDAP only, on 127.0.0.1 only, every
/// runtime file inside `dir`, the CA's certificate, and no grace period for old passwords
/// (Samba's default keeps the previous password working for 60 minutes).
pub(super) fn instance_settings(dir: &Path, ca: &TestCa) -> anyhow::Result<Vec<(&'static str, String)>> {
    let run = dir.join("run");
    Ok(vec![
        ("interfaces", "127.0.0.1".into()),
        ("bind interfaces only", "yes".into()),
        ("server services", "ldap".into()),
        ("pid directory", path_text(&run)?),
        ("ncalrpc dir", path_text(&run.join("ncalrpc"))?),
        ("winbindd socket directory", path_text(&run.join("winbindd"))?),
        ("ntp signd socket directory", path_text(&run.join("ntp_signd"))?),
        // Unused while Samba runs with `-i` (it logs to stdout, i.e. `samba.log`), but keeps
        // any other start-up away from /var/log/samba.
        ("log file", path_text(&dir.join("log").join("log.samba"))?),
        ("old password allowed period", "0".into()),
        ("tls keyfile", path_text(&ca.key_file)?),
        ("tls certfile", path_text(&ca.cert_file)?),
        ("tls cafile", path_text(&ca.ca_file)?),
    ])
}

/// Sets `settings` in the `[global]` section of an smb.conf, replacing any line that sets the
/// same parameter (Samba compares names without case and without spaces).
pub(super) fn patch_smb_conf(text: &str, settings: &[(&str, String)]) -> anyhow::Result<String> {
    let key = |name: &str| name.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_lowercase).collect::<String>();
    let ours: HashSet<String> = settings.iter().map(|(name, _)| key(name)).collect();
    let mut out = String::with_capacity(text.len() + 1024);
    let mut in_global = false;
    let mut found_global = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_global = trimmed.eq_ignore_ascii_case("[global]");
            out.push_str(line);
            out.push('\n');
            if in_global && !found_global {
                found_global = true;
                for (name, value) in settings {
                    out.push_str(&format!("\t{name} = {value}\n"));
                }
            }
            continue;
        }
        let replaced = in_global && trimmed.split_once('=').is_some_and(|(name, _)| ours.contains(&key(name)));
        if !replaced {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(found_global, "no [global] section");
    Ok(out)
}

pub(super) fn provision(samba_tool: &Path, dir: &Path, admin_password: &SecretString) -> anyhow::Result<()> {
    let log_file = dir.join("provision.log");
    let log = std::fs::File::create(&log_file).with_context(|| format!("creating {}", log_file.display()))?;
    let log_err = log.try_clone().context("duplicating the log handle")?;
    // The password is on the command line for a moment: acceptable for a throwaway domain.
    let status = Command::new(samba_tool)
        .args(["domain", "provision", "--server-role=dc", "--dns-backend=NONE", "--host-name=dc1"])
        .arg("--host-ip=127.0.0.1")
        .arg(format!("--realm={REALM}"))
        .arg(format!("--domain={NETBIOS_DOMAIN}"))
        .arg(format!("--targetdir={}", path_text(dir)?))
        .arg(format!("--adminpass={}", admin_password.expose_secret()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .status()
        .with_context(|| format!("running {}", samba_tool.display()))?;
    if !status.success() {
        bail!("samba-tool domain provision failed ({status}); end of {}:\n{}", log_file.display(), log_tail(&log_file));
    }
    Ok(())
}

pub(super) fn spawn(samba: &Path, smb_conf: &Path, log_file: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_file).with_context(|| format!("creating {}", log_file.display()))?;
    let log_err = log.try_clone().context("duplicating the log handle")?;
    // `-i`: foreground, log to stdout, and quit on end of file on stdin. std's pipes are
    // close-on-exec, so no other child of ours inherits the write end and keeps Samba alive.
    Command::new(samba)
        .args(["-i", "-M", "single", "-s"])
        .arg(smb_conf)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("starting {}", samba.display()))
}

pub(super) fn refuse_if_ports_taken() -> anyhow::Result<()> {
    for port in LDAP_PORTS {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            bail!(
                "another Samba DC is running (something already listens on {addr}): Samba's LDAP ports are \
                 fixed, so only one sandbox DC fits on this machine at a time"
            );
        }
    }
    Ok(())
}

/// A path as an smb.conf value or command-line option: UTF-8 on one line.
pub(super) fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .filter(|s| !s.chars().any(char::is_control))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{}: the sandbox needs a UTF-8 path without control characters", path.display()))
}
