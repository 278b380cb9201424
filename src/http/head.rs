//! Reading an HTTP/1.1 request head under hard caps.
//!
//! This module owns the byte-level parse of a request head (via `httparse`), the three
//! limits of the spec (whole head ≤ 8 KiB, ≤ 64 header fields, any value ≤ 1 KiB; each
//! answered with 431), and the small accessors the routes use on the parsed head: header
//! look-up, comma-separated token matching and query-parameter decoding. It does no I/O:
//! the caller reads into a buffer and asks again until the head is complete or refused.

/// The hard caps on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The whole head: request line, every header line, the blank line, CRLFs included.
    pub max_head_bytes: usize,
    /// Header fields, Host included.
    pub max_headers: usize,
    /// Bytes in any single header value (as `httparse` delimits it: without the
    /// surrounding whitespace).
    pub max_header_value: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8192,
            max_headers: 64,
            max_header_value: 1024,
        }
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than {max} bytes")]
    HeadTooLarge { max: usize },
    #[error("more than {max} header fields")]
    TooManyHeaders { max: usize },
    #[error("a header value longer than {max} bytes")]
    HeaderValueTooLong { max: usize },
    #[error("malformed request head")]
    Malformed,
    /// More than one `Content-Length` field, even with equal values (RFC 9112 §6.3: a
    /// request whose body length is ambiguous is refused, never guessed).
    #[error("more than one Content-Length field")]
    DuplicateContentLength,
    /// A `Content-Length` that is not 1*DIGIT after its optional whitespace (`+5`, `-1`,
    /// empty, a list, or too large for 64 bits).
    #[error("Content-Length is not a decimal length")]
    BadContentLength,
    /// More than one `Transfer-Encoding` field: only the first was read before, so a
    /// second one could hide a coding from the relay that a server behind it honours.
    #[error("more than one Transfer-Encoding field")]
    DuplicateTransferEncoding,
}

impl HeadError {
    /// The status the relay answers with: 431 for the three limits, 400 for a malformed
    /// head or ambiguous body framing.
    pub fn status(self) -> u16 {
        match self {
            HeadError::HeadTooLarge { .. }
            | HeadError::TooManyHeaders { .. }
            | HeadError::HeaderValueTooLong { .. } => 431,
            HeadError::Malformed
            | HeadError::DuplicateContentLength
            | HeadError::BadContentLength
            | HeadError::DuplicateTransferEncoding => 400,
        }
    }
}

/// The request methods the relay tells apart; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Head,
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1), so `get` is `Other`.
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// A parsed request head. Owned and Send: it crosses shards in a handoff.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// The path without the query, exactly as sent (not decoded).
    pub path: String,
    /// The raw query string after '?', if any.
    pub query: Option<String>,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// Header fields in order; names lower-cased; values raw bytes (may be non-UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// First value of a header (case-insensitive name), as &str if UTF-8 (None if absent
    /// or not UTF-8), trimmed of OWS.
    ///
    /// Only the first field of that name is looked at: a non-UTF-8 first value is `None`
    /// even if a later duplicate is clean, so a client cannot steer which copy is used.
    pub fn header(&self, name: &str) -> Option<&str> {
        let raw = self.raw_values(name).next()?;
        std::str::from_utf8(trim_ows(raw)).ok()
    }

    /// Present and non-empty after trimming. A non-UTF-8 value counts as absent, matching
    /// [`RequestHead::header`], so a caller that checks this and then reads the value
    /// always gets text.
    pub fn has_nonempty(&self, name: &str) -> bool {
        self.header(name).is_some_and(|v| !v.is_empty())
    }

    /// True if a comma-separated header contains `token` case-insensitively (e.g.
    /// `Connection: keep-alive, Upgrade`).
    ///
    /// Every field of that name is searched: RFC 9110 §5.3 makes repeated list fields
    /// equivalent to one comma-joined field. Works on raw bytes, so a non-UTF-8 element
    /// elsewhere in the list does not hide a matching token.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        let token = token.as_bytes();
        self.raw_values(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
        })
    }

    /// Percent-decoded value of a query parameter (first occurrence); None if absent;
    /// Some(Err) if the percent-encoding is invalid. RFC 3986 decoding: '+' stays '+'.
    ///
    /// A parameter without '=' (`?flag`) has the empty value. Names are compared after
    /// decoding, so `%72eset=1` is `reset`; a pair whose name does not decode is skipped
    /// rather than failing the look-up of some other name.
    pub fn query_param(&self, name: &str) -> Option<Result<Vec<u8>, HeadError>> {
        let query = self.query.as_deref()?;
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                key_matches(key, name).then(|| percent_decode(value))
            })
    }

    /// The raw values of every field called `name`, in order.
    fn raw_values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Whether a raw query key names `name`, comparing the cheap raw form first.
