//! Tests of [`super`].

use super::*;

fn pool(url: &str, starttls: bool) -> anyhow::Result<Pool> {
    crate::tls::install_crypto_provider();
    let tls = crate::tls::client_config(None)?;
    Pool::new(url, starttls, tls, "cn=svc", SecretString::from("pw".to_string()), 2, Duration::from_secs(1))
}

#[test]
fn a_wrong_service_password_is_never_tried_again_and_other_refusals_back_off_to_fifteen_minutes() {
    let t0 = std::time::Instant::now();
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let ad = |code: &str| {
        format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1")
    };

    let wrong = Refusal::after(None, a, &ad("52e"), false, t0);
    assert!(wrong.allows(&a, t0 + Duration::from_secs(86_400)).is_err(), "never again with that password");
    assert!(wrong.allows(&b, t0).is_ok(), "a new password in the file is tried at once");
    let openldap_wrong = Refusal::after(None, a, "", false, t0);
    assert!(openldap_wrong.retry.is_none());

    // Locked (AD 775, or ppolicy's accountLocked): an administrator unlocks it in the
    // directory, so the same password is tried again, ever more rarely.
    let mut r = Refusal::after(None, a, &ad("775"), false, t0);
    let mut waits = Vec::new();
    for _ in 0..6 {
        let (at, wait) = r.retry.unwrap();
        assert!(r.allows(&a, at - Duration::from_secs(1)).is_err() && r.allows(&a, at).is_ok());
        waits.push(wait.as_secs());
        r = Refusal::after(Some(r), a, &ad("775"), false, at);
    }
    assert_eq!(waits, [60, 120, 240, 480, 900, 900]);
    assert!(Refusal::after(None, a, "", true, t0).retry.is_some(), "ppolicy's lock");
}

#[test]
fn a_plain_ldap_url_is_refused_before_any_connection() {
    let err = pool("ldap://127.0.0.1:389", false).err().unwrap();
    assert!(err.to_string().contains("unencrypted"), "{err}");
    assert!(pool("ldapi:///run/slapd.sock", false).is_err());
    assert!(pool("ldaps://127.0.0.1:636", true).is_err());
}

#[test]
fn ldaps_and_starttls_are_accepted() {
    assert!(pool("ldaps://127.0.0.1:636", false).is_ok());
    assert!(pool("ldap://127.0.0.1:389", true).is_ok());
}

#[tokio::test]
async fn a_directory_that_is_not_there_is_unreachable_not_an_error_of_ours() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = pool(&format!("ldaps://127.0.0.1:{port}"), false).unwrap();

    let result = pool.run(Retry::Safe, |mut c| async move { c.op().extended(ldap3::exop::WhoAmI).await }).await;

    assert!(matches!(result, Err(Failure::Unreachable(_))), "{result:?}");
}
