//! The real client address behind a load balancer (PROTOCOL §1.2): the trusted-proxy
//! list (`--trusted-proxies`), the PROXY protocol header (v1 and v2, `--proxy-protocol`)
//! read before any other byte of a public connection, and the `X-Forwarded-For` walk
//! (`--trust-forwarded-for`).
//!
//! Parsing the header is the `ppp` crate's job (see `docs/architecture.md`, dependency
//! notes); this module only bounds it (size, and the caller's deadline), decides what the
//! header means for the client address, and hands on the bytes read past it. It knows
//! nothing of shards or rendezvous: the accept path calls [`read_header`] as one step
//! that turns a socket and its kernel peer into the client address plus early bytes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::str::FromStr;

use monoio::net::TcpStream;
use ppp::{v1, v2, HeaderResult, PartialResult};

use crate::sys;

/// Largest PROXY header accepted, in bytes. A v1 header is at most 107 bytes; a v2
/// header is 16 bytes, at most 216 of addresses (`AF_UNIX`) and whatever TLVs the
/// balancer adds (ALPN, authority ≤ 255, unique id ≤ 128, SSL and cloud endpoint ids):
/// a few hundred bytes in practice. 4 KiB leaves room for all of these while a
/// balancer that claims the format's 64 KiB maximum is refused rather than buffered.
pub const MAX_HEADER: usize = 4096;

/// Bytes asked of the kernel per read while a header is incomplete: a whole v1 header
/// or a v2 header with its usual TLVs in one read.
const HEADER_READ: usize = 512;

/// Why a connection's PROXY header was refused (each is closed without an answer and
/// counted as `rejected{reason="proxy_header"}` plus a `proxy_header_*` event naming the failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The socket peer is not in `--trusted-proxies`.
    #[error("PROXY header from an untrusted address")]
    Untrusted,
    /// The bytes are not a PROXY v1 or v2 header (e.g. a plain HTTP request).
    #[error("malformed or missing PROXY header")]
    Malformed,
    /// The header claims more than [`MAX_HEADER`] bytes.
    #[error("PROXY header over {max} bytes")]
    TooLong {
        /// The cap, [`MAX_HEADER`].
        max: usize,
    },
    /// The connection ended (or failed) before a whole header arrived.
    #[error("connection closed before a whole PROXY header")]
    Closed,
    /// The header was not complete within the handshake timeout (set by the caller).
    #[error("PROXY header not complete in time")]
    Late,
}

/// What a whole PROXY header says about its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource {
    /// A proxied connection from this client (v1 `TCP4`/`TCP6`, v2 `PROXY` over IPv4/IPv6).
    Client(SocketAddr),
    /// The balancer speaking for itself: v2 `LOCAL` (its health checks), v1 `UNKNOWN`,
    /// or a v2 address family with no IP address. The socket peer stands.
    Local,
}

/// Parse a PROXY header at the start of `buf`: `Ok(None)` while it is incomplete,
/// else what it says and its length in bytes (the bytes after it are the client's).
pub fn parse_header(buf: &[u8]) -> Result<Option<(HeaderSource, usize)>, ProxyHeaderError> {
    if v1_line_incomplete(buf) {
        return Ok(None);
    }
    let parsed = HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(ProxyHeaderError::TooLong { max: MAX_HEADER })
        } else {
            Ok(None)
        };
    }
    let (source, len) = match parsed {
        HeaderResult::V1(Ok(header)) => (v1_source(&header.addresses), header.header.len()),
        HeaderResult::V2(Ok(header)) => (v2_source(&header), header.len()),
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
            return Err(ProxyHeaderError::Malformed)
        }
    };
    if len > MAX_HEADER {
        return Err(ProxyHeaderError::TooLong { max: MAX_HEADER });
    }
    Ok(Some((source, len)))
}

/// Longest v1 header line, `\r\n` included (the format's own bound).
const V1_MAX: usize = 107;

/// A v1 header whose line has not ended yet. `ppp` reads a line cut right after a
/// separator (`… 4711 `) as an empty, invalid port rather than as incomplete, and a
/// TCP segment may end there; so a v1 line is parsed only once its `\n` is in (or it has
/// reached the format's maximum, where `ppp` refuses it).
fn v1_line_incomplete(buf: &[u8]) -> bool {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n] && buf.len() < V1_MAX && !buf.contains(&b'\n')
}

