//! The `/ws` message reader on arbitrary bytes: never panics, and a `close_session`
//! that parses frames with its id's length in the first byte (or is refused over 255).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardrelay::modes::session_ws::messages::{close_session_frame, parse, Control};

fuzz_target!(|data: &[u8]| {
    if let Some(Control::CloseSession { session_id }) = parse(data) {
        match close_session_frame(&session_id) {
            Some(frame) => assert_eq!(usize::from(frame[0]), session_id.len()),
            None => assert!(session_id.len() > 255),
        }
    }
});
