//! Opening sealed packages: arbitrary frames (which must fail authentication without a panic),
//! and arbitrary plaintexts sealed with the right key (which reach every package's decoding).
#![no_main]
use libfuzzer_sys::fuzz_target;
use passback::domain::MsgId;
use passback::envelope::{self, Direction, FrameKind, PackageKey, SealedFrame};

const AGENT: &str = "fuzz-agent";

fn key() -> PackageKey {
    PackageKey::from_slice(&[7u8; 32]).expect("32 bytes")
}

/// Seals the JSON in `plain` (or, when it is none, the bytes) as `envelope::seal` seals a package.
fn sealed(kind: FrameKind, direction: Direction, plain: &[u8]) -> SealedFrame {
    let id = MsgId::parse("fuzzmsg").expect("an id");
    let value = serde_json::from_slice::<serde_json::Value>(plain).unwrap_or_else(|_| plain.into());
    envelope::seal(AGENT, 1, &key(), direction, kind, &id, &value, &mut rand::rngs::OsRng).expect("sealing works")
}

fuzz_target!(|data: &[u8]| {
    let key_for = |_: u32| Some(key());
    if let Some(frame) = SealedFrame::from_bytes(data) {
        let _ = envelope::open_request(AGENT, &frame, 0, key_for);
        let _ = envelope::open_result(AGENT, &frame, key_for);
        let _ = envelope::open_report::<serde_json::Value>(AGENT, &frame, 0, 300, key_for);
    }
    let Some((&selector, plain)) = data.split_first() else { return };
    match selector % 4 {
        0 => {
            let _ = envelope::open_request(AGENT, &sealed(FrameKind::Request, Direction::ToAgent, plain), 0, key_for);
        }
        1 => {
            let _ = envelope::open_result(AGENT, &sealed(FrameKind::Result, Direction::ToPortal, plain), key_for);
        }
        2 => {
            let frame = sealed(FrameKind::Sync, Direction::ToPortal, plain);
            let _ = envelope::open_report::<passback::relay::protocol::SyncChunk>(AGENT, &frame, 0, 300, key_for);
        }
        _ => {
            // The passwords' own layer: arbitrary length-prefixed contents under a content key.
            let secrets = envelope::SealedSecrets { key: vec![], nonce: vec![0; 12], ct: plain.to_vec() };
            let _ = envelope::open_secrets(&key(), &MsgId::parse("fuzzmsg").expect("an id"), &secrets);
        }
    }
});