/// The client of a v1 header.
fn v1_source(addresses: &v1::Addresses) -> HeaderSource {
    match addresses {
        v1::Addresses::Tcp4(a) => HeaderSource::Client((a.source_address, a.source_port).into()),
        v1::Addresses::Tcp6(a) => HeaderSource::Client((a.source_address, a.source_port).into()),
        v1::Addresses::Unknown => HeaderSource::Local,
    }
}

/// The client of a v2 header.
fn v2_source(header: &v2::Header<'_>) -> HeaderSource {
    if header.command == v2::Command::Local {
        return HeaderSource::Local;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => HeaderSource::Client((a.source_address, a.source_port).into()),
        v2::Addresses::IPv6(a) => HeaderSource::Client((a.source_address, a.source_port).into()),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => HeaderSource::Local,
    }
}

/// A connection whose PROXY header was read and accepted.
#[derive(Debug)]
pub struct Arrival {
    /// The client's address: the header's source, or the socket peer for `LOCAL`.
    pub client: SocketAddr,
    /// Bytes the client sent after the header (read together with it); they come
    /// before anything still in the socket.
    pub early: Vec<u8>,
    /// The header was `LOCAL` (or named no IP client): `client` is the socket peer.
    pub local: bool,
}

/// Read the PROXY header that opens a connection from `peer` (PROTOCOL §1.2), reading
/// no further than the kernel hands over with it. The caller bounds the time (a late
/// header is [`ProxyHeaderError::Late`]) and checks `peer` against the trusted list
/// first ([`TrustedProxies::check_peer`]).
pub async fn read_header(
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<Arrival, ProxyHeaderError> {
    let mut buf = Vec::new();
    // Charged to the memory budget while it is read, like a request head (PROTOCOL §2.1).
    let mut held = crate::memory::Held::default();
    loop {
        stream
            .readable(false)
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        loop {
            let room = MAX_HEADER.saturating_sub(buf.len()).clamp(1, HEADER_READ);
            match sys::recv_into(stream.as_raw_fd(), &mut buf, room) {
                Ok(0) => return Err(ProxyHeaderError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(ProxyHeaderError::Closed),
            }
            held.set(buf.capacity());
            if let Some((source, len)) = parse_header(&buf)? {
                let (client, local) = match source {
                    HeaderSource::Client(addr) => (addr, false),
                    HeaderSource::Local => (peer, true),
                };
                let early = buf.split_off(len);
                return Ok(Arrival {
                    client,
                    early,
                    local,
                });
            }
        }
    }
}

/// One `--trusted-proxies` entry: an address block in CIDR notation (`10.0.0.0/8`,
/// `2001:db8::/32`), or one address (`127.0.0.1`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address (host bits cleared).
    network: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("`{0}` is not an IP address or CIDR block (e.g. 10.0.0.0/8, ::1/128)")]
    Address(String),
    /// The prefix length is not a number within the family's width.
    #[error("`{0}`: the prefix length must be 0..=32 for IPv4, 0..=128 for IPv6")]
    Prefix(String),
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| CidrError::Prefix(text.to_owned()))?,
        };
        Ok(Cidr {
            network: masked(addr, prefix),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `addr` with every bit past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl Cidr {
    /// Is `ip` inside this block? IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && masked(ip, self.prefix) == self.network
    }
}

/// The balancers in front (`--trusted-proxies`): the only peers whose PROXY header or
/// `X-Forwarded-For` the relay believes.
#[derive(Debug, Clone, Copy)]
pub struct TrustedProxies<'a>(pub &'a [Cidr]);

