//! The session message parser on arbitrary bytes: never panics, and whatever parses
//! re-encodes to text that parses back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardrelay::modes::session::messages::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::parse(data) {
        let text = message.to_text();
        assert_eq!(Message::parse(text.as_bytes()).as_ref(), Ok(&message));
    }
});
