//! Property tests for the PROXY header step (PROTOCOL §1.2): hostile bytes never panic
//! or claim more bytes than they were given; every strict prefix of a generated v1 or v2
//! header asks for more; a whole header followed by any bytes gives back its client and
//! exactly its own length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use shardrelay::proxy::{parse_header, HeaderSource, MAX_HEADER};

/// A v1 header line for `src` (both addresses of one family).
fn v1(src: SocketAddr) -> Vec<u8> {
    let (family, dst) = match src.ip() {
        IpAddr::V4(_) => ("TCP4", "127.0.0.1"),
        IpAddr::V6(_) => ("TCP6", "::1"),
    };
    format!("PROXY {family} {} {dst} {} 8080\r\n", src.ip(), src.port()).into_bytes()
}

/// A v2 `PROXY` header for `src`, with `tlv` bytes of TLVs (a NOOP TLV) appended.
fn v2(src: SocketAddr, tlv: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match src.ip() {
        IpAddr::V4(ip) => {
            body.extend_from_slice(&ip.octets());
            body.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
            0x11
        }
        IpAddr::V6(ip) => {
            body.extend_from_slice(&ip.octets());
            body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&8080u16.to_be_bytes());
    if tlv >= 3 {
        body.push(0x04); // PP2_TYPE_NOOP
        body.extend_from_slice(&((tlv - 3) as u16).to_be_bytes());
        body.resize(body.len() + tlv - 3, 0);
    }
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, family]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

fn client() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| (Ipv4Addr::from(ip), port).into()),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| (Ipv6Addr::from(ip), port).into()),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_overclaim(data in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, len))) = parse_header(&data) {
            prop_assert!(len <= data.len());
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_signature_never_panic(
        tail in prop::collection::vec(any::<u8>(), 0..300),
        v1_text in any::<bool>(),
    ) {
        let mut data = if v1_text { b"PROXY ".to_vec() } else { b"\r\n\r\n\0\r\nQUIT\n".to_vec() };
        data.extend_from_slice(&tail);
        if let Ok(Some((_, len))) = parse_header(&data) {
            prop_assert!(len <= data.len());
        }
    }

    #[test]
    fn v1_and_v2_headers_round_trip_and_their_prefixes_wait(
        src in client(),
        tlv in 0usize..200,
        use_v2 in any::<bool>(),
        after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = if use_v2 { v2(src, tlv) } else { v1(src) };
        for cut in 0..header.len() {
            prop_assert_eq!(parse_header(&header[..cut]), Ok(None), "cut at {}", cut);
        }
        let whole = [header.as_slice(), &after].concat();
        prop_assert_eq!(
            parse_header(&whole),
            Ok(Some((HeaderSource::Client(src), header.len())))
        );
        prop_assert!(header.len() <= MAX_HEADER);
    }
}
