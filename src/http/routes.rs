//! Which rendezvous a request asks for: the path and method table of PROTOCOL §1–§6,
//! the required headers checked before any upgrade, and the route key that decides the
//! owner shard. Pure: no I/O, no registry.

use crate::config::Config;
use crate::http::head::{Method, RequestHead};
use crate::http::response;
use crate::stats::Rejected;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`, `GET /healthz`: answered by the accepting shard.
    Health,
    /// `GET /v1/server`: a binary claims a server-id.
    Binary {
        /// The `X-Pyrycode-Server` value: the route key.
        server_id: String,
    },
    /// `GET /v1/client`: a phone attaches to a server-id.
    Phone {
        /// The `X-Pyrycode-Server` value: the route key.
        server_id: String,
        /// `X-Pyrycode-Device-Name`, if sent (logged escaped and capped, never trusted).
        device_name: Option<String>,
    },
    /// `GET /v1/echo` with `--enable-echo`: the diagnostic echo.
    Echo,
    /// `GET /?pair=<code>` or `GET /v1/pair?pair=<code>`: one side of a pair.
    Pair {
        /// The percent-decoded pair code (1–256 bytes): the route key.
        code: Vec<u8>,
    },
    /// `GET /mac` or `GET /v1/session/host`: a session host (its code is minted on the
    /// shard that accepted it, so it never moves).
    SessionHost,
    /// `GET /browser` or `GET /v1/session/join`: a session browser, joining at once with
    /// `?code=` or later by message.
    SessionJoin {
        /// The upper-cased `?code=` value, if given: the route key.
        code: Option<String>,
    },
    /// `GET /ws`: the session-code protocol's second version (a Mac or a browser,
    /// decided by the first message); it stays where it landed until a browser's `auth`
    /// names a code another shard owns.
    SessionWs,
    /// `PUT /v1/relay`: the sending side of a ticket.
    TicketPut {
        /// The bearer ticket (shape-checked): the route key.
        ticket: String,
    },
    /// `POST /v1/tickets` on a cluster node's public listener: a ticket mint another
    /// node handed here because this node owns the workspace (PROTOCOL §9). Served only
    /// with the admin token; answered as the admin listener answers a mint.
    NodeMint,
    /// `GET /v1/relay`: the receiving side of a ticket.
    TicketGet {
        /// The bearer ticket (shape-checked): the route key.
        ticket: String,
    },
}

impl Route {
    /// The route key whose owner shard serves this request; None: any shard will do.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Route::Binary { server_id } | Route::Phone { server_id, .. } => {
                Some(server_id.as_bytes())
            }
            Route::Pair { code } => Some(code),
            Route::SessionJoin { code: Some(code) } => Some(code.as_bytes()),
            Route::TicketPut { ticket } | Route::TicketGet { ticket } => Some(ticket.as_bytes()),
            Route::Health
            | Route::NodeMint
            | Route::Echo
            | Route::SessionHost
            | Route::SessionWs
            | Route::SessionJoin { code: None } => None,
        }
    }

    /// True for routes that upgrade to WebSocket (tickets stay plain HTTP).
    pub fn is_websocket(&self) -> bool {
        !matches!(
            self,
            Route::Health | Route::NodeMint | Route::TicketPut { .. } | Route::TicketGet { .. }
        )
    }
}

/// A request refused before any upgrade: the response and the `/stats` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Counted under `rejected` in `/stats`.
    pub reason: Rejected,
    /// The whole HTTP response.
    pub response: Vec<u8>,
}

impl Refusal {
    fn not_found() -> Self {
        Refusal {
            reason: Rejected::NotFound,
            response: response::close_response(404, "text/plain", &[], b"not found\n"),
        }
    }

    fn method_not_allowed(allow: &str) -> Self {
        Refusal {
            reason: Rejected::MethodNotAllowed,
            response: response::close_response(
                405,
                "text/plain",
                &[("Allow", allow)],
                b"method not allowed\n",
            ),
        }
    }

    /// A third connection for a pair that has both sides (arc-relay's 409).
    pub fn pair_full() -> Self {
        Refusal {
            reason: Rejected::PairFull,
            response: response::close_response(409, "text/plain", &[], b"pair is full"),
        }
    }

    /// A malformed request parameter: `400` with a short body.
    fn bad_request(reason: Rejected, body: &'static str) -> Self {
        Refusal {
            reason,
            response: response::close_response(400, "text/plain", &[], body.as_bytes()),
        }
    }

    /// A missing or mis-shaped ticket: `401`.
    fn bad_ticket() -> Self {
        Refusal {
            reason: Rejected::BadTicket,
            response: response::close_response(
                401,
                "application/json",
                &[("WWW-Authenticate", "Bearer")],
                br#"{"error":"missing or malformed ticket"}"#,
            ),
        }
    }

    /// A required header is missing or empty: `400` with an empty body (pyrycode's shape).
    fn missing_header() -> Self {
        Refusal {
            reason: Rejected::MissingHeader,
            response: response::close_response(400, "text/plain", &[], b""),
        }
    }
}

/// Headers a binary must send (PROTOCOL §3.1).
const BINARY_HEADERS: [&str; 3] = ["x-pyrycode-server", "x-pyrycode-version", "user-agent"];

/// Headers a phone must send (PROTOCOL §3.2). The token is checked for presence only.
const PHONE_HEADERS: [&str; 3] = ["x-pyrycode-server", "x-pyrycode-token", "user-agent"];

/// Classify a public-listener request.
pub fn classify(head: &RequestHead, config: &Config) -> Result<Route, Refusal> {
    match head.path.as_str() {
        "/health" | "/healthz" => {
            require_get(head)?;
            Ok(Route::Health)
        }
        "/v1/server" => {
            require_get(head)?;
            require_headers(head, &BINARY_HEADERS)?;
            Ok(Route::Binary {
                server_id: server_id(head),
            })
        }
        "/v1/client" => {
            require_get(head)?;
            require_headers(head, &PHONE_HEADERS)?;
            Ok(Route::Phone {
                server_id: server_id(head),
                device_name: head.header("x-pyrycode-device-name").map(str::to_owned),
            })
        }
        "/v1/echo" if config.enable_echo => {
            require_get(head)?;
            Ok(Route::Echo)
        }
        "/" | "/v1/pair" => {
            require_get(head)?;
            Ok(Route::Pair {
                code: pair_code(head)?,
            })
        }
        "/mac" | "/v1/session/host" => {
            require_get(head)?;
            Ok(Route::SessionHost)
        }
        "/browser" | "/v1/session/join" => {
            require_get(head)?;
            Ok(Route::SessionJoin {
                code: session_code(head)?,
            })
        }
        "/ws" => {
            require_get(head)?;
            Ok(Route::SessionWs)
        }
        "/v1/relay" => ticket_route(head),
        "/v1/tickets" if config.node_id.is_some() => {
            if head.method != Method::Post {
                return Err(Refusal::method_not_allowed("POST"));
            }
            Ok(Route::NodeMint)
        }
        _ => Err(Refusal::not_found()),
    }
}

/// Longest pair code, in bytes after percent-decoding.
const MAX_PAIR_CODE: usize = 256;

/// The `pair` query value: present, valid percent-encoding, 1–256 bytes decoded.
fn pair_code(head: &RequestHead) -> Result<Vec<u8>, Refusal> {
    match head.query_param("pair") {
        Some(Ok(code)) if !code.is_empty() && code.len() <= MAX_PAIR_CODE => Ok(code),
        _ => Err(Refusal::bad_request(
            Rejected::BadPairCode,
            "pair code must be 1-256 bytes\n",
        )),
    }
}

/// The optional `?code=` of a joining browser, upper-cased (joins accept lower case).
fn session_code(head: &RequestHead) -> Result<Option<String>, Refusal> {
    match head.query_param("code") {
        None => Ok(None),
        Some(Ok(code)) => match String::from_utf8(code) {
            Ok(code) if !code.is_empty() => Ok(Some(code.to_ascii_uppercase())),
            _ => Err(Refusal::bad_request(
                Rejected::BadSessionCode,
                "bad session code\n",
            )),
        },
        Some(Err(_)) => Err(Refusal::bad_request(
            Rejected::BadSessionCode,
            "bad session code\n",
        )),
    }
}

/// `PUT /v1/relay` or `GET /v1/relay` with `Authorization: Bearer rly_…`.
fn ticket_route(head: &RequestHead) -> Result<Route, Refusal> {
    let method = head.method;
    if method != Method::Put && method != Method::Get {
        return Err(Refusal::method_not_allowed("GET, PUT"));
    }
    let ticket = head
        .header("authorization")
        .and_then(crate::http::auth::bearer_token)
        .filter(|t| is_ticket_shaped(t))
        .ok_or_else(Refusal::bad_ticket)?
        .to_owned();
    Ok(if method == Method::Put {
        Route::TicketPut { ticket }
    } else {
        Route::TicketGet { ticket }
    })
}

/// `rly_` followed by 43 base64url characters (32 bytes, unpadded).
pub fn is_ticket_shaped(token: &str) -> bool {
    token.strip_prefix("rly_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The server-id route key (presence already checked).
fn server_id(head: &RequestHead) -> String {
    head.header("x-pyrycode-server")
        .unwrap_or_default()
        .to_owned()
}

/// Only GET upgrades (and GET health probes).
fn require_get(head: &RequestHead) -> Result<(), Refusal> {
    if head.method == Method::Get {
        Ok(())
    } else {
        Err(Refusal::method_not_allowed("GET"))
    }
}

/// Every named header present and non-empty.
fn require_headers(head: &RequestHead, names: &[&str]) -> Result<(), Refusal> {
    if names.iter().all(|name| head.has_nonempty(name)) {
        Ok(())
    } else {
        Err(Refusal::missing_header())
    }
}

/// Headers that carry a credential the relay only checks for presence.
const COURIER_CREDENTIALS: [&str; 1] = ["x-pyrycode-token"];

/// Remove courier credentials from a head once its route is decided.
pub fn drop_credentials(head: &mut RequestHead) {
    head.headers
        .retain(|(name, _)| !COURIER_CREDENTIALS.contains(&name.as_str()));
}
