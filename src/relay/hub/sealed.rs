//! Sealing and opening what crosses the relay, with each agent's keys: requests sealed for the
//! agent, reports and results opened and checked (kind, age, replay), and why a frame is refused.

use super::*;

impl Hub {
    /// Forgets cached keys after a rollover, so the next request seals with the newest.
    pub fn forget_keys(&self, agent_id: &str) {
        let mut inner = self.lock();
        inner.keys.remove(agent_id);
        inner.content_keys.retain(|(agent, _), _| agent != agent_id);
    }

    /// An agent's keys, newest first: from the cache, or read and parsed once from the database.
    pub async fn keys(&self, agent_id: &str) -> anyhow::Result<Arc<Vec<KeyVersion>>> {
        if let Some(k) = self.lock().keys.get(agent_id) {
            return Ok(k.clone());
        }
        let rows = store::agents::keys(&self.db, agent_id).await?;
        let mut parsed = Vec::with_capacity(rows.len());
        for row in rows {
            let ctx = store::agents::key_context(&row.agent_id, row.version);
            let raw = self.data_key.decrypt(&ctx, &row.package_key_enc)?;
            let package =
                PackageKey::from_slice(&raw).ok_or_else(|| anyhow::anyhow!("stored package key has the wrong size"))?;
            let public = RsaPublicKey::from_public_key_pem(&row.public_key_pem)?;
            parsed.push(KeyVersion {
                version: u32::try_from(row.version)?,
                public,
                package,
                created_at: row.created_at,
            });
        }
        anyhow::ensure!(!parsed.is_empty(), "agent {agent_id} has no keys");
        let parsed = Arc::new(parsed);
        self.lock().keys.insert(agent_id.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Seals with the key version the agent reports using, while the portal still accepts it;
    /// otherwise with the newest. An agent that missed a rollover answer keeps working.
    pub(super) async fn seal_request(
        &self,
        agent_id: &str,
        agent_key_version: u32,
        req: &WritebackRequest<'_>,
        now: i64,
    ) -> anyhow::Result<SealedFrame> {
        let keys = self.keys(agent_id).await?;
        let grace = self.grace_secs();
        let newest = keys
            .iter()
            .find(|k| k.version == agent_key_version && accepted_key(&keys, k.version, now, grace).is_some())
            .or(keys.first())
            .ok_or_else(|| anyhow::anyhow!("no key"))?;
        let mut rng = rand::rngs::OsRng;
        let secrets = match req.password {
            Some(new) => Some(envelope::seal_secrets(
                &self.content_key(agent_id, newest)?,
                &req.msg_id,
                new.expose_secret(),
                req.old_password.map(|o| o.expose_secret()),
                &mut rng,
            )?),
            None => None,
        };
        let pkg = RequestPackage {
            msg_id: req.msg_id.clone(),
            op: req.op,
            directory: req.directory.clone(),
            anchor: req.anchor.clone(),
            secrets,
            flags: req.flags,
            actor: req.actor.clone(),
            issued_at: now,
            expires_at: now + i64::try_from(self.cfg.request_ttl_secs)?,
            wait_secs: u32::try_from(self.cfg.result_deadline_secs).unwrap_or(u32::MAX),
        };
        Ok(envelope::seal(
            agent_id,
            newest.version,
            &newest.package,
            Direction::ToAgent,
            FrameKind::Request,
            &req.msg_id,
            &pkg,
            &mut rng,
        )?)
    }

    /// The content key of the current epoch for this agent and key version (a new one after
    /// [`CONTENT_KEY_EPOCH`], or when the agent's keys changed).
    fn content_key(&self, agent_id: &str, key: &KeyVersion) -> anyhow::Result<envelope::ContentKey> {
        let slot = (agent_id.to_string(), key.version);
        if let Some((content, made)) = self.lock().content_keys.get(&slot) {
            if made.elapsed() < CONTENT_KEY_EPOCH {
                return Ok(content.clone());
            }
        }
        let content = envelope::ContentKey::new(&key.public, &mut rand::rngs::OsRng)?;
        let mut inner = self.lock();
        inner.content_keys.retain(|_, (_, made)| made.elapsed() < CONTENT_KEY_EPOCH);
        inner.content_keys.insert(slot, (content.clone(), Instant::now()));
        Ok(content)
    }

    /// The package key of each version still accepted from `agent_id`, now.
    async fn key_for(&self, agent_id: &str) -> Result<impl Fn(u32) -> Option<PackageKey>, Refusal> {
        let keys = self.keys(agent_id).await.map_err(|e| {
            tracing::warn!(agent = %agent_id, error = %e, "a frame from an agent without keys");
            Refusal::NoKeys
        })?;
        let (now, grace) = (self.clock.now(), self.grace_secs());
        Ok(move |v: u32| accepted_key(&keys, v, now, grace))
    }

    /// Opens what an agent reports (hello, heartbeat, sync): authentic, of its kind, fresh, and
    /// never seen before on any instance (its frame id is recorded until it would be stale).
    pub async fn open_report<T: serde::de::DeserializeOwned>(
        &self,
        agent_id: &str,
        frame: &SealedFrame,
    ) -> Result<T, Refusal> {
        let now = self.clock.now();
        let opened = envelope::open_report(agent_id, frame, now, REPORT_SKEW_SECS, self.key_for(agent_id).await?);
        let report: envelope::Report<T> = match opened {
            // Keys rotated through another instance, whose word has not reached this one yet.
            Err(envelope::EnvelopeError::UnknownKey(_)) => {
                self.forget_keys(agent_id);
                envelope::open_report(agent_id, frame, now, REPORT_SKEW_SECS, self.key_for(agent_id).await?)
            }
            opened => opened,
        }
        .map_err(Refusal::from)?;
        let keep_until = report.issued_at + 2 * REPORT_SKEW_SECS;
        match store::agents::note_frame(&self.db, agent_id, frame.msg_id.as_str(), keep_until).await {
            Ok(true) => Ok(report.body),
            Ok(false) => Err(Refusal::Replayed),
            Err(e) => {
                tracing::error!(agent = %agent_id, error = %e, "recording a frame id failed");
                Err(Refusal::Store)
            }
        }
    }

    /// A sealed result from `agent_id`: authenticated with that agent's keys, then handed to the
    /// request waiting for it. A writeback takes one answer only: a copy, or a second answer for
    /// the same message, is refused and changes nothing.
    pub async fn deliver_result(&self, agent_id: &str, frame: &SealedFrame) -> Result<(), Refusal> {
        // A request another instance sent through this one: the answer is that instance's to open.
        if self.return_forwarded(agent_id, frame) {
            return Ok(());
        }
        let pkg = match envelope::open_result(agent_id, frame, self.key_for(agent_id).await?) {
            // Keys rotated through another instance, whose word has not reached this one yet.
            Err(envelope::EnvelopeError::UnknownKey(_)) => {
                self.forget_keys(agent_id);
                envelope::open_result(agent_id, frame, self.key_for(agent_id).await?)
            }
            opened => opened,
        }
        .map_err(Refusal::from)?;
        let waiting = {
            let mut inner = self.lock();
            match inner.pending.get(&pkg.msg_id) {
                Some(p) if p.agent_id == agent_id => inner.pending.remove(&pkg.msg_id),
                Some(_) => return Err(Refusal::WrongAgent),
                None => None,
            }
        };
        let now = self.clock.now();
        match waiting {
            Some(p) => {
                // The waiter records the answer with its outcome; until it has, a copy is refused
                // here (`answered`), and after, by the database. Requests outside `writebacks`
                // (no-ops, reads) have no row: their one answer is the waiter's.
                if !p.has_row {
                    let _ = p.tx.send(pkg);
                    return Ok(());
                }
                self.answered.put(pkg.msg_id.clone(), (), self.remembered_until(now), now);
                if let Err(pkg) = p.tx.send(pkg) {
                    // The wait ended meanwhile (the deadline): the answer is kept as a late one.
                    tracing::warn!(msg_id = %pkg.msg_id, outcome = %pkg.outcome.code(), "result arrived as its wait ended");
                    if let Err(e) =
                        store::writebacks::note_late_outcome(&self.db, pkg.msg_id.as_str(), &pkg.outcome, now).await
                    {
                        tracing::error!(msg_id = %pkg.msg_id, error = %e, "keeping a late answer failed");
                    }
                }
                Ok(())
            }
            None => {
                // Between two attempts of a request still waited on: its waiter takes it.
                let pkg = {
                    let mut inner = self.lock();
                    match inner.waiting.get(&pkg.msg_id) {
                        Some(agent) if agent == agent_id => {
                            // Its first answer only: a copy is refused like one for a waiter.
                            if inner.early.contains_key(&pkg.msg_id) {
                                return Err(Refusal::Answered);
                            }
                            // Until the waiter has recorded it, a copy is refused here too.
                            self.answered.put(pkg.msg_id.clone(), (), self.remembered_until(now), now);
                            inner.early.insert(pkg.msg_id.clone(), (agent_id.to_string(), pkg));
                            return Ok(());
                        }
                        Some(_) => return Err(Refusal::WrongAgent),
                        None => pkg,
                    }
                };
                self.record_late_result(agent_id, &pkg, now).await
            }
        }
    }

    /// A result that came after the person was told "not confirmed": the directory's real answer
    /// is still recorded, against the support code the person was shown, so nothing is lost.
    /// Only the first answer of the agent the request went to counts.
    async fn record_late_result(&self, agent_id: &str, pkg: &envelope::ResultPackage, now: i64) -> Result<(), Refusal> {
        if self.answered.get(&pkg.msg_id, now).is_some() {
            return Err(Refusal::Answered);
        }
        let row = store::writebacks::take_late_result(&self.db, pkg.msg_id.as_str(), agent_id, &pkg.outcome, now)
            .await
            .map_err(|e| {
                tracing::error!(agent = %agent_id, msg_id = %pkg.msg_id, error = %e, "storing a late result failed");
                Refusal::Store
            })?;
        let Some(row) = row else { return Err(Refusal::Answered) };
        let rec = store::audit::AuditRecord {
            at: now,
            actor: format!("agent:{agent_id}"),
            operation: format!("{}.late_result", row.op),
            directory: Some(row.directory),
            anchor: Some(row.anchor),
            target: None,
            outcome_code: pkg.outcome.code().0.into(),
            raw: format!("after {} was shown: {}", row.outcome_code.unwrap_or_default(), pkg.raw),
            support_code: row.support_code,
            client: None,
        };
        tracing::warn!(agent = %agent_id, msg_id = %pkg.msg_id, outcome = %rec.outcome_code, support_code = %rec.support_code, "result arrived after the deadline; recorded");
        if let Err(e) = store::audit::record(&self.db, &rec).await {
            tracing::error!(agent = %agent_id, msg_id = %pkg.msg_id, error = %e, "auditing a late result failed");
        }
        Ok(())
    }
}

/// How far an agent's report may be sealed from the portal's clock (the doctor warns beyond a
/// minute). Frame ids are kept twice as long, so no copy outlives its record.
pub const REPORT_SKEW_SECS: i64 = 300;

/// Why a frame from an agent was refused; counted in `/metrics` under [`Refusal::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not sealed")]
    Unsealed,
    #[error("malformed frame")]
    Malformed,
    #[error("unsupported protocol version")]
    Version,
    #[error("a kind of frame an agent may not send")]
    Kind,
    #[error("failed authentication")]
    Tampered,
    #[error("sealed with a key version the portal does not accept")]
    UnknownKey,
    #[error("sealed too long ago, or the clocks differ by more than five minutes")]
    Stale,
    #[error("a copy of a frame already taken")]
    Replayed,
    #[error("a result for a writeback that already has its answer")]
    Answered,
    #[error("a result from an agent the request was not sent to")]
    WrongAgent,
    #[error("for a directory the agent was not enrolled for")]
    NotEnrolled,
    #[error("the agent has no keys")]
    NoKeys,
    #[error("the database could not record it")]
    Store,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unsealed => "unsealed",
            Refusal::Malformed => "malformed",
            Refusal::Version => "version",
            Refusal::Kind => "kind",
            Refusal::Tampered => "tampered",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::Answered => "answered",
            Refusal::WrongAgent => "wrong_agent",
            Refusal::NotEnrolled => "not_enrolled",
            Refusal::NoKeys => "no_keys",
            Refusal::Store => "store",
        }
    }
}