impl TrustedProxies<'_> {
    /// Is `ip` one of the trusted proxies?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// Under `--proxy-protocol`, only a trusted proxy may open a public connection.
    pub fn check_peer(&self, peer: SocketAddr) -> Result<(), ProxyHeaderError> {
        if self.contains(peer.ip()) {
            Ok(())
        } else {
            Err(ProxyHeaderError::Untrusted)
        }
    }

    /// The client behind `X-Forwarded-For` (PROTOCOL §1.2), for a request that came from
    /// `hop` (the socket peer, or the PROXY header's source). `values` are the header's
    /// field values in the order they appear in the request (their lists concatenate).
    ///
    /// Only a trusted `hop` is believed: then the client is the right-most listed
    /// address that is not itself a trusted proxy. Each trusted proxy appended the
    /// address it saw, so everything right of that entry was written by trusted hops and
    /// everything left of it by the client, who may lie. When the walk meets an entry
    /// that is not an address (`unknown`, garbage), or every entry is a trusted proxy,
    /// the client is the last trusted hop it reached. From an untrusted `hop` the header
    /// is ignored and `hop` is the client.
    pub fn forwarded_client<'v>(
        &self,
        hop: IpAddr,
        values: impl Iterator<Item = &'v [u8]>,
    ) -> IpAddr {
        if !self.contains(hop) {
            return hop;
        }
        let entries: Vec<&[u8]> = values.flat_map(|v| v.split(|&b| b == b',')).collect();
        let mut client = hop;
        for entry in entries.iter().rev() {
            let Some(ip) = forwarded_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` list entry as an address: `203.0.113.7`, `2001:db8::1`, or
/// with a port as some balancers write it (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn forwarded_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|c| c.parse().expect("valid cidr"))
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid ip")
    }

    #[test]
    fn cidr_blocks_parse_and_contain_their_addresses() {
        let list = cidrs(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"]);
        let trusted = TrustedProxies(&list);
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("192.168.1.7")));
        assert!(!trusted.contains(ip("192.168.1.8")));
        assert!(trusted.contains(ip("2001:db8:ffff::9")));
        assert!(trusted.contains(ip("::1")));
        assert!(!trusted.contains(ip("11.0.0.1")));
        assert!(
            trusted.contains(ip("::ffff:10.1.1.1")),
            "mapped IPv4 counts as IPv4"
        );
        assert_eq!(list[0].to_string(), "10.0.0.0/8");
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn bad_cidr_entries_are_refused_with_a_reason() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "nonsense",
            "10.0.0/8",
            "10.0.0.0/x",
            "",
        ] {
            let err = bad.parse::<Cidr>().expect_err(bad);
            assert!(err.to_string().contains(bad.trim()), "{err}");
        }
    }

    #[test]
    fn v1_tcp4_header_gives_the_client_and_its_length() {
        let buf = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 8080\r\nGET / HTTP/1.1\r\n";
        let (source, len) = parse_header(buf).unwrap().unwrap();
        assert_eq!(
            source,
            HeaderSource::Client("203.0.113.7:4711".parse().unwrap())
        );
        assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v1_unknown_header_leaves_the_socket_peer() {
        let (source, len) = parse_header(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!((source, len), (HeaderSource::Local, 15));
    }

    #[test]
    fn v2_tcp6_and_local_headers_parse() {
        let src: SocketAddr = "[2001:db8::7]:4711".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse_header(&header).unwrap(),
            Some((HeaderSource::Client(src), header.len()))
        );
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(
            parse_header(&local).unwrap(),
            Some((HeaderSource::Local, 16))
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_malformed() {
        let full = b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 8080\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_header(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ProxyHeaderError::Malformed)
        );
        assert_eq!(
            parse_header(b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n"),
            Err(ProxyHeaderError::Malformed)
        );
    }

    #[test]
    fn a_v2_header_claiming_more_than_the_cap_is_refused() {
        let mut buf = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
        buf.resize(MAX_HEADER, 0);
        assert_eq!(
            parse_header(&buf),
            Err(ProxyHeaderError::TooLong { max: MAX_HEADER })
        );
    }

    #[test]
    fn forwarded_for_walks_from_the_right_past_trusted_hops() {
        let list = cidrs(&["10.0.0.0/8"]);
        let trusted = TrustedProxies(&list);
        let walk = |hop: &str, values: &[&str]| {
            trusted.forwarded_client(ip(hop), values.iter().map(|v| v.as_bytes()))
        };
        // The client's own claim (1.1.1.1) is left of the address the balancer saw.
        assert_eq!(
            walk("10.0.0.2", &["1.1.1.1, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            walk("10.0.0.2", &["1.1.1.1", "203.0.113.7, 10.0.0.9"]),
            ip("203.0.113.7")
        );
        assert_eq!(walk("10.0.0.2", &["[2001:db8::5]:99"]), ip("2001:db8::5"));
        // Every entry trusted: the left-most trusted hop; garbage stops the walk.
        assert_eq!(walk("10.0.0.2", &["10.0.0.5, 10.0.0.9"]), ip("10.0.0.5"));
        assert_eq!(
            walk("10.0.0.2", &["1.1.1.1, unknown, 10.0.0.9"]),
            ip("10.0.0.9")
        );
        assert_eq!(walk("10.0.0.2", &[]), ip("10.0.0.2"));
        // From an untrusted peer the header is ignored.
        assert_eq!(walk("203.0.113.9", &["1.1.1.1"]), ip("203.0.113.9"));
    }
}
