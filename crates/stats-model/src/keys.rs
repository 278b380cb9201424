//! Every metric key the relay counts under, as enums: connection kinds, rendezvous
//! styles, refusal reasons, drop reasons, named events and registry gauges.
//!
//! Each enum spells its `/stats` key and `/metrics` label with [`name`](Event::name),
//! serialises as that name, and orders by it (so a `BTreeMap` keyed by an enum lists its
//! keys as a map keyed by the names would: the `/stats` body keeps its sorted keys). The
//! discriminants are dense from 0, so a key indexes a counter array directly.

/// What every key enum offers generically, for counters indexed by any of them.
pub trait Key: Copy + Eq + std::fmt::Debug + 'static {
    /// How many keys there are.
    const COUNT: usize;
    /// The key's slot: dense from 0, below [`Key::COUNT`].
    fn index(self) -> usize;
    /// The key as `/stats` and `/metrics` spell it.
    fn name(self) -> &'static str;
}

/// Defines a key enum: the variants and their names, `ALL`, `COUNT`, `name`, `index`,
/// `from_name`, name ordering and name (de)serialisation.
macro_rules! keys {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $( $(#[$vmeta:meta])* $var:ident => $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $( $(#[$vmeta])* $var, )+
        }

        impl $ty {
            /// Every key, in declaration order (the order of [`index`](Self::index)).
            pub const ALL: &'static [$ty] = &[ $( $ty::$var, )+ ];

            /// How many keys there are: the length of a counter array indexed by them.
            pub const COUNT: usize = Self::ALL.len();

            /// The key as `/stats` and `/metrics` spell it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $ty::$var => $name, )+
                }
            }

            /// The key's slot in a counter array: its declaration position, below
            /// [`COUNT`](Self::COUNT).
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The key spelled `name`, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $name => Some($ty::$var), )+
                    _ => None,
                }
            }
        }

        impl $crate::keys::Key for $ty {
            const COUNT: usize = $ty::COUNT;
            #[inline]
            fn index(self) -> usize {
                self as usize
            }
            fn name(self) -> &'static str {
                $ty::name(self)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.name())
            }
        }

        impl PartialOrd for $ty {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        /// By name, so maps keyed by the enum serialise in the names' order.
        impl Ord for $ty {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.name().cmp(other.name())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($ty), " name"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::from_name(v).ok_or_else(|| {
                            E::unknown_variant(v, &[ $( $name, )+ ])
                        })
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}

keys! {
    /// Kinds of open connection, for the `connections` object and the `kind` label.
    pub enum ConnKind {
        /// A binary holding, or claiming, a server-id slot.
        Binary => "binary",
        /// A phone attached to a server-id slot.
        Phone => "phone",
        /// One end of a pair.
        Pair => "pair",
        /// The host of a session.
        SessionHost => "session_host",
        /// A browser joined to a session.
        SessionBrowser => "session_browser",
        /// The uploading end of a ticket.
        TicketPut => "ticket_put",
        /// The downloading end of a ticket.
        TicketGet => "ticket_get",
        /// The diagnostic echo route.
        Echo => "echo",
        /// A connection still in its HTTP/upgrade handshake.
        Handshake => "handshake",
    }
}

keys! {
    /// Rendezvous styles, for `forward_by_mode` and the `mode` label.
    pub enum Style {
        /// Server-id slots: one binary, many phones.
        ServerId => "server_id",
        /// Two peers meeting on a pair code.
        Pair => "pair",
        /// A host and the browsers that joined its code.
        Session => "session",
        /// The all-WebSocket session style.
        SessionWs => "session_ws",
        /// The diagnostic echo route.
        Echo => "echo",
    }
}

keys! {
    /// Why a connection was refused before upgrade, or a WebSocket closed for a protocol
    /// fault: the keys of `rejected` and the `reason` label of `rejected_total`.
    pub enum Rejected {
        /// No such path.
        NotFound => "not_found",
        /// A path that does not take this method.
        MethodNotAllowed => "method_not_allowed",
        /// A required header is missing or empty.
        MissingHeader => "missing_header",
        /// Not a valid WebSocket upgrade.
        BadUpgrade => "bad_upgrade",
        /// The request head exceeded its limit.
        HeadTooLarge => "head_too_large",
        /// More headers than allowed.
        TooManyHeaders => "too_many_headers",
        /// A header value longer than allowed.
        HeaderValueTooLong => "header_value_too_long",
        /// A head that does not parse.
        MalformedHead => "malformed_head",
        /// Two `Content-Length` headers.
        DuplicateContentLength => "duplicate_content_length",
        /// A `Content-Length` that is not a number.
        BadContentLength => "bad_content_length",
        /// Two `Transfer-Encoding` headers.
        DuplicateTransferEncoding => "duplicate_transfer_encoding",
        /// No complete head within the handshake timeout.
        HandshakeTimeout => "handshake_timeout",
        /// At the connection cap.
        OverCapacity => "over_capacity",
        /// Too many connection attempts from one address.
        RateLimited => "rate_limited",
        /// A malformed pair code.
        BadPairCode => "bad_pair_code",
        /// A malformed session code.
        BadSessionCode => "bad_session_code",
        /// A third connection for a full pair.
        PairFull => "pair_full",
        /// A missing or mis-shaped ticket.
        BadTicket => "bad_ticket",
        /// A bad admin token.
        Unauthorized => "unauthorized",
        /// The relay is shutting down.
        ShuttingDown => "shutting_down",
        /// At the memory limit.
        MemoryLimit => "memory_limit",
        /// The runtime could not register an upgraded socket.
        RegisterFailed => "register_failed",
        /// A browser over the join rate limit.
        JoinRateLimited => "join_rate_limited",
        /// A ticket mint request whose body could not be read.
        BadMintBody => "bad_mint_body",
        /// A ticket mint refused (bad plan, caps).
        MintRefused => "mint_refused",
        /// A ticket PUT with unusable framing.
        BadTicketBody => "bad_ticket_body",
        /// No such ticket, or it expired.
        TicketNotFound => "ticket_not_found",
        /// The ticket's relay already finished.
        TicketFinished => "ticket_finished",
        /// That side of the ticket is already claimed.
        TicketSideClaimed => "ticket_side_claimed",
        /// A WebSocket protocol fault (close 1002).
        ProtocolError => "protocol_error",
        /// Text that is not UTF-8 (close 1007).
        InvalidUtf8 => "invalid_utf8",
        /// A message over the size limit (close 1009).
        MessageTooBig => "message_too_big",
        /// A PROXY protocol header missing, malformed, late or from an untrusted source
        /// (`--proxy-protocol`, PROTOCOL §1.2); which one is the `proxy_header_*` event.
        ProxyHeader => "proxy_header",
        /// A TLS handshake that failed, or plain HTTP on a TLS listener (PROTOCOL §1.1).
        TlsHandshake => "tls_handshake",
    }
}

keys! {
    /// Why a message was not forwarded: the keys of `dropped` and the `reason` label of
    /// `dropped_total`.
    pub enum Dropped {
        /// A data frame on a connection that is not a WebSocket.
        NotWebsocket => "not_websocket",
        /// A message from a connection with no role (pending or detached).
        Detached => "detached",
        /// A text message in a pair (binary only).
        TextInPair => "text_in_pair",
        /// A phone message that is not JSON.
        PhoneNotJson => "phone_not_json",
        /// A phone message while its slot is in grace.
        SlotInGrace => "slot_in_grace",
        /// A phone message while its binary is closing.
        BinaryClosing => "binary_closing",
        /// A binary message while its claim is pending.
        ClaimPending => "claim_pending",
        /// A binary envelope that does not parse.
        MalformedEnvelope => "malformed_envelope",
        /// An envelope addressed to no open phone.
        UnknownConnId => "unknown_conn_id",
        /// A phone's outbound queue is full.
        PhoneBacklogFull => "phone_backlog_full",
        /// A message for a phone that is closing.
        PhoneClosing => "phone_closing",
        /// A session message that does not parse or is not allowed.
        SessionInvalidMessage => "session_invalid_message",
        /// A session message from a browser that has not joined.
        SessionNotJoined => "session_not_joined",
        /// Text from the mac in a WebSocket session (ignored).
        WsMacTextIgnored => "ws_mac_text_ignored",
        /// A mac message with no browser attached.
        WsNoBrowsers => "ws_no_browsers",
        /// A mac message for a browser that is closing.
        WsBrowserClosing => "ws_browser_closing",
        /// A browser message with no mac.
        WsNoMac => "ws_no_mac",
        /// A browser's session id is too long.
        WsSessionIdTooLong => "ws_session_id_too_long",
        /// Text from a browser in a WebSocket session (ignored).
        WsBrowserTextIgnored => "ws_browser_text_ignored",
        /// A browser message while the mac is closing.
        WsMacClosing => "ws_mac_closing",
        /// The mac's queue from browsers is full.
        WsBrowserBacklogFull => "ws_browser_backlog_full",
    }
}

keys! {
    /// Other named counts: the keys of `events` and the `name` label of `events_total`.
    pub enum Event {
        /// The accept loop got an error from the kernel.
        AcceptErrors => "accept_errors",
        /// A connection closed by the stall clock (not reading).
        NotReading => "not_reading",
        /// A connection closed for missing heartbeats.
        HeartbeatTimeouts => "heartbeat_timeouts",
        /// A connection's reads paused for backpressure.
        ReadsPaused => "reads_paused",
        /// A connection's reads waited for the next second: it spent its control-frame
        /// (ping and pong) budget.
        ReadsPaced => "reads_paced",
        /// A PROXY `LOCAL` header (the balancer's own check): the socket peer stands.
        ProxyHeaderLocal => "proxy_header_local",
        /// A connection from outside `--trusted-proxies` with `--proxy-protocol` on.
        ProxyHeaderUntrusted => "proxy_header_untrusted",
        /// A PROXY header that did not parse.
        ProxyHeaderMalformed => "proxy_header_malformed",
        /// A PROXY header longer than the protocol allows.
        ProxyHeaderTooLong => "proxy_header_too_long",
        /// A connection closed before its PROXY header was whole.
        ProxyHeaderMissing => "proxy_header_missing",
        /// A PROXY header not whole within the handshake timeout.
        ProxyHeaderLate => "proxy_header_late",
        /// A binary's claim refused (slot held).
        ClaimsRefused => "claims_refused",
        /// A binary took over a slot.
        Takeovers => "takeovers",
        /// A phone arrived with no server.
        PhonesNoServer => "phones_no_server",
        /// A phone over the per-slot cap.
        PhonesOverCap => "phones_over_cap",
        /// A push-wake command.
        PushWake => "push_wake",
        /// A pair's first end arrived.
        PairsCreated => "pairs_created",
        /// A pair's second end arrived.
        PairsMatched => "pairs_matched",
        /// A pair expired unmatched.
        PairsExpired => "pairs_expired",
        /// A session code minted.
        CodesMinted => "codes_minted",
        /// A session code expired.
        CodesExpired => "codes_expired",
        /// A session host expired.
        HostsExpired => "hosts_expired",
        /// A browser moved to the code's owner shard.
        BrowserHandoffs => "browser_handoffs",
        /// A browser joined a session.
        JoinsOk => "joins_ok",
        /// A join with an invalid code.
        JoinsInvalidCode => "joins_invalid_code",
        /// A join with an expired code.
        JoinsExpiredCode => "joins_expired_code",
        /// A join over the rate limit.
        JoinsRateLimited => "joins_rate_limited",
        /// A second join from a joined browser.
        JoinsAlreadyJoined => "joins_already_joined",
        /// A join over the per-session browser cap.
        JoinsTooMany => "joins_too_many",
        /// A WebSocket-session code minted.
        WsCodesMinted => "ws_codes_minted",
        /// A browser moved to the WebSocket session's owner shard.
        WsBrowserHandoffs => "ws_browser_handoffs",
        /// A browser authenticated to a WebSocket session.
        WsAuthsOk => "ws_auths_ok",
        /// An auth with an invalid code.
        WsAuthInvalidCode => "ws_auth_invalid_code",
        /// An auth to a full session.
        WsAuthSessionFull => "ws_auth_session_full",
        /// An auth without a browser id.
        WsAuthNoBrowserId => "ws_auth_no_browser_id",
        /// An auth over the rate limit.
        WsAuthRateLimited => "ws_auth_rate_limited",
        /// A browser joined by message a code another node minted: handed to that node
        /// through a pipe (PROTOCOL §9).
        ForwardedToNode => "forwarded_to_node",
        /// A first message that is not a valid hello.
        WsFirstMessageRefused => "ws_first_message_refused",
        /// No first message within the timeout.
        WsFirstMessageTimeouts => "ws_first_message_timeouts",
        /// A ticket minted.
        TicketsMinted => "tickets_minted",
        /// A ticket relayed to the end.
        TicketsOk => "tickets_ok",
        /// A ticket body over its size.
        TicketsTooLarge => "tickets_too_large",
        /// A ticket's PUT broke off.
        TicketsPutAborted => "tickets_put_aborted",
        /// A ticket's GET broke off.
        TicketsGetAborted => "tickets_get_aborted",
        /// A ticket refused or aborted at shutdown.
        TicketsShutdown => "tickets_shutdown",
        /// A ticket side waited too long for its peer.
        TicketsTimedOut => "tickets_timed_out",
        /// A ticket expired unused.
        TicketsExpiredUnused => "tickets_expired_unused",
    }
}

keys! {
    /// Registry sizes: the keys of `gauges` and the `name` label of `registry`.
    pub enum Gauge {
        /// Server-id slots.
        ServerSlots => "server_slots",
        /// Pairs.
        Pairs => "pairs",
        /// Sessions.
        Sessions => "sessions",
        /// WebSocket sessions.
        WsSessions => "ws_sessions",
        /// Tickets.
        Tickets => "tickets",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names distinct, indexes dense, and `from_name` the inverse of `name`.
    fn check<K: Copy + PartialEq + std::fmt::Debug>(
        all: &[K],
        name: fn(K) -> &'static str,
        index: fn(K) -> usize,
        from: fn(&str) -> Option<K>,
    ) {
        let mut names: Vec<&str> = all.iter().map(|&k| name(k)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for (i, &k) in all.iter().enumerate() {
            assert_eq!(index(k), i);
            assert_eq!(from(name(k)), Some(k));
        }
        assert_eq!(from("no_such_key"), None);
    }

    #[test]
    fn every_key_enum_has_distinct_names_and_dense_indexes() {
        check(
            ConnKind::ALL,
            ConnKind::name,
            ConnKind::index,
            ConnKind::from_name,
        );
        check(Style::ALL, Style::name, Style::index, Style::from_name);
        check(
            Rejected::ALL,
            Rejected::name,
            Rejected::index,
            Rejected::from_name,
        );
        check(
            Dropped::ALL,
            Dropped::name,
            Dropped::index,
            Dropped::from_name,
        );
        check(Event::ALL, Event::name, Event::index, Event::from_name);
        check(Gauge::ALL, Gauge::name, Gauge::index, Gauge::from_name);
    }

    #[test]
    fn keys_order_and_serialise_by_name() {
        assert!(ConnKind::Binary < ConnKind::Echo);
        let map: std::collections::BTreeMap<ConnKind, u64> =
            [(ConnKind::Phone, 1), (ConnKind::Binary, 2)]
                .into_iter()
                .collect();
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, r#"{"binary":2,"phone":1}"#);
        let back: std::collections::BTreeMap<ConnKind, u64> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, map);
        let err = serde_json::from_str::<Event>(r#""nope""#).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}
