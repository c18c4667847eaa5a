//! Protection an administrator configures on the agent (`protected_groups`, `protected_filter`),
//! beside AD's built-in privileged groups: checked live, in the directory, before every reset,
//! unlock or forced change, so neither a portal's stale copy nor a compromised portal decides.
//! A rule that cannot be checked (a group that does not exist, an unreadable entry) refuses.

use super::answer::Failure;
use super::pool::{Conn, Pool, Retry};
use crate::config::DirectoryConfig;
use ldap3::{ldap_escape, LdapError, Scope, SearchEntry};

/// AD's "member of, nested" matching rule (LDAP_MATCHING_RULE_IN_CHAIN).
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

pub(super) struct Configured {
    groups: Vec<String>,
    filter: Option<String>,
    /// AD: membership through nested groups counts.
    nested: bool,
}

impl Configured {
    pub(super) fn new(cfg: &DirectoryConfig) -> anyhow::Result<Configured> {
        let filter = match cfg.protected_filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) if f.starts_with('(') => Some(f.to_string()),
            Some(f) => Some(format!("({f})")),
        };
        if let Some(f) = &filter {
            ldap3::parse_filter(f)
                .map_err(|_| anyhow::anyhow!("directory {}: protected_filter {f:?} is not an LDAP filter", cfg.id))?;
        }
        let nested = cfg.kind == crate::config::DirectoryKind::Ad;
        Ok(Configured { groups: cfg.protected_groups.clone(), filter, nested })
    }

    /// Why the person `anchor_filter` finds (under `bases`, within `person_filter`) is protected
    /// by this configuration, if they are.
    pub(super) async fn why(
        &self,
        pool: &Pool,
        bases: &[String],
        person_filter: &str,
        anchor_filter: &str,
    ) -> Result<Option<String>, Failure> {
        if self.groups.is_empty() && self.filter.is_none() {
            return Ok(None);
        }
        let person = format!("(&{anchor_filter}{person_filter})");
        let Some(entry) = pool.search_bases(bases, &person, &["1.1"], false).await?.into_iter().next() else {
            return Ok(None); // not found: the operation itself says so
        };
        if let Some(f) = &self.filter {
            let matched = format!("(&{anchor_filter}{person_filter}{f})");
            if !pool.search_bases(bases, &matched, &["1.1"], false).await?.is_empty() {
                return Ok(Some(format!("matches protected_filter {f}")));
            }
        }
        for group in &self.groups {
            if self.member(pool, &entry.dn, group).await? {
                return Ok(Some(format!("member of {group}")));
            }
        }
        Ok(None)
    }

    /// Whether `dn` is in `group`: AD asks the person's entry with the in-chain rule (nested
    /// groups count); OpenLDAP asks the group entry (which must exist: a missing one refuses).
    async fn member(&self, pool: &Pool, dn: &str, group: &str) -> Result<bool, Failure> {
        if self.nested {
            // The in-chain rule matches nothing for a group that does not exist: make sure it
            // does, so a misspelt group refuses rather than protects nobody.
            let exists = pool
                .run(Retry::Safe, |mut c: Conn| async move {
                    let (e, _) =
                        c.op().search(group, Scope::Base, "(objectClass=group)", vec!["1.1"]).await?.success()?;
                    Ok::<_, LdapError>(!e.is_empty())
                })
                .await?;
            if !exists {
                return Err(Failure::Result { rc: 32, text: format!("protected group {group} is not a group") });
            }
        }
        let (base, filter) = if self.nested {
            (dn.to_string(), format!("(memberOf:{IN_CHAIN}:={})", ldap_escape(group)))
        } else {
            let dn = ldap_escape(dn);
            (group.to_string(), format!("(|(member={dn})(uniqueMember={dn}))"))
        };
        let (base, filter) = (base.as_str(), filter.as_str());
        let found = pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let (entries, _) = c.op().search(base, Scope::Base, filter, vec!["1.1"]).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?;
        Ok(found.is_some())
    }
}
