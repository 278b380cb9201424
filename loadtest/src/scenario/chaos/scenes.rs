//! The WebSocket routes as the chaos client sets them up: a *scene* is a working
//! route (messages checked both ways) with one connection chosen as the victim of a
//! fault and, where the route has one, a watcher — the connection on the other side,
//! which must learn of the victim's end the way PROTOCOL §3–§5 say.

use std::time::Instant;

use serde_json::{json, Value};

use super::client::{Incoming, WsClient};
use super::Ctx;
use crate::cli::ChaosStyle;
use crate::scenario::USER_AGENT;
use crate::ws::frame::SendOp;

/// A route up and checked, with the connection a fault will hit.
pub struct Scene {
    /// The connection the fault hits.
    pub victim: WsClient,
    /// Who must hear of it.
    pub watcher: Watcher,
}

/// The other side of a victim, and what it must see once the victim fails.
pub enum Watcher {
    /// `/v1/echo`: nobody.
    Nobody,
    /// The other pair side: close `1011 "peer connection failed"`.
    PairPeer(WsClient),
    /// The binary holding the victim phone's slot: `{"conn_id":…,"close_code":…}`.
    Binary {
        /// The binary.
        binary: WsClient,
        /// The victim phone's conn_id.
        conn_id: String,
    },
    /// The session host: `{"type":"error","code":"BROWSER_DISCONNECTED"}`.
    Host(WsClient),
    /// The `/ws` Mac: `{"type":"browser_disconnected","browser_id":…}`.
    Mac(WsClient),
}

/// The route key of action `n`: unique per run and action, so no scene ever meets a
/// healthy client's slot or another scene's.
pub fn key(ctx: &Ctx, n: u64) -> String {
    format!("{}{n}", ctx.tag)
}

/// Opens and checks a scene of `style` for action `n`.
pub fn open(ctx: &Ctx, style: ChaosStyle, n: u64) -> Result<Scene, String> {
    match style {
        ChaosStyle::Echo => Ok(Scene {
            victim: echo(ctx, n)?,
            watcher: Watcher::Nobody,
        }),
        ChaosStyle::Pair => {
            let (a, b) = pair(ctx, &key(ctx, n), n)?;
            Ok(Scene {
                victim: a,
                watcher: Watcher::PairPeer(b),
            })
        }
        ChaosStyle::ServerId => {
            let binary = binary(ctx, &key(ctx, n))?;
            let (binary, phone, conn_id) = phone(ctx, binary, &key(ctx, n), n)?;
            Ok(Scene {
                victim: phone,
                watcher: Watcher::Binary { binary, conn_id },
            })
        }
        ChaosStyle::Session => {
            let (host, code) = host(ctx)?;
            let (host, browser) = join(ctx, host, &code, n)?;
            Ok(Scene {
                victim: browser,
                watcher: Watcher::Host(host),
            })
        }
        ChaosStyle::SessionWs => {
            let (mac, code) = mac(ctx)?;
            let (mac, browser) = ws_browser(ctx, mac, &code, n)?;
            Ok(Scene {
                victim: browser,
                watcher: Watcher::Mac(mac),
            })
        }
        ChaosStyle::Ticket => Err("ticket_is_not_a_websocket".into()),
    }
}

impl Watcher {
    /// Checks the watcher heard of the victim's failure, then leaves cleanly.
    pub fn after_failure(self, ctx: &Ctx) -> Result<(), String> {
        let deadline = ctx.deadline();
        match self {
            Watcher::Nobody => Ok(()),
            Watcher::PairPeer(mut peer) => match peer.ending(deadline)? {
                Some(1011) => {
                    peer.finish_closed(deadline);
                    Ok(())
                }
                other => Err(format!("pair_peer_ended_{}", code_name(other))),
            },
            Watcher::Binary {
                mut binary,
                conn_id,
            } => {
                wait_text(&mut binary, deadline, |v| {
                    v["conn_id"] == conn_id.as_str() && v["close_code"].is_u64()
                })
                .map_err(|e| format!("binary_not_told_{e}"))?;
                binary.close(deadline)
            }
            Watcher::Host(mut host) => {
                wait_text(&mut host, deadline, |v| v["code"] == "BROWSER_DISCONNECTED")
                    .map_err(|e| format!("host_not_told_{e}"))?;
                host.close(deadline)
            }
            Watcher::Mac(mut mac) => {
                wait_text(&mut mac, deadline, |v| v["type"] == "browser_disconnected")
                    .map_err(|e| format!("mac_not_told_{e}"))?;
                mac.close(deadline)
            }
        }
    }
}

