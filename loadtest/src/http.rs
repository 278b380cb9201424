//! Just enough HTTP/1.1 client for the admin API, `/stats` and ticket transfers:
//! request heads, response-head parsing (httparse) and an incremental chunked-body
//! decoder. No I/O here.

/// Most bytes of a response head we buffer.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why a response could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// Not parseable HTTP/1.1.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The head did not end within [`MAX_HEAD`] bytes.
    #[error("response head too large")]
    HeadTooLarge,
    /// Bad chunked framing.
    #[error("bad chunked encoding")]
    Chunked,
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Bytes of the head, CRLFCRLF included.
    pub len: usize,
    /// Body delimitation.
    pub framing: Framing,
}

/// A request head (`Connection: close`: one request per connection keeps every
/// transfer independent).
pub fn request_head(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: Option<u64>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = body_len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Parses a response head: `Ok(None)` while incomplete. Interim `1xx` responses
/// (other than 101) are skipped over.
pub fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, HttpError> {
    let mut offset = 0;
    loop {
        let Some(head) = parse_one_head(&buf[offset..])? else {
            return Ok(None);
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            offset += head.len;
            continue;
        }
        return Ok(Some(ResponseHead {
            len: offset + head.len,
            ..head
        }));
    }
}

/// Parses one head at the start of `buf`.
fn parse_one_head(buf: &[u8]) -> Result<Option<ResponseHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let status = response
        .parse(buf)
        .map_err(|e| HttpError::Malformed(e.to_string()))?;
    let httparse::Status::Complete(len) = status else {
        return if buf.len() > MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let mut framing = Framing::UntilClose;
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked
        {
            let n = value
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed("content-length".into()))?;
            framing = Framing::Length(n);
        }
    }
    Ok(Some(ResponseHead {
        status: response.code.unwrap_or(0),
        len,
        framing,
    }))
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct Dechunker {
    /// Where in the framing we are.
    state: ChunkState,
    /// A partial size or trailer line.
    line: Vec<u8>,
}

/// Decoder states.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// The final CRLF has been read.
    Done,
}

/// Longest size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Dechunker {
    /// Feeds `input`, passing body bytes to `body`; returns true once the body ended.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        body: &mut impl FnMut(&[u8]),
    ) -> Result<bool, HttpError> {
        while !input.is_empty() && self.state != ChunkState::Done {
            input = match self.state {
                ChunkState::Data(left) => {
                    let take = left.min(input.len() as u64) as usize;
                    body(&input[..take]);
                    self.state = if left == take as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                    &input[take..]
                }
                _ => self.line_step(input)?,
            };
        }
        Ok(self.state == ChunkState::Done)
    }

    /// Consumes line-oriented framing (sizes, CRLFs, trailers) from `input`.
    fn line_step<'a>(&mut self, input: &'a [u8]) -> Result<&'a [u8], HttpError> {
        let Some(newline) = input.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(input);
            return if self.line.len() > MAX_CHUNK_LINE {
                Err(HttpError::Chunked)
            } else {
                Ok(&[])
            };
        };
        self.line.extend_from_slice(&input[..newline]);
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        self.state = match self.state {
            ChunkState::Size => match chunk_size(line)? {
                0 => ChunkState::Trailer,
                n => ChunkState::Data(n),
            },
            ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
            ChunkState::Trailer if line.is_empty() => ChunkState::Done,
            ChunkState::Trailer => ChunkState::Trailer,
            _ => return Err(HttpError::Chunked),
        };
        Ok(&input[newline + 1..])
    }
}

/// The size on a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let text = std::str::from_utf8(line).map_err(|_| HttpError::Chunked)?;
    let hex = text.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| HttpError::Chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_has_length_and_close() {
        let head = request_head(
            "PUT",
            "127.0.0.1:8080",
            "/v1/relay",
            &[("Authorization", "Bearer t")],
            Some(5),
        );
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with(
            "PUT /v1/relay HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n"
        ));
        assert!(text.ends_with("Authorization: Bearer t\r\nContent-Length: 5\r\n\r\n"));
    }

    #[test]
    fn parses_heads_and_skips_continue() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let head = parse_head(buf).unwrap().unwrap();
        assert_eq!((head.status, head.framing), (200, Framing::Length(3)));
        assert_eq!(&buf[head.len..], b"abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse_head(chunked).unwrap().unwrap().framing,
            Framing::Chunked
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
    }

    #[test]
    fn dechunks_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut dechunker = Dechunker::default();
            let mut out = Vec::new();
            let first = dechunker
                .feed(&wire[..split], &mut |b| out.extend_from_slice(b))
                .unwrap();
            let done = dechunker
                .feed(&wire[split..], &mut |b| out.extend_from_slice(b))
                .unwrap();
            assert!(done || first, "split {split}");
            assert_eq!(out, b"hello, world");
        }
    }

    #[test]
    fn truncated_chunked_body_is_not_done_and_garbage_fails() {
        let mut dechunker = Dechunker::default();
        assert!(!dechunker.feed(b"5\r\nhel", &mut |_| {}).unwrap());
        let mut bad = Dechunker::default();
        assert_eq!(bad.feed(b"zz\r\n", &mut |_| {}), Err(HttpError::Chunked));
    }
}
