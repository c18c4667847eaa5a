//! Reading Active Directory: a person and whether they are protected, the policy that applies
//! to them, their live state, and the people in scope for a sync (with what `agent doctor` reads).

use super::*;

impl Ad {
    /// The domain's policy (not a PSO's: those are per person).
    pub(crate) async fn default_policy(&self) -> Option<PolicyFacts> {
        let server = self.server().await.ok()?.clone();
        self.policy_for(&server, None).await
    }

    pub(super) async fn policy_for(&self, server: &ServerFacts, pso: Option<&str>) -> Option<PolicyFacts> {
        let (dn, attrs) = match pso {
            Some(pso) => (pso, PSO_ATTRS.to_vec()),
            None => (server.domain_dn.as_str(), DOMAIN_POLICY_ATTRS.to_vec()),
        };
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| {
                let attrs = attrs.clone();
                async move {
                    let (entries, _) = c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                    Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
                }
            })
            .await;
        // A reset is checked against the history only with the policy-hints control.
        let history_on_reset = Some(server.hints_oid.is_some());
        match entry {
            Ok(Some(e)) if pso.is_some() => Some(PolicyFacts { history_on_reset, ..pso_policy(&e) }),
            Ok(Some(e)) => Some(PolicyFacts { history_on_reset, ..domain_policy(&e) }),
            Ok(None) => None,
            Err(f) => {
                tracing::warn!(%dn, error = %f, "could not read the password policy");
                None
            }
        }
    }

    /// Looks the anchor up under every base DN, within the sync scope; with its protection when
    /// `for_reset`.
    pub(super) async fn find(&self, anchor: &Anchor, for_reset: bool) -> Result<Option<Person>, Failure> {
        let Some(guid) = guid_bytes(anchor.as_str()) else { return Ok(None) };
        let filter = format!("(&(objectGUID={}){})", escape_bytes(&guid), self.person_filter);
        let attrs =
            ["sAMAccountName", "adminCount", "objectSid", "msDS-ResultantPSO", "userAccountControl", "pwdLastSet"];
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            return Err(Failure::Result { rc: 80, text: format!("objectGUID matches {} entries", found.len()) });
        }
        let Some(entry) = found.pop() else { return Ok(None) };
        let protection = if for_reset { Some(self.protection(&entry).await?) } else { None };
        let uac: u32 = number(&entry, "userAccountControl").unwrap_or(0);
        Ok(Some(Person {
            sam: first(&entry, "sAMAccountName").unwrap_or_default().to_string(),
            pso: first(&entry, "msDS-ResultantPSO").map(str::to_string),
            protection,
            disabled: uac & UF_ACCOUNTDISABLE != 0,
            password_age_secs: number::<i64>(&entry, "pwdLastSet").and_then(filetime_age_secs),
            password_set_at: number::<i64>(&entry, "pwdLastSet").and_then(filetime_unix),
            never_expires: uac & UF_DONT_EXPIRE_PASSWD != 0,
            dn: entry.dn,
        }))
    }

    /// The account's state now: enabled, locked out, must change, password expired.
    pub(crate) async fn inspect(&self, anchor: &Anchor) -> Result<Option<crate::domain::AccountState>, Failure> {
        let Some(guid) = guid_bytes(anchor.as_str()) else { return Ok(None) };
        let filter = format!("(&(objectGUID={}){})", escape_bytes(&guid), self.person_filter);
        let attrs = [
            "userAccountControl",
            "msDS-User-Account-Control-Computed",
            "pwdLastSet",
            "msDS-ResultantPSO",
            "msDS-UserPasswordExpiryTimeComputed",
        ];
        let server = self.server().await?.clone();
        let mut found = self.pool.search_bases(&self.base_dns, &filter, &attrs, false).await?;
        if found.len() > 1 {
            return Err(Failure::Result { rc: 80, text: format!("objectGUID matches {} entries", found.len()) });
        }
        let Some(entry) = found.pop() else { return Ok(None) };
        // A state the service account cannot read is not reported as a good one.
        let (Some(uac), Some(computed)) =
            (number::<u32>(&entry, "userAccountControl"), number::<u32>(&entry, "msDS-User-Account-Control-Computed"))
        else {
            return Err(Failure::Result {
                rc: 50,
                text: "userAccountControl or msDS-User-Account-Control-Computed not readable".into(),
            });
        };
        let last_set = number::<i64>(&entry, "pwdLastSet");
        let must_change = last_set == Some(0);
        let policy = self.policy_for(&server, first(&entry, "msDS-ResultantPSO")).await;
        Ok(Some(crate::domain::AccountState {
            enabled: uac & UF_ACCOUNTDISABLE == 0,
            locked: computed & UF_LOCKOUT != 0,
            must_change,
            // AD also says "expired" for a password that must be changed; that is said already.
            expired: Some(computed & UF_PASSWORD_EXPIRED != 0 && !must_change),
            password_set_at: last_set.and_then(filetime_unix),
            policy,
            expires_at: password_expiry(&entry),
        }))
    }

    /// Why the account is protected, if it is: `adminCount=1`, a protected well-known account,
    /// or membership (nested too) of a protected group. Samba never sets `adminCount`, so the
    /// membership is what counts; it comes from `tokenGroups`, which follows nesting.
    pub(super) async fn protection(&self, entry: &SearchEntry) -> Result<Protection, Failure> {
        if first(entry, "adminCount") == Some("1") {
            return Ok(Protection::Protected("adminCount=1".into()));
        }
        let Some((domain_sid, own_rid)) = own_sid(entry) else {
            return Ok(Protection::Unknown(format!("{} has no readable objectSid", entry.dn)));
        };
        if PROTECTED_DOMAIN_RIDS.contains(&own_rid) {
            return Ok(Protection::Protected(format!("well-known account {domain_sid}-{own_rid}")));
        }
        let dn = entry.dn.as_str();
        let groups = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let (entries, _) =
                    c.op().search(dn, Scope::Base, "(objectClass=*)", vec!["tokenGroups"]).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?;
        let sids: Vec<String> = groups
            .map(|g| all_bytes(&g, "tokenGroups").iter().filter_map(|b| parse_sid(b)).collect())
            .unwrap_or_default();
        if sids.is_empty() {
            // Every account has at least "Domain Users" in its token: an empty one means we may
            // not read it, and then we cannot tell.
            return Ok(Protection::Unknown(format!("group membership unreadable for {dn}")));
        }
        for sid in sids {
            if is_protected_group(&sid, &domain_sid) {
                return Ok(Protection::Protected(format!("member of {sid}")));
            }
        }
        Ok(Protection::None)
    }

    pub(crate) async fn sync_users(
        &self,
        since: Option<&SyncMark>,
    ) -> Result<(Vec<SyncedUser>, Option<SyncMark>), Failure> {
        // The DC's update counter before the search: whatever changes while it runs is caught
        // next time. Counters are per DC, so a mark from another DC means a full sync.
        let (server, usn) = self.update_counter().await?;
        let filter = match since {
            Some(SyncMark::Usn { server: s, usn: from }) if *s == server => {
                format!("(&{}(uSNChanged>={}))", self.person_filter, from + 1)
            }
            _ => self.person_filter.clone(),
        };
        let entries = self.pool.search_bases(&self.base_dns, &filter, &USER_ATTRS, true).await?;
        // Members (nested too) of the protected groups, in one search: Samba never sets
        // adminCount, so membership is what tells.
        let protected_filter = format!("(&{filter}{})", self.protected_members_filter().await?);
        let protected: HashSet<String> = self
            .pool
            .search_bases(&self.base_dns, &protected_filter, &["objectGUID"], true)
            .await?
            .into_iter()
            .map(|e| e.dn.to_ascii_lowercase())
            .collect();
        let mut seen = HashSet::new();
        let mut users = Vec::new();
        for entry in entries {
            match synced_user(&entry) {
                Some(mut user) if seen.insert(user.anchor.clone()) => {
                    user.protected |= protected.contains(&user.dn.to_ascii_lowercase());
                    users.push(user);
                }
                Some(user) => {
                    tracing::warn!(anchor = %user.anchor, dn = %user.dn, "the same objectGUID twice in one sync; kept the first")
                }
                None => tracing::debug!(dn = %entry.dn, "skipping an entry without objectGUID or sAMAccountName"),
            }
        }
        Ok((users, Some(SyncMark::Usn { server, usn })))
    }

    /// `(|(adminCount=1)(memberOf:<in chain>:=<group>)…)` over the protected groups of this
    /// domain, found by their well-known SIDs (names and places of groups can change; SIDs not).
    pub(super) async fn protected_members_filter(&self) -> Result<String, Failure> {
        let groups = self
            .protected_groups
            .get_or_try_init(|| async {
                let server = self.server().await?.clone();
                let domain_dn = server.domain_dn.as_str();
                let domain = self
                    .pool
                    .run(Retry::Safe, |mut c: Conn| async move {
                        let (e, _) = c
                            .op()
                            .search(domain_dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
                            .await?
                            .success()?;
                        Ok::<_, LdapError>(e.into_iter().next().map(SearchEntry::construct))
                    })
                    .await?
                    .and_then(|e| bytes(&e, "objectSid"))
                    .ok_or_else(|| Failure::Internal("the domain's objectSid cannot be read".into()))?;
                let mut sids: Vec<Vec<u8>> =
                    PROTECTED_DOMAIN_RIDS.iter().map(|rid| sid_with_rid(&domain, *rid)).collect();
                let builtin = [1u8, 1, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0];
                sids.extend(PROTECTED_BUILTIN_RIDS.iter().map(|rid| sid_with_rid(&builtin, *rid)));
                let by_sid: String = sids.iter().map(|s| format!("(objectSid={})", escape_bytes(s))).collect();
                let filter = format!("(&(objectClass=group)(|{by_sid}))");
                let filter = filter.as_str();
                let found = self
                    .pool
                    .run(Retry::Safe, |mut c: Conn| async move {
                        let (e, _) = c.op().search(domain_dn, Scope::Subtree, filter, vec!["1.1"]).await?.success()?;
                        Ok::<_, LdapError>(
                            e.into_iter()
                                .filter(|e| !e.is_ref())
                                .map(|e| SearchEntry::construct(e).dn)
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await?;
                Ok::<_, Failure>(found)
            })
            .await?;
        let chain: String =
            groups.iter().map(|dn| format!("(memberOf:1.2.840.113556.1.4.1941:={})", ldap_escape_value(dn))).collect();
        Ok(format!("(|(adminCount=1){chain})"))
    }

    /// This DC's name and its `highestCommittedUSN`, read now (not cached).
    pub(super) async fn update_counter(&self) -> Result<(String, u64), Failure> {
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let attrs = vec!["dsServiceName", "highestCommittedUSN"];
                let (entries, _) = c.op().search("", Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?
            .ok_or_else(|| Failure::Internal("the rootDSE is empty".into()))?;
        let server = first(&entry, "dsServiceName").unwrap_or_default().to_string();
        let usn = number(&entry, "highestCommittedUSN")
            .ok_or_else(|| Failure::Internal("the rootDSE gives no highestCommittedUSN".into()))?;
        Ok((server, usn))
    }
}

/// What `agent doctor` needs to look at; nothing here writes.
impl Ad {
    pub(in crate::directory) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The filter that finds the person with this anchor (an `objectGUID`).
    pub(in crate::directory) fn anchor_filter(&self, anchor: &Anchor) -> Option<String> {
        guid_bytes(anchor.as_str()).map(|g| format!("(objectGUID={})", escape_bytes(&g)))
    }

    /// The configured base DNs and the filter the sync uses under them.
    pub(in crate::directory) fn scope(&self) -> (&[String], &str) {
        (&self.base_dns, &self.person_filter)
    }

    pub(in crate::directory) fn history_on_reset(&self) -> Option<HistoryOnReset> {
        self.history_on_reset
    }

    /// The policy-hints control this DC lists in its rootDSE, if any.
    pub(in crate::directory) async fn policy_hints_oid(&self) -> Result<Option<&'static str>, Failure> {
        Ok(self.server().await?.hints_oid)
    }

    /// How a reset of `dn` would judge it, by the very check a reset runs: `Ok(None)` when it is
    /// not protected, `Ok(Some(why))` when it is, `Err(why)` when that cannot be told (and every
    /// reset would then be refused as a set-up problem).
    pub(in crate::directory) async fn reset_protection(
        &self,
        dn: &str,
    ) -> Result<Result<Option<String>, String>, Failure> {
        let entry = self
            .pool
            .run(Retry::Safe, |mut c: Conn| async move {
                let attrs = vec!["adminCount", "objectSid"];
                let (entries, _) = c.op().search(dn, Scope::Base, "(objectClass=*)", attrs).await?.success()?;
                Ok::<_, LdapError>(entries.into_iter().next().map(SearchEntry::construct))
            })
            .await?
            .ok_or_else(|| Failure::Internal(format!("{dn} cannot be read")))?;
        Ok(match self.protection(&entry).await? {
            Protection::None => Ok(None),
            Protection::Protected(why) => Ok(Some(why)),
            Protection::Unknown(why) => Err(why),
        })
    }
}
