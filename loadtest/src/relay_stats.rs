//! The relay's own view: `GET /stats` on the admin listener (plain blocking HTTP/1.1,
//! `Connection: close`, after the workers are done), and the latency histograms
//! picked out of it for printing beside the client's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::http::{self, Dechunker, Framing};

/// Limit for connecting to, and each read from, the admin listener.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/stats` body accepted (per-shard sections for many shards fit easily).
const MAX_STATS_BYTES: u64 = 16 << 20;
/// The histograms PROTOCOL §7 promises under `totals.histograms`.
pub const RELAY_HISTOGRAMS: [&str; 3] = ["forward", "handshake", "handoff"];

/// Fetches and parses `/stats`.
pub fn fetch(admin: SocketAddr, token: Option<&str>) -> Result<Value, String> {
    let mut stream = TcpStream::connect_timeout(&admin, FETCH_TIMEOUT)
        .map_err(|e| format!("connect {admin}: {e}"))?;
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(FETCH_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    let request = http::request_head("GET", &admin.to_string(), "/stats", &headers, None);
    stream
        .write_all(&request)
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .take(MAX_STATS_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

/// The JSON body of a complete `/stats` response.
fn parse_response(raw: &[u8]) -> Result<Value, String> {
    let head = http::parse_head(raw)
        .map_err(|e| e.to_string())?
        .ok_or("incomplete response head")?;
    if head.status != 200 {
        return Err(format!("/stats answered {}", head.status));
    }
    let rest = &raw[head.len..];
    let body = match head.framing {
        Framing::Length(n) => rest
            .get(..n as usize)
            .ok_or("body shorter than Content-Length")?
            .to_vec(),
        Framing::UntilClose => rest.to_vec(),
        Framing::Chunked => {
            let mut body = Vec::new();
            Dechunker::default()
                .feed(rest, &mut |b| body.extend_from_slice(b))
                .map_err(|e| e.to_string())?;
            body
        }
    };
    serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))
}

/// `totals.histograms.<name>` of a `/stats` body, if present.
pub fn histogram<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats.get("totals")?.get("histograms")?.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let body = r#"{"totals":{"histograms":{"forward":{"count":3,"p50":10}}}}"#;
        let plain = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let value = parse_response(plain.as_bytes()).unwrap();
        assert_eq!(histogram(&value, "forward").unwrap()["p50"], 10);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        assert_eq!(parse_response(chunked.as_bytes()).unwrap(), value);
        assert!(histogram(&value, "handoff").is_none());
        assert!(parse_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n").is_err());
    }
}
