//! One gate at a time: a code sent (or an authenticator or the questions asked), the answer
//! checked in constant time, and every failure counted against the person and the address.

use super::*;

/// Starts a gate: e-mails a code, or picks the questions to ask. The same work whether or not
/// the offer leads anywhere (a made-up address gets a code that is stored nowhere).
pub(crate) async fn start(
    st: &AppState,
    client: std::net::IpAddr,
    target: Option<&Target>,
    offer: &Offer,
    support: &SupportCode,
) -> Result<(Current, &'static str), PortalError> {
    let opened_at = st.clock.now();
    let mut current = Current { offer: offer.clone(), code_id: None, questions: Vec::new(), failed: 0, opened_at };
    let raw = match offer.method {
        GateMethod::Email => {
            let (code_id, raw) = send_code(st, target, offer, support).await?;
            current.code_id = Some(code_id);
            raw
        }
        GateMethod::Authenticator => "authenticator code asked",
        GateMethod::RecoveryCode => "recovery code asked",
        GateMethod::Passkey => "passkey asked",
        GateMethod::Questions => {
            let Some(t) = target else { return Ok((current, "no such account")) };
            let registered: Vec<String> =
                security::answers(&st.db, t.person()).await?.into_iter().map(|(q, _)| q).collect();
            let ask = st.cfg.gates.questions_to_ask as usize;
            let now = st.clock.now();
            let (ids, again) = security::draw_questions(&st.db, t.person(), &registered, ask, now, |ids| {
                ids.shuffle(&mut rand::rngs::OsRng)
            })
            .await?;
            current.questions = ids;
            if again {
                // The same questions as before, and the asking counts as a failed answer: nobody
                // can draw (or open) the gate again and again for free.
                let subject = t.person().subject();
                if let Ok(reservation) = reserve_failure(st, &subject, client, GateMethod::Questions).await? {
                    settle_failure(st, &subject, reservation, false).await?;
                }
                "security questions asked again before an answer (counted as a failure)"
            } else {
                "security questions asked"
            }
        }
    };
    Ok((current, raw))
}

/// E-mails a new code to the offer's address (to nobody, for a made-up one, after the same
/// work): the code's id, and a note for the audit.
async fn send_code(
    st: &AppState,
    target: Option<&Target>,
    offer: &Offer,
    support: &SupportCode,
) -> Result<(String, &'static str), PortalError> {
    let now = st.clock.now();
    let code = OneTimeCode::generate(&mut rand::rngs::OsRng);
    let code_id = MsgId::random().to_string();
    let code_hash = st.code_key.hash(&[code_id.as_bytes(), code.expose().as_bytes()]);
    let address = offer.address.as_deref().and_then(|a| EmailAddress::parse(a).ok());
    let ttl = i64::try_from(st.cfg.reset.code_ttl_secs).unwrap_or(600);
    let new = store::codes::NewCode {
        id: &code_id,
        directory: target.map_or("", |t| t.directory.as_str()),
        anchor: target.map_or("", |t| t.anchor.as_str()),
        code_hash: &code_hash,
        now,
        expires_at: now + ttl,
    };
    let limit = if target.is_some() && address.is_some() { st.cfg.reset.codes_per_hour } else { 0 };
    let stored = store::codes::insert_within_limit(&st.db, &new, limit).await?;
    let raw = match (target, address) {
        (Some(_), Some(to)) if stored => {
            mail_code(st, to, code, support);
            "code sent"
        }
        (Some(_), Some(_)) => "code limit per hour reached",
        (Some(_), None) => "no e-mail address on record",
        (None, _) => "no such account: nothing sent",
    };
    Ok((code_id, raw))
}

