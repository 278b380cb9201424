//! The server-id routing envelope parser on arbitrary bytes, as text and as binary.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardrelay::modes::server_id::parse_envelope;
use shardrelay::ws::codec::MessageKind;

fuzz_target!(|data: &[u8]| {
    let _ = parse_envelope(MessageKind::Text, data);
    let _ = parse_envelope(MessageKind::Binary, data);
});
