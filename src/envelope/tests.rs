//! Tests of [`super`].

use super::*;
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use std::sync::OnceLock;

fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, RSA_BITS).unwrap())
}

fn request(msg: &MsgId, secrets: Option<SealedSecrets>, expires_at: i64) -> RequestPackage {
    RequestPackage {
        msg_id: msg.clone(),
        op: if secrets.is_some() { Op::Change } else { Op::Unlock },
        directory: DirectoryId::parse("corp").unwrap(),
        anchor: Anchor::parse("5d2b4a4e-8f0b-103f-9a55-7b4f0f3c2a11").unwrap(),
        secrets,
        flags: Flags::default(),
        actor: "self-service".into(),
        issued_at: 1_800_000_000,
        expires_at,
        wait_secs: 30,
    }
}

fn sealed(agent: &str, key: &PackageKey, msg: &MsgId, expires_at: i64) -> SealedFrame {
    let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
    let secrets = seal_secrets(&content, msg, "N3w-Passw0rd!", Some("0ld-Passw0rd!"), &mut OsRng).unwrap();
    let pkg = request(msg, Some(secrets), expires_at);
    seal(agent, 1, key, Direction::ToAgent, FrameKind::Request, msg, &pkg, &mut OsRng).unwrap()
}

/// A new key, and a request sealed with it for `agent-1` under a new message id, valid until 2000.
fn request_to_agent_1() -> (PackageKey, MsgId, SealedFrame) {
    let key = PackageKey::generate(&mut OsRng);
    let msg = MsgId::random();
    let frame = sealed("agent-1", &key, &msg, 2_000);
    (key, msg, frame)
}

#[test]
fn a_sealed_request_opens_to_the_same_passwords() {
    let (key, msg, frame) = request_to_agent_1();
    let pkg = open_request("agent-1", &frame, 1_500, |v| (v == 1).then(|| key.clone())).unwrap();
    let sealed = pkg.secrets.as_ref().unwrap();
    let content = unwrap_key(rsa_key(), &sealed.key).unwrap();
    let (new, old) = open_secrets(&content, &msg, sealed).unwrap();
    assert_eq!(new.expose_secret(), "N3w-Passw0rd!");
    assert_eq!(old.unwrap().expose_secret(), "0ld-Passw0rd!");
    let wire = frame.to_bytes();
    assert!(!String::from_utf8_lossy(&wire).contains("Passw0rd"));
    assert_eq!(SealedFrame::from_bytes(&wire).unwrap(), frame, "the binary form round-trips");
}

#[test]
fn every_frame_is_under_a_kilobyte() {
    let key = PackageKey::generate(&mut OsRng);
    let msg = MsgId::random();
    // A change carries the most: two passwords (24 characters each, longer than most).
    let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
    let secrets = seal_secrets(&content, &msg, &"N".repeat(24), Some(&"O".repeat(24)), &mut OsRng).unwrap();
    let change = seal(
        "agent-1",
        1,
        &key,
        Direction::ToAgent,
        FrameKind::Request,
        &msg,
        &request(&msg, Some(secrets), 2_000),
        &mut OsRng,
    )
    .unwrap();
    let unlock =
        seal("agent-1", 1, &key, Direction::ToAgent, FrameKind::Request, &msg, &request(&msg, None, 2_000), &mut OsRng)
            .unwrap();
    let answer = ResultPackage {
        msg_id: msg.clone(),
        outcome: Outcome::InHistory { history: Some(24) },
        raw: "agent=0123456789abcdef0123456789abcdef rc=19 text=\"Password is in history of old passwords\" ppolicy=8"
            .into(),
        policy: Some(PolicyFacts::typical()),
    };
    let result = seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Result, &msg, &answer, &mut OsRng).unwrap();
    for (what, frame) in [("change", change), ("unlock", unlock), ("result", result)] {
        let n = frame.to_bytes().len();
        assert!(n < 1024, "a {what} frame is {n} bytes");
    }
}

#[test]
fn secrets_sealed_for_one_message_do_not_open_for_another() {
    let msg = MsgId::random();
    let content = ContentKey::new(&rsa_key().to_public_key(), &mut OsRng).unwrap();
    let sealed = seal_secrets(&content, &msg, "N3w-Passw0rd!", None, &mut OsRng).unwrap();
    let key = unwrap_key(rsa_key(), &sealed.key).unwrap();
    assert_eq!(open_secrets(&key, &MsgId::random(), &sealed).unwrap_err(), EnvelopeError::Tampered);
    let (new, old) = open_secrets(&key, &msg, &sealed).unwrap();
    assert_eq!((new.expose_secret(), old.is_none()), ("N3w-Passw0rd!", true));
}

