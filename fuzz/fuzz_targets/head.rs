//! The request-head reader on arbitrary bytes: never panics, never claims more bytes
//! than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardrelay::http::head::{parse_head, HeadLimits};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, len))) = parse_head(data, &HeadLimits::default()) {
        assert!(len <= data.len());
    }
});
