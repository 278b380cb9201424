//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key repeated over the payload.
//!
//! Owns the one loop every byte a client sends passes through, so [`apply_mask`] works a
//! `u64` at a time; [`apply_mask_bytewise`] is the plain reference it is tested against.
//! XOR is its own inverse, so the same functions mask and unmask.

/// XORs `buf` in place with `key` repeated, word at a time. `buf[0]` is taken to be at the
/// start of the key cycle (the first byte of a frame's payload).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    // Bytes up to the first 8-aligned address go one at a time so the word loop only does
    // aligned loads; `align_offset` may answer "never" (usize::MAX), hence the `min`.
    let head_len = buf.as_ptr().align_offset(8).min(buf.len());
    let (head, body) = buf.split_at_mut(head_len);
    apply_mask_bytewise(head, key);

    // The body starts `head_len` bytes into the key's cycle; since 8 is a multiple of 4,
    // every word and the tail after it then start at that same phase.
    let mut key = key;
    key.rotate_left(head_len % 4);
    let [a, b, c, d] = key;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);

    let mut words = body.chunks_exact_mut(8);
    for chunk in &mut words {
        mask_word(chunk, word, key);
    }
    apply_mask_bytewise(words.into_remainder(), key);
}

/// XORs one 8-byte chunk with the repeated key `word`. Chunks from `chunks_exact_mut(8)`
/// always convert; the fallback keeps this total (and correct) rather than panicking.
fn mask_word(chunk: &mut [u8], word: u64, key: [u8; 4]) {
    if let Ok(bytes) = <&mut [u8; 8]>::try_from(&mut *chunk) {
        *bytes = (u64::from_ne_bytes(*bytes) ^ word).to_ne_bytes();
    } else {
        apply_mask_bytewise(chunk, key);
    }
}

/// XORs `buf` in place with `key` repeated, one byte at a time: the reference for
/// [`apply_mask`], used by tests and benchmarks.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4]) {
    for (byte, k) in buf.iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc_6455_example_masked_hello() {
        // §5.7: "Hello" masked with 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask(&mut buf, KEY);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut buf, KEY);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn empty_buffer_is_untouched() {
        let mut buf: [u8; 0] = [];
        apply_mask(&mut buf, KEY);
        apply_mask_bytewise(&mut buf, KEY);
    }

    #[test]
    fn zero_key_is_identity() {
        let mut buf: Vec<u8> = (0..=255).collect();
        apply_mask(&mut buf, [0; 4]);
        assert!(buf.iter().copied().eq(0..=255));
    }

    #[test]
    fn word_and_bytewise_agree_for_every_length_and_alignment() {
        // Every start offset within a word and every length up to a few words covers each
        // combination of head, body and tail sizes.
        let original: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(31)).collect();
        for start in 0..8 {
            for len in 0..=64 {
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast[start..start + len], KEY);
                apply_mask_bytewise(&mut slow[start..start + len], KEY);
                assert_eq!(fast, slow, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn masking_twice_restores() {
        let original: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf[3..], KEY);
        assert_ne!(buf, original);
        apply_mask(&mut buf[3..], KEY);
        assert_eq!(buf, original);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn word_and_bytewise_agree(
                data in proptest::collection::vec(any::<u8>(), 0..2048),
                start in 0usize..16,
                key in any::<[u8; 4]>(),
            ) {
                // A random start inside the buffer gives random alignment of the slice.
                let start = start.min(data.len());
                let mut fast = data.clone();
                let mut slow = data;
                apply_mask(&mut fast[start..], key);
                apply_mask_bytewise(&mut slow[start..], key);
                prop_assert_eq!(fast, slow);
            }
        }
    }
}