#[test]
fn malformed_binary_frames_are_refused_before_anything_else() {
    let key = PackageKey::generate(&mut OsRng);
    let frame = sealed("agent-1", &key, &MsgId::random(), 2_000);
    let bytes = frame.to_bytes();
    for cut in [0, 1, 5, 7, 20, 40] {
        assert!(SealedFrame::from_bytes(&bytes[..cut]).is_none(), "cut at {cut}");
    }
    let mut bad_kind = bytes.clone();
    bad_kind[1] = 9;
    assert!(SealedFrame::from_bytes(&bad_kind).is_none());
}

/// Why opening `frame` as `agent` at `now` under `key` is refused.
fn refusal(agent: &str, frame: &SealedFrame, now: i64, key: &PackageKey) -> EnvelopeError {
    open_request(agent, frame, now, |_| Some(key.clone())).unwrap_err()
}

#[test]
fn a_tampered_frame_is_refused() {
    let (key, _, mut frame) = request_to_agent_1();
    frame.ciphertext[10] ^= 1;
    assert_eq!(refusal("agent-1", &frame, 1_500, &key), EnvelopeError::Tampered);
}

#[test]
fn a_frame_for_another_agent_or_message_is_refused() {
    let (key, _, frame) = request_to_agent_1();
    assert_eq!(refusal("agent-2", &frame, 1_500, &key), EnvelopeError::Tampered);
    let mut moved = frame.clone();
    moved.msg_id = MsgId::random();
    assert_eq!(refusal("agent-1", &moved, 1_500, &key), EnvelopeError::Tampered);
}

#[test]
fn an_expired_frame_is_refused() {
    let (key, _, frame) = request_to_agent_1();
    assert_eq!(refusal("agent-1", &frame, 2_000, &key), EnvelopeError::Expired);
}

#[test]
fn a_frame_under_the_wrong_key_or_version_is_refused() {
    let key = PackageKey::generate(&mut OsRng);
    let other = PackageKey::generate(&mut OsRng);
    let msg = MsgId::random();
    let frame = sealed("agent-1", &key, &msg, 2_000);
    assert_eq!(open_request("agent-1", &frame, 1_500, |_| Some(other.clone())).unwrap_err(), EnvelopeError::Tampered);
    assert_eq!(open_request("agent-1", &frame, 1_500, |_| None).unwrap_err(), EnvelopeError::UnknownKey(1));
    let mut relabelled = frame.clone();
    relabelled.key_version = 2;
    assert_eq!(
        open_request("agent-1", &relabelled, 1_500, |_| Some(key.clone())).unwrap_err(),
        EnvelopeError::Tampered
    );
}

#[test]
fn a_frame_sent_back_the_other_way_is_refused() {
    let key = PackageKey::generate(&mut OsRng);
    let msg = MsgId::random();
    let result = ResultPackage { msg_id: msg.clone(), outcome: Outcome::Success, raw: "0".into(), policy: None };
    let frame = seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Result, &msg, &result, &mut OsRng).unwrap();
    assert_eq!(open_result("agent-1", &frame, |_| Some(key.clone())).unwrap(), result);
    let mut as_request = frame.clone();
    as_request.kind = FrameKind::Request;
    assert_eq!(open_request("agent-1", &as_request, 0, |_| Some(key.clone())).unwrap_err(), EnvelopeError::Tampered);
}

#[test]
fn an_unknown_protocol_version_is_refused() {
    let (key, _, mut frame) = request_to_agent_1();
    frame.v = 1;
    assert_eq!(open_request("agent-1", &frame, 1_500, |_| Some(key.clone())).unwrap_err(), EnvelopeError::Version(1));
}

#[test]
fn a_report_opens_only_as_its_own_kind_and_while_fresh() {
    let key = PackageKey::generate(&mut OsRng);
    let id = MsgId::random();
    let report = Report { issued_at: 1_000, body: "status".to_string() };
    let frame = seal("agent-1", 1, &key, Direction::ToPortal, FrameKind::Heartbeat, &id, &report, &mut OsRng).unwrap();
    let opened: Report<String> = open_report("agent-1", &frame, 1_100, 300, |_| Some(key.clone())).unwrap();
    assert_eq!(opened, report);
    let mut as_sync = frame.clone();
    as_sync.kind = FrameKind::Sync;
    assert_eq!(
        open_report::<String>("agent-1", &as_sync, 1_100, 300, |_| Some(key.clone())).unwrap_err(),
        EnvelopeError::Tampered,
        "the kind is bound by the AAD"
    );
    assert_eq!(
        open_report::<String>("agent-1", &frame, 1_301, 300, |_| Some(key.clone())).unwrap_err(),
        EnvelopeError::Expired
    );
    let mut as_result = frame;
    as_result.kind = FrameKind::Result;
    assert_eq!(
        open_report::<String>("agent-1", &as_result, 1_100, 300, |_| Some(key.clone())).unwrap_err(),
        EnvelopeError::WrongKind
    );
}
