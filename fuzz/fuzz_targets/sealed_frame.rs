//! A binary relay message, as any peer of the WebSocket can send it: parsed, never trusted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use passback::envelope::SealedFrame;
use passback::relay::protocol;

fuzz_target!(|data: &[u8]| {
    if let Some(frame) = SealedFrame::from_bytes(data) {
        // What parses writes back to the same bytes' meaning.
        let again = SealedFrame::from_bytes(&frame.to_bytes()).expect("a frame's own bytes parse");
        assert_eq!(again, frame);
    }
    let _ = protocol::parse_binary(data);
});