fn key_matches(raw_key: &str, name: &str) -> bool {
    if raw_key == name {
        return true;
    }
    raw_key.contains('%') && percent_decode(raw_key).is_ok_and(|k| k == name.as_bytes())
}

/// Strip optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Parse the head at the front of `buf`.
///
/// * `Ok(None)`: incomplete and still within `max_head_bytes` — read more.
/// * `Ok(Some((head, len)))`: `len` = bytes of the head including the final CRLFCRLF;
///   bytes after it belong to the body / WebSocket stream.
/// * `Err`: a limit was passed or the head is malformed. A buffer longer than
///   `max_head_bytes` that holds no complete head within that many bytes is
///   `HeadTooLarge`, whether or not the head would complete later.
pub fn parse_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Parse only the first `max_head_bytes`: a head that fits is complete inside that
    // window, and one that does not can never be accepted. This also bounds the work a
    // slow client can make us redo on every partial read.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let too_large = HeadError::HeadTooLarge {
        max: limits.max_head_bytes,
    };
    let too_many = HeadError::TooManyHeaders {
        max: limits.max_headers,
    };

    // One slot more than allowed, so that exactly one field too many still parses and
    // is reported as TooManyHeaders by our own count rather than by httparse.
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers.saturating_add(1)];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(too_large)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        // httparse runs out of slots on the second field too many; still the same limit.
        Err(httparse::Error::TooManyHeaders) => return Err(too_many),
        Err(_) => return Err(HeadError::Malformed),
    };
    if req.headers.len() > limits.max_headers {
        return Err(too_many);
    }
    build_head(&req, limits).map(|head| Some((head, len)))
}

/// Copy a complete httparse request into an owned head, checking the value cap.
fn build_head(
    req: &httparse::Request<'_, '_>,
    limits: &HeadLimits,
) -> Result<RequestHead, HeadError> {
    // httparse fills all three on Complete; treat absence as malformed rather than trust it.
    let method = req.method.ok_or(HeadError::Malformed)?;
    let target = req.path.ok_or(HeadError::Malformed)?;
    let minor_version = req.version.ok_or(HeadError::Malformed)?;

    let mut headers = Vec::with_capacity(req.headers.len());
    for field in req.headers.iter() {
        if field.value.len() > limits.max_header_value {
            return Err(HeadError::HeaderValueTooLong {
                max: limits.max_header_value,
            });
        }
        headers.push((field.name.to_ascii_lowercase(), field.value.to_vec()));
    }
    check_framing(&headers)?;

    // Split at the first '?': the path keeps its exact bytes (no decoding, no
    // normalisation), and the query is kept raw for `query_param`.
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    Ok(RequestHead {
        method: Method::from_token(method),
        path: path.to_owned(),
        query,
        minor_version,
        headers,
    })
}

/// RFC 9112 §6: body framing a request states once and unambiguously. At most one
/// `Content-Length` field, whose value (OWS trimmed) is 1*DIGIT and fits in a `u64`; at
/// most one `Transfer-Encoding` field. Checked for every request, so no route can read a
/// length another hop would read differently.
fn check_framing(headers: &[(String, Vec<u8>)]) -> Result<(), HeadError> {
    let mut lengths = headers.iter().filter(|(n, _)| n == "content-length");
    if let Some((_, value)) = lengths.next() {
        if lengths.next().is_some() {
            return Err(HeadError::DuplicateContentLength);
        }
        if decimal_length(trim_ows(value)).is_none() {
            return Err(HeadError::BadContentLength);
        }
    }
    let codings = headers.iter().filter(|(n, _)| n == "transfer-encoding");
    if codings.count() > 1 {
        return Err(HeadError::DuplicateTransferEncoding);
    }
    Ok(())
}

/// `1*DIGIT` as a `u64`: no sign, no space, no empty string, no overflow (Rust's own
/// `parse` would take a leading `+`).
fn decimal_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// Percent-decode (RFC 3986; '+' is not special). Err(Malformed) on a bad escape: a '%'
/// not followed by two hex digits.
pub fn percent_decode(s: &str) -> Result<Vec<u8>, HeadError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes
            .next()
            .and_then(hex_value)
            .ok_or(HeadError::Malformed)?;
        let lo = bytes
            .next()
            .and_then(hex_value)
            .ok_or(HeadError::Malformed)?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