/// `Some(1011)` → `1011`, `None` → `eof`.
pub fn code_name(code: Option<u16>) -> String {
    code.map_or_else(|| "eof".into(), |c| c.to_string())
}

/// Reads text messages until one parses as JSON and satisfies `wanted`.
pub fn wait_text(
    ws: &mut WsClient,
    deadline: Instant,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    loop {
        match ws.next(deadline)? {
            Incoming::Text(bytes) => {
                let value: Value = serde_json::from_slice(&bytes).map_err(|_| "not_json")?;
                if wanted(&value) {
                    return Ok(value);
                }
            }
            Incoming::Binary(_) => return Err("unexpected_binary".into()),
            Incoming::Close(code) => return Err(format!("closed_{}", code_name(code))),
            Incoming::Eof => return Err("eof".into()),
        }
    }
}

/// Reads the next data message and checks it is exactly `expected`.
pub fn expect_exact(ws: &mut WsClient, deadline: Instant, expected: &[u8]) -> Result<(), String> {
    match ws.next(deadline)? {
        Incoming::Text(got) | Incoming::Binary(got) if got == expected => Ok(()),
        Incoming::Text(_) | Incoming::Binary(_) => Err("wrong_message".into()),
        Incoming::Close(code) => Err(format!("closed_{}", code_name(code))),
        Incoming::Eof => Err("eof".into()),
    }
}

/// An echo connection whose round trip works.
pub fn echo(ctx: &Ctx, n: u64) -> Result<WsClient, String> {
    let mut ws = WsClient::open(
        ctx.target,
        "/v1/echo",
        &[("User-Agent", USER_AGENT)],
        ctx.io_timeout,
    )?;
    let probe = json!({ "chaos": n }).to_string();
    ws.send(SendOp::Text, probe.as_bytes())?;
    expect_exact(&mut ws, ctx.deadline(), probe.as_bytes())?;
    Ok(ws)
}

/// Both sides of pair `code`, a binary message checked across.
pub fn pair(ctx: &Ctx, code: &str, n: u64) -> Result<(WsClient, WsClient), String> {
    let path = format!("/?pair={code}");
    let headers = [("User-Agent", USER_AGENT)];
    let mut a = WsClient::open(ctx.target, &path, &headers, ctx.io_timeout)?;
    let mut b = WsClient::open(ctx.target, &path, &headers, ctx.io_timeout)?;
    let probe = n.to_be_bytes();
    a.send(SendOp::Binary, &probe)?;
    expect_exact(&mut b, ctx.deadline(), &probe).map_err(|e| format!("pair_setup_{e}"))?;
    Ok((a, b))
}

/// A binary holding server-id `id`.
pub fn binary(ctx: &Ctx, id: &str) -> Result<WsClient, String> {
    let headers = [
        ("X-Pyrycode-Server", id),
        ("X-Pyrycode-Version", "1.0.0"),
        ("User-Agent", USER_AGENT),
    ];
    WsClient::open(ctx.target, "/v1/server", &headers, ctx.io_timeout)
        .map_err(|e| format!("binary_{e}"))
}

