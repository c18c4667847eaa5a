//! A staff member's own passkeys: registered (with a current authenticator code, so a session
//! left open is not enough to add one), listed, removed; and used at sign-in in place of the
//! authenticator code.

use super::pages::StaffPasskeysPage;
use super::{AnyRole, Staff, StaffAs};
use crate::domain::Outcome;
use crate::i18n::Tr;
use crate::portal::extract::{Only, Posted};
use crate::portal::gates::totp;
use crate::portal::pages::PasskeyView;
use crate::portal::{csrf, passkey, paths, AppState, PortalError, SupportCode};
use crate::store::{self, audit::AuditRecord, passkeys};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tower_sessions::Session;

type PageResult = Result<Response, PortalError>;

pub(crate) fn owner(id: &str) -> passkeys::Owner<'_> {
    passkeys::Owner { kind: passkeys::Kind::Staff, directory: "", anchor: id }
}

async fn page(
    st: &AppState,
    session: &Session,
    staff: &Staff,
    notice: Option<String>,
    error: Option<String>,
) -> PageResult {
    let tr = Tr::current();
    let rows = passkeys::of(&st.db, owner(&staff.row.id)).await?;
    let offset = crate::portal::pages::time_zone(session, None).await?;
    let options =
        passkey::begin_registration(st, session, owner(&staff.row.id), &staff.row.username, &staff.row.display_name)
            .await?;
    let page = StaffPasskeysPage {
        tr,
        csrf: csrf::token(session).await?,
        staff: staff.row.display_name.clone(),
        role: staff.role,
        passkeys: rows
            .into_iter()
            .map(|p| PasskeyView {
                id: p.id,
                name: p.name,
                created: tr.datetime(p.created_at, offset),
                last_used: p.last_used_at.map(|at| tr.datetime(at, offset)),
            })
            .collect(),
        options,
        notice,
        error,
    };
    Ok(page.into_response())
}

pub async fn passkeys_page(Only { who: StaffAs(staff, _), session, st }: Only<StaffAs<AnyRole>>) -> PageResult {
    page(&st, &session, &staff, None, None).await
}

fn audit(st: &AppState, staff: &Staff, client: std::net::SocketAddr, outcome: &Outcome, raw: &str) -> AuditRecord {
    AuditRecord {
        at: st.clock.now(),
        actor: staff.actor(),
        operation: "staff.passkey".into(),
        target: Some(staff.actor()),
        outcome_code: outcome.code().0.into(),
        raw: raw.into(),
        support_code: SupportCode::new().0,
        client: Some(client.ip().to_string()),
        ..Default::default()
    }
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    credential: String,
    code: SecretString,
}

/// Keeps the passkey the browser made, once a current authenticator code and the passkey's
/// answer to this session's challenge both check out.
pub async fn add_passkey(
    Posted { form: f, session, who: StaffAs(staff, _), st, client, .. }: Posted<AddForm, StaffAs<AnyRole>>,
) -> PageResult {
    let tr = Tr::current();
    if !st.address_allowed(client.ip()).await? {
        return Ok(crate::portal::error::too_many());
    }
    // Wrong codes count as wrong sign-ins of this account do (race-free, the same allowance): a
    // session someone else got hold of cannot guess its way to a passkey of its own.
    let now = st.clock.now();
    let subject = super::signin::signin_subject(&st, &staff.row.username);
    let Some(reservation) = store::attempts::reserve(&st.db, &subject, now, super::signin::ACCOUNT_LIMITS).await?
    else {
        let raw = "passkey not added: too many wrong codes for this account";
        store::audit::record(&st.db, &audit(&st, &staff, client, &Outcome::VerificationFailed, raw)).await?;
        return page(&st, &session, &staff, None, Some(tr.t("staff.signin_limit").into())).await;
    };
    let seed = st.secrets.decrypt(&store::staff::totp_context(&staff.row.id), &staff.row.totp_enc)?;
    let code_right = match totp::matching_step(&seed, f.code.expose_secret(), now) {
        Some(step) => store::staff::use_totp_step(&st.db, &staff.row.id, step).await?,
        None => false,
    };
    if code_right {
        store::attempts::release(reservation).run(&st.db).await?;
    } else {
        let raw = "passkey not added: authenticator code wrong or reused";
        store::audit::record(&st.db, &audit(&st, &staff, client, &Outcome::VerificationFailed, raw)).await?;
        return page(&st, &session, &staff, None, Some(tr.t("staff.code_wrong").into())).await;
    }
    let name = crate::portal::account::passkey_name(&f.name);
    match passkey::finish_registration(&st, &session, owner(&staff.row.id), &f.credential, &name).await? {
        Ok(()) => {
            store::audit::record(&st.db, &audit(&st, &staff, client, &Outcome::Success, "passkey added")).await?;
            page(&st, &session, &staff, Some(tr.t("account.passkey_added").into()), None).await
        }
        Err(refused) => {
            let record = audit(&st, &staff, client, &Outcome::VerificationFailed, refused.why());
            store::audit::record(&st.db, &record).await?;
            page(&st, &session, &staff, None, Some(tr.t("passkey.not_registered").into())).await
        }
    }
}

#[derive(Deserialize)]
pub struct RemoveForm {
    id: String,
}

pub async fn remove_passkey(
    Posted { form: f, session, who: StaffAs(staff, _), st, client, .. }: Posted<RemoveForm, StaffAs<AnyRole>>,
) -> PageResult {
    if !passkeys::remove(&st.db, owner(&staff.row.id), &f.id).await? {
        return Ok(Redirect::to(paths::STAFF_PASSKEYS).into_response());
    }
    store::audit::record(&st.db, &audit(&st, &staff, client, &Outcome::Success, "passkey removed")).await?;
    page(&st, &session, &staff, Some(Tr::current().t("account.passkey_removed").into()), None).await
}