/// The value of one ASCII hex digit, either case.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(buf, &HeadLimits::default())
    }

    fn parse_complete(buf: &[u8]) -> (RequestHead, usize) {
        match parse(buf) {
            Ok(Some(done)) => done,
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    /// A head of exactly `total` bytes: seven 1010-byte filler fields (values under the
    /// value cap) and a request path padded to make up the rest.
    fn head_of_len(total: usize) -> Vec<u8> {
        let fields: String = (0..7)
            .map(|i| format!("X-Fill-{i}: {}\r\n", "f".repeat(998)))
            .collect();
        let fixed = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n").len();
        let pad = "p".repeat(total - fixed);
        format!("GET /{pad} HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes()
    }

    fn framing_error(fields: &str) -> Option<HeadError> {
        let buf = format!("PUT /v1/relay HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        parse(buf.as_bytes()).err()
    }

    #[test]
    fn content_length_must_be_one_field_of_digits() {
        assert_eq!(framing_error("Content-Length: 5\r\n"), None);
        assert_eq!(framing_error("Content-Length:  5 \r\n"), None);
        assert_eq!(framing_error("Content-Length: 0\r\n"), None);
        assert_eq!(
            framing_error("Content-Length: 18446744073709551615\r\n"),
            None
        );
        let dup = Some(HeadError::DuplicateContentLength);
        assert_eq!(
            framing_error("Content-Length: 5\r\nContent-Length: 5\r\n"),
            dup
        );
        assert_eq!(
            framing_error("Content-Length: 5\r\ncontent-length: 6\r\n"),
            dup
        );
        let bad = Some(HeadError::BadContentLength);
        for value in [
            "+5",
            "-1",
            "",
            "5, 5",
            "0x5",
            "5a",
            "1 2",
            "18446744073709551616",
        ] {
            let field = format!("Content-Length: {value}\r\n");
            assert_eq!(framing_error(&field), bad, "{value:?}");
        }
    }

    #[test]
    fn transfer_encoding_must_be_one_field() {
        assert_eq!(framing_error("Transfer-Encoding: chunked\r\n"), None);
        assert_eq!(
            framing_error("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
            Some(HeadError::DuplicateTransferEncoding)
        );
        assert_eq!(
            framing_error("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Some(HeadError::DuplicateTransferEncoding)
        );
    }

    #[test]
    fn framing_errors_are_400() {
        assert_eq!(HeadError::DuplicateContentLength.status(), 400);
        assert_eq!(HeadError::BadContentLength.status(), 400);
        assert_eq!(HeadError::DuplicateTransferEncoding.status(), 400);
    }

    #[test]
    fn default_limits_are_the_spec() {
        let limits = HeadLimits::default();
        assert_eq!(limits.max_head_bytes, 8192);
        assert_eq!(limits.max_headers, 64);
        assert_eq!(limits.max_header_value, 1024);
    }

    #[test]
    fn statuses() {
        assert_eq!(HeadError::HeadTooLarge { max: 1 }.status(), 431);
        assert_eq!(HeadError::TooManyHeaders { max: 1 }.status(), 431);
        assert_eq!(HeadError::HeaderValueTooLong { max: 1 }.status(), 431);
        assert_eq!(HeadError::Malformed.status(), 400);
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /v1/echo?a=1 HTTP/1.1\r\nHost: Example\r\nX-Thing:  v  \r\n\r\n";
        let (head, len) = parse_complete(buf);
        assert_eq!(len, buf.len());
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/v1/echo");
        assert_eq!(head.query.as_deref(), Some("a=1"));
        assert_eq!(head.minor_version, 1);
        assert_eq!(head.headers[0].0, "host");
        assert_eq!(head.header("HOST"), Some("Example"));
        assert_eq!(head.header("x-thing"), Some("v"));
        // httparse already strips the whitespace around a value, so the value cap and
        // the stored bytes both see only the value itself.
        assert_eq!(head.headers[1].1, b"v");
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn methods_and_versions() {
        for (text, method) in [
            ("GET", Method::Get),
            ("PUT", Method::Put),
            ("POST", Method::Post),
            ("HEAD", Method::Head),
            ("DELETE", Method::Other),
            ("get", Method::Other),
        ] {
            let buf = format!("{text} / HTTP/1.0\r\n\r\n");
            let (head, _) = parse_complete(buf.as_bytes());
            assert_eq!(head.method, method, "{text}");
            assert_eq!(head.minor_version, 0);
            assert!(head.headers.is_empty());
        }
    }

    #[test]
    fn path_is_kept_raw_and_empty_query_is_some() {
        let (head, _) = parse_complete(b"GET /a%20b/../c? HTTP/1.1\r\n\r\n");
        assert_eq!(head.path, "/a%20b/../c");
        assert_eq!(head.query.as_deref(), Some(""));
        let (head, _) = parse_complete(b"GET /x?a=1?b=2 HTTP/1.1\r\n\r\n");
        assert_eq!(head.path, "/x");
        assert_eq!(head.query.as_deref(), Some("a=1?b=2"));
        let (head, _) = parse_complete(b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(head.query, None);
    }

    #[test]
    fn malformed_heads() {
        for buf in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"GET / HTTP/1.1\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\rX\r\n\r\n",
        ] {
            assert_eq!(parse(buf).err(), Some(HeadError::Malformed), "{buf:?}");
        }
    }

    #[test]
    fn head_size_exact_limit_and_one_over() {
        let exact = head_of_len(8192);
        assert_eq!(exact.len(), 8192);
        let (_, len) = parse_complete(&exact);
        assert_eq!(len, 8192);

        let over = head_of_len(8193);
        assert_eq!(over.len(), 8193);
        assert_eq!(
            parse(&over).err(),
            Some(HeadError::HeadTooLarge { max: 8192 })
        );
    }

    #[test]
    fn head_size_counts_against_incomplete_buffers() {
        // 8192 bytes and still no blank line: wait; one more byte: refuse.
        let mut buf = b"GET /".to_vec();
        buf.resize(8192, b'p');
        assert!(matches!(parse(&buf), Ok(None)));
        buf.push(b'y');
        assert_eq!(
            parse(&buf).err(),
            Some(HeadError::HeadTooLarge { max: 8192 })
        );
    }

    #[test]
    fn exact_head_followed_by_more_bytes_is_still_accepted() {
        let mut buf = head_of_len(8192);
        buf.extend_from_slice(b"\x81\x05hello");
        let (_, len) = parse_complete(&buf);
        assert_eq!(len, 8192);
    }

    fn head_with_fields(count: usize) -> Vec<u8> {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 1..count {
            head += &format!("X-{i}: v\r\n");
        }
        head += "\r\n";
        head.into_bytes()
    }

    #[test]
    fn header_count_exact_limit_and_one_over() {
        let (head, _) = parse_complete(&head_with_fields(64));
        assert_eq!(head.headers.len(), 64);
        assert_eq!(
            parse(&head_with_fields(65)).err(),
            Some(HeadError::TooManyHeaders { max: 64 })
        );
        // Far over the slot count httparse is given: the same limit, not Malformed.
        assert_eq!(
            parse(&head_with_fields(200)).err(),
            Some(HeadError::TooManyHeaders { max: 64 })
        );
    }

    fn head_with_value(len: usize) -> Vec<u8> {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "v".repeat(len)
        )
        .into_bytes()
    }

    #[test]
    fn header_value_exact_limit_and_one_over() {
        let (head, _) = parse_complete(&head_with_value(1024));
        assert_eq!(head.header("x-big").map(str::len), Some(1024));
        assert_eq!(
            parse(&head_with_value(1025)).err(),
            Some(HeadError::HeaderValueTooLong { max: 1024 })
        );
    }

    #[test]
    fn custom_limits_apply() {
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 1,
            max_header_value: 3,
        };
        assert!(parse_head(b"GET / HTTP/1.1\r\nA: abc\r\n\r\n", &limits).is_ok());
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nA: abcd\r\n\r\n", &limits).err(),
            Some(HeadError::HeaderValueTooLong { max: 3 })
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nA: a\r\nB: b\r\n\r\n", &limits).err(),
            Some(HeadError::TooManyHeaders { max: 1 })
        );
        let zero = HeadLimits {
            max_head_bytes: 0,
            ..limits
        };
        assert!(matches!(parse_head(b"", &zero), Ok(None)));
        assert_eq!(
            parse_head(b"G", &zero).err(),
            Some(HeadError::HeadTooLarge { max: 0 })
        );
    }

    #[test]
    fn incomplete_at_every_split_point() {
        let full = b"GET /v1/server?x=%20 HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
        for cut in 0..full.len() {
            let prefix = full.get(..cut).unwrap_or_default();
            assert!(matches!(parse(prefix), Ok(None)), "cut at {cut}");
        }
        let (_, len) = parse_complete(full);
        assert_eq!(len, full.len());
    }

    #[test]
    fn pipelined_bytes_are_left_after_len() {
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, len) = parse_complete(&buf);
        assert_eq!(head.path, "/a");
        assert_eq!(len, first.len());
        let (second, len2) = parse_complete(buf.get(len..).unwrap_or_default());
        assert_eq!(second.path, "/b");
        assert_eq!(len + len2, buf.len());

        // A partial body or WebSocket frame after the head does not matter either.
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"\x81\x85\x00");
        assert_eq!(parse_complete(&buf).1, first.len());
    }

    #[test]
    fn non_utf8_values_are_kept_raw() {
        let (head, _) = parse_complete(b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\nX-Name: ok\r\n\r\n");
        assert_eq!(head.headers[0].1, b"caf\xe9");
        // The first field decides: it is not UTF-8, so both accessors say no.
        assert_eq!(head.header("x-name"), None);
        assert!(!head.has_nonempty("x-name"));
    }

    #[test]
    fn has_nonempty_cases() {
        let (head, _) = parse_complete(b"GET / HTTP/1.1\r\nA: x\r\nB:   \r\nC:\r\n\r\n");
        assert!(head.has_nonempty("a"));
        assert!(head.has_nonempty("A"));
        assert!(!head.has_nonempty("b"));
        assert!(!head.has_nonempty("c"));
        assert!(!head.has_nonempty("d"));
    }

    fn head_with(headers: &[(&str, &[u8])], query: Option<&str>) -> RequestHead {
        RequestHead {
            method: Method::Get,
            path: "/".to_owned(),
            query: query.map(str::to_owned),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn header_has_token_cases() {
        let head = head_with(
            &[
                ("connection", b"keep-alive, Upgrade"),
                ("upgrade", b"WebSocket"),
                ("x-list", b" a ,\tb,,c "),
                ("x-list", b"d"),
                ("x-bytes", b"\xff\xfe, upgrade"),
            ],
            None,
        );
        assert!(head.header_has_token("connection", "upgrade"));
        assert!(head.header_has_token("Connection", "KEEP-ALIVE"));
        assert!(!head.header_has_token("connection", "close"));
        // A token is a whole list element, never a substring of one.
        assert!(!head.header_has_token("connection", "keep"));
        assert!(!head.header_has_token("connection", "grade"));
        assert!(head.header_has_token("upgrade", "websocket"));
        assert!(head.header_has_token("x-list", "a"));
        assert!(head.header_has_token("x-list", "b"));
        assert!(head.header_has_token("x-list", "c"));
        // Repeated fields are one list.
        assert!(head.header_has_token("x-list", "d"));
        assert!(head.header_has_token("x-bytes", "upgrade"));
        assert!(!head.header_has_token("missing", "a"));
        let head = head_with(&[("upgrade", b"websocket/13")], None);
        assert!(!head.header_has_token("upgrade", "websocket"));
    }

    #[test]
    fn query_param_cases() {
        let head = head_with(
            &[],
            Some("a=hello%20world&plus=a+b&bad=%zz&empty=&flag&a=second&&%72eset=1&tail=%4"),
        );
        assert_eq!(head.query_param("a"), Some(Ok(b"hello world".to_vec())));
        assert_eq!(head.query_param("plus"), Some(Ok(b"a+b".to_vec())));
        assert_eq!(head.query_param("bad"), Some(Err(HeadError::Malformed)));
        assert_eq!(head.query_param("empty"), Some(Ok(Vec::new())));
        assert_eq!(head.query_param("flag"), Some(Ok(Vec::new())));
        assert_eq!(head.query_param("reset"), Some(Ok(b"1".to_vec())));
        assert_eq!(head.query_param("tail"), Some(Err(HeadError::Malformed)));
        assert_eq!(head.query_param("missing"), None);
        assert_eq!(head.query_param(""), None);
        assert_eq!(head_with(&[], None).query_param("a"), None);
        assert_eq!(head_with(&[], Some("")).query_param("a"), None);
    }

    #[test]
    fn percent_decode_cases() {
        assert_eq!(percent_decode(""), Ok(Vec::new()));
        assert_eq!(percent_decode("a%2Fb%2fc"), Ok(b"a/b/c".to_vec()));
        assert_eq!(percent_decode("%FF%00"), Ok(vec![0xff, 0x00]));
        assert_eq!(percent_decode("+%2B"), Ok(b"++".to_vec()));
        assert_eq!(percent_decode("%"), Err(HeadError::Malformed));
        assert_eq!(percent_decode("%a"), Err(HeadError::Malformed));
        assert_eq!(percent_decode("%g0"), Err(HeadError::Malformed));
        assert_eq!(percent_decode("%é"), Err(HeadError::Malformed));
    }

    #[test]
    fn trim_ows_cases() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b" a b\t"), b"a b");
    }

    #[test]
    fn request_head_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<RequestHead>();
    }
}
