//! DNs as a directory (or a staff scope) spells them: canonicalised one way, idempotently.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passback::store::users::{dn_within, normalise_dn};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (dn, base) = text.split_once('\n').unwrap_or((text, ""));
    let once = normalise_dn(dn);
    assert_eq!(normalise_dn(&once), once, "canonical spellings are stable");
    if dn_within(dn, base) && !base.is_empty() {
        assert!(dn_within(&once, &normalise_dn(base)), "within stays within once canonicalised");
    }
});
