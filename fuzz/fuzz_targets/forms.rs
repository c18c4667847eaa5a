//! What people type: form bodies decoded into the values the pages parse at the edge, and the
//! `return_to` a link carries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passback::domain::{EmailAddress, LoginName, MsgId, OneTimeCode};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(data) else { return };
    for (name, value) in &fields {
        let _ = LoginName::parse(value);
        let _ = OneTimeCode::parse(value);
        let _ = MsgId::parse(value);
        if let Ok(address) = EmailAddress::parse(value) {
            let _ = address.masked();
        }
        if name == "return_to" {
            if let Some(url) = passback::portal::return_to::allowed(value, &["https://apps.example.org".into()]) {
                assert!(url.starts_with("https://apps.example.org/"), "only the allowed origin: {url}");
            }
        }
    }
});