/// A phone attached to `id`, its round trip through `binary` checked; returns the
/// binary, the phone and the phone's conn_id.
pub fn phone(
    ctx: &Ctx,
    mut binary: WsClient,
    id: &str,
    n: u64,
) -> Result<(WsClient, WsClient, String), String> {
    let headers = [
        ("X-Pyrycode-Server", id),
        ("X-Pyrycode-Token", "chaos-token"),
        ("User-Agent", USER_AGENT),
    ];
    let mut phone = WsClient::open(ctx.target, "/v1/client", &headers, ctx.io_timeout)
        .map_err(|e| format!("phone_{e}"))?;
    let deadline = ctx.deadline();
    let probe = json!({ "chaos": n });
    phone.send(SendOp::Text, probe.to_string().as_bytes())?;
    let envelope = wait_text(&mut binary, deadline, |v| v["frame"] == probe)
        .map_err(|e| format!("server_id_setup_{e}"))?;
    let conn_id = envelope["conn_id"].as_str().ok_or("no_conn_id")?.to_owned();
    let back = json!({ "back": n }).to_string();
    let reply = format!(r#"{{"conn_id":"{conn_id}","frame":{back}}}"#);
    binary.send(SendOp::Text, reply.as_bytes())?;
    expect_exact(&mut phone, deadline, back.as_bytes())
        .map_err(|e| format!("server_id_reply_{e}"))?;
    Ok((binary, phone, conn_id))
}

/// A session host and its code.
pub fn host(ctx: &Ctx) -> Result<(WsClient, String), String> {
    let mut host = WsClient::open(
        ctx.target,
        "/mac",
        &[("User-Agent", USER_AGENT)],
        ctx.io_timeout,
    )?;
    let registered = wait_text(&mut host, ctx.deadline(), |v| v["type"] == "registered")
        .map_err(|e| format!("session_register_{e}"))?;
    let code = registered["code"].as_str().ok_or("no_code")?.to_owned();
    Ok((host, code))
}

/// A browser joined to `host`'s `code`, a `data` message checked across.
pub fn join(
    ctx: &Ctx,
    mut host: WsClient,
    code: &str,
    n: u64,
) -> Result<(WsClient, WsClient), String> {
    let mut browser = WsClient::open(
        ctx.target,
        "/browser",
        &[("User-Agent", USER_AGENT)],
        ctx.io_timeout,
    )?;
    let deadline = ctx.deadline();
    browser.send(
        SendOp::Text,
        json!({"type": "join", "code": code}).to_string().as_bytes(),
    )?;
    for side in [&mut browser, &mut host] {
        wait_text(side, deadline, |v| v["type"] == "joined")
            .map_err(|e| format!("session_join_{e}"))?;
    }
    let data = json!({"type": "data", "payload": {"chaos": n}}).to_string();
    host.send(SendOp::Text, data.as_bytes())?;
    expect_exact(&mut browser, deadline, data.as_bytes())
        .map_err(|e| format!("session_data_{e}"))?;
    Ok((host, browser))
}

/// A `/ws` Mac and its code.
pub fn mac(ctx: &Ctx) -> Result<(WsClient, String), String> {
    let mut mac = WsClient::open(
        ctx.target,
        "/ws",
        &[("User-Agent", USER_AGENT)],
        ctx.io_timeout,
    )?;
    mac.send(SendOp::Text, br#"{"type":"register","client_id":"chaos"}"#)?;
    let registered = wait_text(&mut mac, ctx.deadline(), |v| v["type"] == "registered")
        .map_err(|e| format!("session_ws_register_{e}"))?;
    let code = registered["code"].as_str().ok_or("no_code")?.to_owned();
    Ok((mac, code))
}

/// A `/ws` browser of `mac`'s `code`, a binary frame checked each way.
pub fn ws_browser(
    ctx: &Ctx,
    mut mac: WsClient,
    code: &str,
    n: u64,
) -> Result<(WsClient, WsClient), String> {
    let mut browser = WsClient::open(
        ctx.target,
        "/ws",
        &[("User-Agent", USER_AGENT)],
        ctx.io_timeout,
    )?;
    let deadline = ctx.deadline();
    let auth = json!({"type": "auth", "session_code": code}).to_string();
    browser.send(SendOp::Text, auth.as_bytes())?;
    wait_text(&mut browser, deadline, |v| v["type"] == "auth_success")
        .map_err(|e| format!("session_ws_auth_{e}"))?;
    wait_text(&mut mac, deadline, |v| v["type"] == "browser_connected")
        .map_err(|e| format!("session_ws_connected_{e}"))?;
    let output = n.to_be_bytes();
    mac.send(SendOp::Binary, &output)?;
    expect_exact(&mut browser, deadline, &output).map_err(|e| format!("session_ws_output_{e}"))?;
    let keys = (!n).to_be_bytes();
    browser.send(SendOp::Binary, &keys)?;
    expect_exact(&mut mac, deadline, &keys).map_err(|e| format!("session_ws_keys_{e}"))?;
    Ok((mac, browser))
}