impl From<envelope::EnvelopeError> for Refusal {
    fn from(e: envelope::EnvelopeError) -> Self {
        use envelope::EnvelopeError as E;
        match e {
            E::Version(_) => Refusal::Version,
            E::WrongKind => Refusal::Kind,
            E::UnknownKey(_) => Refusal::UnknownKey,
            E::Tampered | E::Rsa => Refusal::Tampered,
            E::Expired => Refusal::Stale,
            E::Malformed => Refusal::Malformed,
        }
    }
}

impl From<crate::relay::protocol::FrameError> for Refusal {
    fn from(e: crate::relay::protocol::FrameError) -> Self {
        use crate::relay::protocol::FrameError as E;
        match e {
            E::Version => Refusal::Version,
            E::Binary => Refusal::Malformed,
            E::Unsealed => Refusal::Unsealed,
        }
    }
}

/// The package key of version `v`, if still accepted: the newest always, an older one only until
/// `grace` seconds after the version that replaced it was made.
pub fn accepted_key(keys: &[KeyVersion], v: u32, now: i64, grace: i64) -> Option<PackageKey> {
    let i = keys.iter().position(|k| k.version == v)?;
    let still_valid = i == 0 || keys.get(i - 1).is_some_and(|newer| now - newer.created_at <= grace);
    still_valid.then(|| keys[i].package.clone())
}
