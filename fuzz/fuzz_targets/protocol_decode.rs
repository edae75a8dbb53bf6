//! The protocol decoder on arbitrary frames: it must never panic, and whatever it accepts
//! encodes back to frames that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerotasq::protocol::Message;

/// Frames from bytes: each frame is a length byte, then that many bytes.
fn frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        frames.push(&rest[..len]);
        data = &rest[len..];
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let frames = frames(data);
    if let Ok(message) = Message::decode(&frames) {
        let encoded = message.encode();
        assert_eq!(Message::decode(&encoded).as_ref(), Ok(&message));
    }
});
