//! Property tests for the request-head parser: hostile bytes never panic or claim more
//! bytes than they were given, and generated heads come back field for field.

use proptest::prelude::*;
use shardrelay::http::head::{parse_head, HeadLimits, Method, RequestHead};

/// A generated request head and the values the parse must give back.
#[derive(Debug, Clone)]
struct Generated {
    method: &'static str,
    path: String,
    /// Query parameters as (name, decoded value); encoded into the query string.
    params: Option<Vec<(String, Vec<u8>)>>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Generated {
    fn query(&self) -> Option<String> {
        self.params.as_ref().map(|params| {
            params
                .iter()
                .map(|(name, value)| format!("{name}={}", percent_encode(value)))
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {}", self.method, self.path).into_bytes();
        if let Some(query) = self.query() {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn expected_method(&self) -> Method {
        match self.method {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// Everything but RFC 3986 unreserved characters as %XX (upper-case hex).
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "PUT", "POST", "HEAD", "DELETE", "OPTIONS", "PATCH",
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9._~!$&'()*+,;=:@-]{0,12}|%[0-9A-F]{2}", 0..6)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn params() -> impl Strategy<Value = Option<Vec<(String, Vec<u8>)>>> {
    prop::option::of(
        prop::collection::btree_map(
            "[a-z][a-z0-9_]{0,8}",
            prop::collection::vec(any::<u8>(), 0..24),
            0..5,
        )
        .prop_map(|map| map.into_iter().collect()),
    )
}

/// A header value as httparse delimits it: visible ASCII, obs-text, and inner spaces or
/// tabs, but no whitespace at either end (httparse strips it).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let edge = prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff];
    let inner = prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff, Just(b' '), Just(b'\t')];
    prop_oneof![
        Just(Vec::new()),
        (edge.clone(), prop::collection::vec(inner, 0..60), edge).prop_map(
            |(first, mut mid, last)| {
                mid.insert(0, first);
                mid.push(last);
                mid
            }
        ),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        ("[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,20}", header_value()),
        0..30,
    )
}

fn generated() -> impl Strategy<Value = Generated> {
    (method(), path(), params(), headers()).prop_map(|(method, path, params, headers)| Generated {
        method,
        path,
        params,
        headers,
    })
}

/// The invariants every outcome must keep, whatever the input.
fn check_outcome(buf: &[u8], limits: &HeadLimits) -> Result<(), TestCaseError> {
    if let Ok(Some((_, len))) = parse_head(buf, limits) {
        prop_assert!(len <= buf.len(), "len {len} > buf {}", buf.len());
        prop_assert!(len <= limits.max_head_bytes, "len {len} over the cap");
        prop_assert!(len > 0);
    }
    Ok(())
}

fn assert_round_trip(gen: &Generated, head: &RequestHead) -> Result<(), TestCaseError> {
    prop_assert_eq!(head.method, gen.expected_method());
    prop_assert_eq!(&head.path, &gen.path);
    prop_assert_eq!(head.query.clone(), gen.query());
    prop_assert_eq!(head.minor_version, 1);
    let expected: Vec<(String, Vec<u8>)> = gen
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    prop_assert_eq!(&head.headers, &expected);
    for (name, value) in gen.params.iter().flatten() {
        prop_assert_eq!(head.query_param(name), Some(Ok(value.clone())));
    }
    Ok(())
}

proptest! {
    #[test]
    fn prop_random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..600)) {
        check_outcome(&buf, &HeadLimits::default())?;
    }

    #[test]
    fn prop_random_bytes_after_a_request_line_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut buf = b"GET /x?y=%zz HTTP/1.1\r\n".to_vec();
        buf.extend_from_slice(&tail);
        check_outcome(&buf, &HeadLimits::default())?;
        // Small limits reach the limit branches with short inputs.
        let small = HeadLimits { max_head_bytes: 64, max_headers: 2, max_header_value: 8 };
        check_outcome(&buf, &small)?;
    }

    #[test]
    fn prop_generated_heads_round_trip(
        gen in generated(),
        trailing in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let bytes = gen.to_bytes();
        prop_assume!(bytes.len() <= 8192);
        let mut buf = bytes.clone();
        buf.extend_from_slice(&trailing);
        match parse_head(&buf, &HeadLimits::default()) {
            Ok(Some((head, len))) => {
                prop_assert_eq!(len, bytes.len());
                assert_round_trip(&gen, &head)?;
            }
            other => prop_assert!(false, "expected a complete head, got {:?}", other),
        }
    }

    #[test]
    fn prop_truncated_valid_heads_are_incomplete(
        gen in generated(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = gen.to_bytes();
        prop_assume!(bytes.len() <= 8192);
        let prefix = bytes.get(..cut.index(bytes.len())).unwrap_or_default();
        let outcome = parse_head(prefix, &HeadLimits::default());
        prop_assert!(
            matches!(outcome, Ok(None)),
            "prefix {} of {}: {:?}",
            prefix.len(),
            bytes.len(),
            outcome
        );
    }

    #[test]
    fn prop_bit_flipped_valid_heads_never_panic(
        gen in generated(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
    ) {
        let mut bytes = gen.to_bytes();
        let len = bytes.len();
        for (at, bit) in flips {
            if let Some(b) = bytes.get_mut(at.index(len)) {
                *b ^= 1 << bit;
            }
        }
        check_outcome(&bytes, &HeadLimits::default())?;
        // Every prefix of a damaged head is handled too.
        for cut in (0..bytes.len()).step_by(7) {
            check_outcome(bytes.get(..cut).unwrap_or_default(), &HeadLimits::default())?;
        }
    }
}