/// Sends in the background, so the answer takes as long whether or not a message goes out.
fn mail_code(st: &AppState, to: EmailAddress, code: OneTimeCode, support: &SupportCode) {
    let mailer = st.mailer.clone();
    let support = support.clone();
    let minutes = st.cfg.reset.code_ttl_secs.div_ceil(60);
    let tr = Tr::current();
    tokio::spawn(async move {
        let sent = match crate::mail::code_message(tr, code.expose(), minutes) {
            Ok(msg) => mailer.send(&to, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::error!(support_code = %support, error = %format!("{e:#}"), "sending the verification code failed");
        }
    });
}

/// A gate's form as posted: a code, or up to five answers (`answer0`…).
#[derive(serde::Deserialize)]
pub struct GateForm {
    /// A code: an e-mailed one, an authenticator's, or a recovery code (which lasts: kept as a
    /// secret, like the answers).
    code: Option<SecretString>,
    answer0: Option<SecretString>,
    answer1: Option<SecretString>,
    answer2: Option<SecretString>,
    answer3: Option<SecretString>,
    answer4: Option<SecretString>,
    /// A passkey's answer (`PublicKeyCredential` as JSON): a signature over this session's
    /// challenge, no secret.
    credential: Option<String>,
}

impl GateForm {
    /// What was answered to `current`: the code, and as many answers as questions were asked.
    pub fn response(self, current: &Current) -> Response {
        let answers = [self.answer0, self.answer1, self.answer2, self.answer3, self.answer4]
            .into_iter()
            .flatten()
            .take(current.questions.len())
            .collect();
        Response { code: self.code, answers, credential: self.credential }
    }
}

/// What the person answered at a gate.
pub struct Response {
    /// The e-mailed, authenticator or recovery code.
    pub code: Option<SecretString>,
    /// Answers to the questions asked, in order.
    pub answers: Vec<SecretString>,
    /// A passkey's answer.
    pub credential: Option<String>,
}

impl Response {
    /// Nothing was answered (but for questions, whose empty answers are wrong answers).
    pub fn is_empty(&self, method: GateMethod) -> bool {
        let blank = |s: &str| s.trim().is_empty();
        match method {
            GateMethod::Questions => false,
            GateMethod::Passkey => self.credential.as_deref().is_none_or(blank),
            _ => self.code.as_ref().is_none_or(|c| blank(c.expose_secret())),
        }
    }
}

/// Whether the answer is right. Each check costs the same whether or not there is anything to
/// check against. Returns the verdict and a note for the audit.
async fn check_answer(
    st: &AppState,
    session: &tower_sessions::Session,
    client: std::net::IpAddr,
    target: Option<&Target>,
    current: &Current,
    response: &Response,
    now: i64,
) -> Result<(bool, &'static str), PortalError> {
    match current.offer.method {
        GateMethod::Email => {
            let Some(code) = response.code.as_ref().and_then(|c| OneTimeCode::parse(c.expose_secret()).ok()) else {
                return Ok((false, "not a code"));
            };
            let code_id = current.code_id.clone().unwrap_or_default();
            // Spends one attempt and reads the hash in one statement, so parallel guesses cannot
            // exceed the limit. Without a live code a hash is still computed.
            let owner = target.map_or(security::Person { directory: "", anchor: "" }, Target::person);
            let stored = store::codes::take_attempt(&st.db, &code_id, owner, now, st.cfg.reset.code_attempts).await?;
            let presented = [code_id.as_bytes(), code.expose().as_bytes()];
            let ok = match &stored {
                Some(hash) => {
                    st.code_key.matches(&presented, hash) && store::codes::mark_used(&st.db, &code_id, now).await?
                }
                None => {
                    let _ = st.code_key.matches(&presented, "");
                    false
                }
            };
            Ok((ok, if ok { "code accepted" } else { "wrong, used or expired code" }))
        }
        GateMethod::Authenticator => {
            let typed = response.code.as_ref().map_or("", |c| c.expose_secret());
            let Some(t) = target else { return Ok((false, "no such account")) };
            let Some(row) = security::totp(&st.db, t.person()).await?.filter(|r| r.confirmed) else {
                return Ok((false, "no authenticator registered"));
            };
            let seed = st.secrets.decrypt(&t.person().context("totp"), &row.secret_enc)?;
            match totp::matching_step(&seed, typed, now) {
                Some(step) if security::use_totp_step(&st.db, t.person(), step, now).await? => {
                    Ok((true, "authenticator code accepted"))
                }
                Some(_) => Ok((false, "authenticator code already used")),
                None => Ok((false, "wrong authenticator code")),
            }
        }
        GateMethod::RecoveryCode => {
            let Some(code) = response.code.as_ref().and_then(|c| recovery::normalise(c.expose_secret())) else {
                return Ok((false, "not a recovery code"));
            };
            // The same work whether or not the name is anybody's: a hash and one statement.
            // A made-up offer (shown before the person had codes) opens nothing, and spends none.
            let nobody = security::Person { directory: "", anchor: "" };
            let person = if current.offer.made_up { nobody } else { target.map_or(nobody, Target::person) };
            let hash = recovery::hash(&st.code_key, person, &code);
            if !security::use_recovery_code(&st.db, person, &hash, now).await? {
                return Ok((false, "wrong or used recovery code"));
            }
            if let Some(t) = target.filter(|_| !current.offer.made_up) {
                // Used up: every address on record hears of it, and of how many are left.
                let left = security::recovery_codes_left(&st.db, person).await?;
                let to = crate::usecase::account::addresses_on_record(st, t).await?;
                let left = u32::try_from(left).unwrap_or(0);
                crate::usecase::account::notify_all(st, to, now, crate::mail::Notice::RecoveryCodeUsed(left));
            }
            Ok((true, "recovery code accepted"))
        }
        GateMethod::Passkey => {
            // Any passkey held for this site may answer (none was listed, so the options told
            // nothing of whose they are); it must be this person's.
            let answer = response.credential.as_deref().unwrap_or_default();
            let kind = crate::store::passkeys::Kind::Person;
            match crate::portal::passkey::finish_assertion(st, session, kind, answer).await? {
                Ok(a) if target.is_some_and(|t| t.directory == a.directory && t.anchor == a.anchor) => {
                    Ok((true, "passkey accepted"))
                }
                Ok(_) => Ok((false, "passkey refused: someone else's")),
                Err(refusal) => {
                    let support = SupportCode::new();
                    crate::portal::passkey::tell_owner(st, client, &support, &refusal).await?;
                    Ok((false, refusal.why.why()))
                }
            }
        }
        GateMethod::Questions => {
            let stored = match target {
                Some(t) => security::answers(&st.db, t.person()).await?,
                None => Vec::new(),
            };
            let mut all_right = !current.questions.is_empty() && response.answers.len() == current.questions.len();
            for (i, q) in current.questions.iter().enumerate() {
                let typed = response.answers.get(i).map(|a| a.expose_secret().to_string()).unwrap_or_default();
                let normalised: SecretString = questions::normalise(&typed).unwrap_or_default().into();
                let hash = stored.iter().find(|(id, _)| id == q).map(|(_, h)| h.clone());
                // Every answer is checked, right or wrong, so the time says nothing.
                if !crate::usecase::password::verify(&normalised, hash).await {
                    all_right = false;
                }
            }
            if all_right {
                if let Some(t) = target {
                    security::questions_answered(&st.db, t.person(), now).await?;
                }
            }
            Ok((all_right, if all_right { "answers accepted" } else { "wrong answers" }))
        }
    }
}

/// How an answer at a gate went.
pub(crate) enum Answered {
    /// Not even looked at: the person is blocked (or just reached the limit).
    Blocked,
    /// Not even looked at: too many failures from this client address, whatever the accounts.
    TooManyFromHere,
    Right(&'static str),
    /// Wrong; `blocked_now` when this failure completed a block.
    Wrong {
        raw: &'static str,
        blocked_now: bool,
    },
}

/// Answers a gate for `subject`: one failure of the hourly allowance is taken first (race-free),
/// the answer checked, and the failure given back if it was right.
pub(crate) async fn answer(
    st: &AppState,
    session: &tower_sessions::Session,
    subject: &str,
    client: std::net::IpAddr,
    target: Option<&Target>,
    current: &Current,
    response: &Response,
) -> Result<Answered, PortalError> {
    let reservation = match reserve_failure(st, subject, client, current.offer.method).await? {
        Ok(r) => r,
        Err(security::Spent::Subject) => return Ok(Answered::Blocked),
        Err(security::Spent::Address | security::Spent::Busy) => return Ok(Answered::TooManyFromHere),
    };
    // Whether the answer is right, and a note for the audit. A made-up offer never verifies
    // anyone, whatever was registered since it was shown (the check is still made, so the
    // answer takes as long).
    let (right, raw) = check_answer(st, session, client, target, current, response, st.clock.now()).await?;
    let (right, raw) = if current.offer.made_up { (false, "a made-up offer verifies nobody") } else { (right, raw) };
    let blocked_now = settle_failure(st, subject, reservation, right).await?;
    if !right {
        // The portal-wide count is looked at with every failure too, not only every half minute.
        if let Err(e) = crate::portal::guard::check_failures(st).await {
            tracing::warn!(error = %format!("{e:#}"), "counting failed verifications failed");
        }
    }
    Ok(if right { Answered::Right(raw) } else { Answered::Wrong { raw, blocked_now } })
}

/// Takes one failed verification of `subject`'s and of `client`'s hourly allowances before an
/// answer is checked; which ran out when none is left (a person whose allowance ran out is, or
/// is now, blocked). Race-free: parallel guesses cannot each find the allowances unspent.
async fn reserve_failure(
    st: &AppState,
    subject: &str,
    client: std::net::IpAddr,
    method: GateMethod,
) -> Result<Result<i64, security::Spent>, PortalError> {
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    let limits = (g.failures_per_hour, st.cfg.anti_automation.failures_per_address_per_hour);
    let address = crate::portal::guard::address_key_text(client);
    let reserved = security::reserve_failure(&st.db, subject, &address, method.as_str(), now, limits).await?;
    match reserved {
        Err(security::Spent::Subject) => {
            let until = now + i64::from(g.block_hours) * 3600;
            security::block_if_reached(&st.db, subject, "failure", now, g.failures_per_hour, until).await?;
        }
        Err(security::Spent::Address) => {
            tracing::warn!(client = %address, "failed verifications from this address reached the hourly limit");
        }
        Err(security::Spent::Busy) => {
            tracing::info!(client = %address, "answers being checked from this address held its allowance; try again");
        }
        Ok(_) => {}
    }
    Ok(reserved)
}

/// Settles a reservation once the answer is known: given back when right; when wrong, it stays
/// and may complete a block (true when it has just blocked the person).
async fn settle_failure(st: &AppState, subject: &str, reservation: i64, right: bool) -> Result<bool, PortalError> {
    if right {
        security::release_event(&st.db, reservation).await?;
        return Ok(false);
    }
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    let until = now + i64::from(g.block_hours) * 3600;
    Ok(security::block_if_reached(&st.db, subject, "failure", now, g.failures_per_hour, until).await?)
}

/// Counts a completed reset or unlock; true when it has just blocked the person for more.
pub(crate) async fn count_reset(st: &AppState, subject: &str) -> Result<bool, PortalError> {
    let (now, until, limit) = reset_limit(st);
    let mut counted = store::Batch::new();
    counted.push(security::record_reset(subject, now));
    // The count reads the event just written, so it follows it; the last statement changes a
    // row when it made a block.
    counted.push(security::block_when_reached(subject, "reset", now, limit, until));
    Ok(counted.run_counting_last(&st.db).await? == 1)
}

/// [`count_reset`], added to `batch`'s group, whose read must follow together
/// ([`store::Batch::run_then_together`]): its count of changed rows is 1 when it made a block.
/// The count comes before the event in the group, and counts it too: on PostgreSQL the group is
/// one statement, a trip fewer than the event and the count apart.
pub(crate) fn push_reset_count(st: &AppState, subject: &str, batch: &mut store::Batch) {
    let (now, until, limit) = reset_limit(st);
    batch.push_together_counted(security::block_when_this_reaches(subject, "reset", now, limit, until));
    batch.push_together(security::record_reset(subject, now));
}

/// Now, the end of a block made now, and the resets an hour allows.
fn reset_limit(st: &AppState) -> (i64, i64, u32) {
    let (now, g) = (st.clock.now(), &st.cfg.gates);
    (now, now + i64::from(g.block_hours) * 3600, g.resets_per_hour)
}

pub(crate) async fn blocked(st: &AppState, subject: &str) -> Result<bool, PortalError> {
    Ok(security::blocked_until(&st.db, subject, st.clock.now()).await?.is_some())
}
