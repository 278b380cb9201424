//! Which rendezvous a request asks for: the path and method table of PROTOCOL §1–§6,
//! the required headers checked before any upgrade, and the route key that decides the
//! owner shard. Pure: no I/O, no registry.

use crate::config::Config;
use crate::http::head::{Method, RequestHead};
use crate::http::response;

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
}

impl Route {
    /// The route key whose owner shard serves this request; None: any shard will do.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Route::Binary { server_id } | Route::Phone { server_id, .. } => {
                Some(server_id.as_bytes())
            }
            Route::Health | Route::Echo => None,
        }
    }
}

/// A request refused before any upgrade: the response and the `/stats` reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Counted under `rejected` in `/stats`.
    pub reason: &'static str,
    /// The whole HTTP response.
    pub response: Vec<u8>,
}

impl Refusal {
    fn not_found() -> Self {
        Refusal {
            reason: "not_found",
            response: response::close_response(404, "text/plain", &[], b"not found\n"),
        }
    }

    fn method_not_allowed(allow: &str) -> Self {
        Refusal {
            reason: "method_not_allowed",
            response: response::close_response(
                405,
                "text/plain",
                &[("Allow", allow)],
                b"method not allowed\n",
            ),
        }
    }

    /// A required header is missing or empty: `400` with an empty body (pyrycode's shape).
    fn missing_header() -> Self {
        Refusal {
            reason: "missing_header",
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
        _ => Err(Refusal::not_found()),
    }
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
