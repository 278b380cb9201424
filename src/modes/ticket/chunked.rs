//! An incremental decoder for HTTP/1.1 chunked request bodies (RFC 9112 §7.1).
//!
//! Pure: it takes whatever bytes have arrived and an output budget, and says how many
//! input bytes it consumed. monoio-http's decoder was not used because it owns the
//! socket through the runtime's owned-buffer reads, whereas the ticket pump reads with
//! readiness plus raw non-blocking `recv` and must stop decoding the moment the
//! transfer window is full (back-pressure); a state machine over borrowed bytes does
//! both. Chunk extensions and trailers are skipped (bounded), never interpreted.

/// Longest chunk-size line tail (extensions) the decoder skips before refusing.
const MAX_EXTENSION: usize = 4096;

/// Most trailer bytes skipped after the last chunk: as much as a request head.
const MAX_TRAILERS: usize = 8192;

/// Most hex digits in a chunk size: 15 keeps the value below 2^60, far beyond any body.
const MAX_SIZE_DIGITS: u8 = 15;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum ChunkError {
    /// A chunk size that is empty, not hex, or too long.
    #[error("bad chunk size")]
    BadSize,
    /// A missing CRLF where the grammar needs one.
    #[error("bad chunk framing")]
    BadFraming,
    /// Extensions or trailers over their bound.
    #[error("chunk metadata too long")]
    TooLong,
}

/// Where the decoder is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        /// The value so far.
        value: u64,
        /// Digits so far.
        digits: u8,
    },
    /// Skipping `;ext` or whitespace after the size, until CR.
    Extension {
        /// The size read.
        size: u64,
        /// Bytes skipped so far.
        skipped: usize,
    },
    /// Expecting the LF that ends a size line.
    SizeLf {
        /// The size read.
        size: u64,
    },
    /// Inside chunk data.
    Data {
        /// Bytes of this chunk still to come.
        left: u64,
    },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart {
        /// Trailer bytes skipped so far.
        skipped: usize,
    },
    /// Inside a trailer line, until CR.
    TrailerLine {
        /// Trailer bytes skipped so far.
        skipped: usize,
    },
    /// Expecting the LF ending a trailer line.
    TrailerLf {
        /// Trailer bytes skipped so far.
        skipped: usize,
    },
    /// Expecting the LF of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Decodes one chunked body, fed piecewise.
#[derive(Debug, Clone)]
pub(super) struct ChunkedDecoder {
    /// Grammar position.
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkedDecoder {
    /// True once the last chunk and the trailers are through.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `input`, appending at most `room` payload bytes to `out`. Returns the
    /// input bytes consumed; stops early when `room` is used up or the body is done
    /// (bytes after the end are left unconsumed).
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mut room: usize,
    ) -> Result<usize, ChunkError> {
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                if room == 0 {
                    break;
                }
                let take = (input.len() - pos).min(room).min(clamp_usize(left));
                out.extend_from_slice(&input[pos..pos + take]);
                pos += take;
                room -= take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            self.state = step(self.state, input[pos])?;
            pos += 1;
        }
        Ok(pos)
    }
}

