//! The frame decoder on arbitrary client bytes: decode until it needs more or fails;
//! never panics, never consumes more than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardrelay::ws::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut decoder = Decoder::new();
    let mut pos = 0;
    while pos < buf.len() {
        match decoder.decode(&mut buf[pos..], 64 * 1024) {
            Ok(Some((_, used))) => {
                assert!(used > 0 && pos + used <= data.len());
                pos += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