/// A u64 count as usize, saturating (only ever used as an upper bound).
fn clamp_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// One byte of framing (never called in `Data` or `Done`).
fn step(state: State, b: u8) -> Result<State, ChunkError> {
    Ok(match state {
        State::Size { value, digits } => match (b as char).to_digit(16) {
            Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                value: value * 16 + u64::from(d),
                digits: digits + 1,
            },
            Some(_) => return Err(ChunkError::BadSize),
            None if digits == 0 => return Err(ChunkError::BadSize),
            None if b == b'\r' => State::SizeLf { size: value },
            None if b == b';' || b == b' ' || b == b'\t' => State::Extension {
                size: value,
                skipped: 1,
            },
            None => return Err(ChunkError::BadSize),
        },
        State::Extension { size, skipped } => match b {
            b'\r' => State::SizeLf { size },
            b'\n' => return Err(ChunkError::BadFraming),
            _ if skipped >= MAX_EXTENSION => return Err(ChunkError::TooLong),
            _ => State::Extension {
                size,
                skipped: skipped + 1,
            },
        },
        State::SizeLf { size } => match (b, size) {
            (b'\n', 0) => State::TrailerStart { skipped: 0 },
            (b'\n', left) => State::Data { left },
            _ => return Err(ChunkError::BadFraming),
        },
        State::DataCr if b == b'\r' => State::DataLf,
        State::DataLf if b == b'\n' => State::Size {
            value: 0,
            digits: 0,
        },
        State::TrailerStart { .. } if b == b'\r' => State::FinalLf,
        State::TrailerStart { skipped } | State::TrailerLine { skipped } => match b {
            b'\r' => State::TrailerLf { skipped },
            b'\n' => return Err(ChunkError::BadFraming),
            _ if skipped >= MAX_TRAILERS => return Err(ChunkError::TooLong),
            _ => State::TrailerLine {
                skipped: skipped + 1,
            },
        },
        State::TrailerLf { skipped } if b == b'\n' => State::TrailerStart { skipped },
        State::FinalLf if b == b'\n' => State::Done,
        _ => return Err(ChunkError::BadFraming),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decode everything in one call with unlimited room.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = d.decode(input, &mut out, usize::MAX)?;
        Ok((out, used, d.is_done()))
    }

    /// Encode `data` as chunks of the given sizes (cycled), with a final chunk.
    fn encode(data: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].max(1).min(rest.len());
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn simple_body() {
        let (out, used, done) =
            decode_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nEXTRA").unwrap_or_default();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(used, 26);
    }

    #[test]
    fn extensions_and_trailers_are_skipped() {
        let body = b"A;name=value\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\n";
        let (out, used, done) = decode_all(body).unwrap_or_default();
        assert_eq!(out, b"0123456789");
        assert!(done);
        assert_eq!(used, body.len());
    }

    #[test]
    fn room_limits_output() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = d.decode(b"a\r\n0123456789\r\n0\r\n\r\n", &mut out, 4);
        assert_eq!(used, Ok(7));
        assert_eq!(out, b"0123");
        assert!(!d.is_done());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"1234567890abcdef0\r\n",
            b"0\r\n\n",
        ] {
            assert!(decode_all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bounded_extensions() {
        let mut body = b"1;".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_EXTENSION + 1));
        assert_eq!(decode_all(&body).map(|_| ()), Err(ChunkError::TooLong));
    }

    proptest! {
        #[test]
        fn round_trip_in_pieces(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..8),
            cut in 1usize..97,
            room in 1usize..500,
        ) {
            let encoded = encode(&data, &sizes);
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut rounds = 0;
            while !d.is_done() {
                let end = (pos + cut).min(encoded.len());
                let used = d.decode(&encoded[pos..end], &mut out, room);
                prop_assert!(used.is_ok());
                pos += used.unwrap_or(0);
                rounds += 1;
                prop_assert!(rounds < 100_000);
            }
            prop_assert_eq!(out, data);
            prop_assert_eq!(pos, encoded.len());
        }

        #[test]
        fn random_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            if let Ok(used) = d.decode(&input, &mut out, 64) {
                prop_assert!(used <= input.len());
                prop_assert!(out.len() <= 64);
            }
        }

        #[test]
        fn truncated_input_is_never_done(
            data in proptest::collection::vec(any::<u8>(), 1..500),
            cut in 0usize..1000,
        ) {
            let encoded = encode(&data, &[7, 100]);
            let cut = cut % encoded.len();
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let used = d.decode(&encoded[..cut], &mut out, usize::MAX);
            prop_assert!(used.is_ok());
            prop_assert!(!d.is_done());
        }
    }
}
