//! `POST /v1/tickets` on the admin listener (PROTOCOL §6.1): read the bounded JSON
//! body, then mint on the workspace's shard (`shard_of(workspace_id)`): the admin shard
//! asks it over its inbox unless it is that shard itself. There the workspace cap is
//! checked (a workspace's tickets all live on one shard, so the count is exact) and a
//! ticket is drawn that hashes to that shard, so its PUT and GET are routed there
//! whichever shard accepts them. Transfers of different workspaces thus spread over
//! the shards instead of all running on the admin shard.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use monoio::net::TcpStream;
use serde::Deserialize;

use super::registry::MintRefusal;
use crate::cluster::TICKET_ALPHABET;
use crate::http::head::RequestHead;
use crate::http::response;
use crate::modes::StyleHost;
use crate::net::{self, reply_and_close};
use crate::stats::{Event, Gauge, Rejected};
use crate::tls::Link;

/// Largest mint request body: the JSON is a few short ids; 64 KiB leaves room for long
/// ids while keeping a hostile admin client's cost trivial.
pub(super) const MAX_MINT_BODY: usize = 64 * 1024;

/// Default ticket life (PROTOCOL §6.1; the seed's `DefaultRelayTTL`).
const DEFAULT_TTL_MS: i64 = 300_000;

/// Longest ticket life accepted: a day, so no ticket pins a table slot for ever.
const MAX_TTL_MS: i64 = 86_400_000;

/// Longest id accepted (workspace, source, destination), in bytes.
const MAX_ID: usize = 256;

/// Draws per shard before giving up on a ticket this shard owns: each draw lands here
/// with probability 1/shards, so failing 64×shards draws is astronomically unlikely.
const DRAWS_PER_SHARD: usize = 64;

/// The mint request body.
#[derive(Debug, Deserialize)]
struct MintRequest {
    /// The workspace the transfer belongs to (the concurrent-relay cap's unit).
    workspace_id: String,
    /// The sending executor (checked, not used: the seed records it).
    source_id: String,
    /// The receiving executor (checked, not used).
    dest_id: String,
    /// Ticket life in milliseconds.
    ttl_ms: Option<i64>,
    /// Body cap in bytes; 0 or absent = unlimited.
    max_bytes: Option<u64>,
}

/// A checked mint request.
#[derive(Debug, PartialEq, Eq)]
pub struct MintPlan {
    /// Workspace id.
    pub(super) workspace: String,
    /// Ticket life.
    pub(super) ttl: Duration,
    /// Body cap; 0 = unlimited.
    pub(super) max_bytes: u64,
}

/// A mint's answer: the whole `201` response, or the refusal's status and message.
pub type MintOutcome = Result<Vec<u8>, (u16, &'static str)>;

/// How long the admin shard waits for the workspace's shard to mint.
const MINT_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Parse and check a mint body: `Err` carries the 400 message.
pub(super) fn parse_mint(body: &[u8]) -> Result<MintPlan, &'static str> {
    let req: MintRequest = serde_json::from_slice(body).map_err(|_| "invalid JSON body")?;
    for id in [&req.workspace_id, &req.source_id, &req.dest_id] {
        if id.is_empty() {
            return Err("workspace_id, source_id and dest_id are required");
        }
        if id.len() > MAX_ID {
            return Err("an id is longer than 256 bytes");
        }
    }
    let ttl_ms = req.ttl_ms.unwrap_or(DEFAULT_TTL_MS);
    if ttl_ms <= 0 || ttl_ms > MAX_TTL_MS {
        return Err("ttl_ms must be between 1 and 86400000");
    }
    Ok(MintPlan {
        workspace: req.workspace_id,
        ttl: Duration::from_millis(ttl_ms as u64),
        max_bytes: req.max_bytes.unwrap_or(0),
    })
}

/// Serve `POST /v1/tickets` (auth and method already checked).
pub async fn serve_mint<S: StyleHost>(
    shard: &Rc<S>,
    stream: TcpStream,
    head: &RequestHead,
    body: Vec<u8>,
) {
    let body = match read_body(&**shard, &stream, head, body).await {
        Ok(body) => body,
        Err(BodyFailure::Refused(status, msg)) => {
            return super::refuse(
                &**shard,
                stream,
                Link::plain(),
                Rejected::BadMintBody,
                response::json_error(status, msg),
            )
            .await
        }
        Err(BodyFailure::Closed) => return,
    };
    let resp = match parse_mint(&body) {
        Ok(plan) => match shard.workspace_node(&plan.workspace) {
            Some(node) if head.header(HANDED_OVER).is_none() => {
                mint_on_node(&**shard, node, &body).await
            }
            _ => mint_on_owner(shard, plan).await,
        },
        Err(msg) => Err((400, msg)),
    };
    match resp {
        Ok(resp) => reply_and_close(stream, Link::plain(), &resp).await,
        Err((status, msg)) => {
            super::refuse(
                &**shard,
                stream,
                Link::plain(),
                Rejected::MintRefused,
                response::json_error(status, msg),
            )
            .await
        }
    }
}

/// Marks a mint handed over by another node: minted where it arrives, never handed on
/// (nodes whose `--nodes` disagree cannot bounce a mint between them).
const HANDED_OVER: &str = "x-shardrelay-handed-over";

/// How long the owner node has to answer a handed-over mint.
const NODE_MINT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer accepted from the owner node (a mint's answer is ~150 bytes).
const MAX_NODE_ANSWER: usize = 16 * 1024;

/// Hand a mint to the node that owns its workspace (PROTOCOL §9) over that node's public
/// listener, with the admin token, and pass its answer on verbatim.
async fn mint_on_node<S: StyleHost>(
    shard: &S,
    node: std::net::SocketAddr,
    body: &[u8],
) -> MintOutcome {
    let Some(token) = shard.admin_token() else {
        return Err((503, "workspace owned by another node; handing mints over needs --admin-token-file on every node"));
    };
    let asked = ask_node(node, token, body, shard.proxy_protocol());
    match monoio::time::timeout(NODE_MINT_TIMEOUT, asked).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 ") => Ok(answer),
        _ => Err((503, "workspace owner node unavailable")),
    }
}

/// Send the mint to `node` and read its whole answer (it closes after it).
async fn ask_node(
    node: std::net::SocketAddr,
    token: &str,
    body: &[u8],
    proxy_header: bool,
) -> io::Result<Vec<u8>> {
    let stream = TcpStream::connect(node).await?;
    let mut request = Vec::with_capacity(256 + body.len());
    if proxy_header {
        let local = stream.local_addr()?;
        request.extend_from_slice(&crate::ws::forward::proxy_v2_header(local, node)?);
    }
    request.extend_from_slice(
        format!(
            "POST /v1/tickets HTTP/1.1\r\nHost: {node}\r\nAuthorization: Bearer {token}\r\n\
             {HANDED_OVER}: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    net::write_all(&stream, &mut Link::plain(), &request).await?;
    let mut answer = Vec::with_capacity(512);
    loop {
        let room = MAX_NODE_ANSWER.saturating_sub(answer.len());
        if room == 0 {
            return Ok(answer);
        }
        if net::read_some(&stream, &mut answer, room).await? == 0 {
            return Ok(answer);
        }
    }
}

/// Mint on the workspace's shard: here, or over that shard's inbox.
async fn mint_on_owner<S: StyleHost>(shard: &Rc<S>, plan: MintPlan) -> MintOutcome {
    let owner = shard.shard_of(plan.workspace.as_bytes());
    if owner == shard.shard_id() {
        return mint_here(shard, &plan);
    }
    let Some(answer) = shard.ask_mint(owner, Box::new(plan)) else {
        return Err((503, "ticket shard unavailable"));
    };
    match monoio::time::timeout(MINT_REPLY_TIMEOUT, answer.recv()).await {
        Ok(Some(outcome)) => outcome,
        _ => Err((503, "ticket shard unavailable")),
    }
}

/// Mint on this shard, which owns the plan's workspace, under the caps: the 201
/// response or the refusal.
pub fn mint_here<S: StyleHost>(shard: &Rc<S>, plan: &MintPlan) -> MintOutcome {
    let ticket = {
        let registry = shard.tickets().borrow();
        let cap = registry.settings().max_relays_per_workspace;
        match registry.may_mint(&plan.workspace, cap) {
            Err(MintRefusal::WorkspaceCap) => {
                return Err((429, "workspace concurrent relay cap reached"))
            }
            Err(MintRefusal::TableFull) => return Err((503, "ticket table full")),
            Ok(()) => {}
        }
        draw_owned_ticket(&**shard, |t| registry.contains(t)).ok_or((500, "could not mint"))?
    };
    let expires_at = Instant::now() + plan.ttl;
    let expires_ms = unix_ms(SystemTime::now() + plan.ttl);
    shard.tickets().borrow_mut().insert(
        ticket.clone(),
        &plan.workspace,
        expires_at,
        plan.max_bytes,
    );
    {
        let mut stats = shard.stats();
        stats.event(Event::TicketsMinted);
        stats.gauge_add(Gauge::Tickets, 1);
    }
    let body = serde_json::json!({"ticket": ticket, "expires_at": expires_ms}).to_string();
    Ok(response::close_response(
        201,
        "application/json",
        &[],
        body.as_bytes(),
    ))
}

/// A fresh `rly_…` ticket whose owner shard is this shard (redrawn until it is).
fn draw_owned_ticket<S: StyleHost>(shard: &S, taken: impl Fn(&str) -> bool) -> Option<String> {
    let draws = DRAWS_PER_SHARD * shard.minters().max(1);
    for _ in 0..draws {
        let ticket = draw_ticket()?;
        let first = ticket
            .as_bytes()
            .get(TICKET_PREFIX.len())
            .copied()
            .unwrap_or(0);
        if shard.mints(TICKET_ALPHABET, first, ticket.as_bytes()) && !taken(&ticket) {
            return Some(ticket);
        }
    }
    None
}

/// What every ticket starts with (PROTOCOL §6).
const TICKET_PREFIX: &str = "rly_";

/// `rly_` + base64url (unpadded) of 32 CSPRNG bytes.
pub(super) fn draw_ticket() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(format!(
        "{TICKET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Milliseconds since the Unix epoch.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why the body could not be read.
enum BodyFailure {
    /// Answer with this status and message.
    Refused(u16, &'static str),
    /// The client went away or was too slow.
    Closed,
}

/// Read the whole `Content-Length` body (bounded by `MAX_MINT_BODY` and the handshake
/// timeout); `already` holds the bytes read past the head.
async fn read_body<S: StyleHost>(
    shard: &S,
    stream: &TcpStream,
    head: &RequestHead,
    mut already: Vec<u8>,
) -> Result<Vec<u8>, BodyFailure> {
    if head.header("transfer-encoding").is_some() {
        return Err(BodyFailure::Refused(
            400,
            "send the body with Content-Length",
        ));
    }
    let len = match head.header("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(len)) => len,
        Some(Err(_)) => return Err(BodyFailure::Refused(400, "bad Content-Length")),
    };
    if len > MAX_MINT_BODY {
        return Err(BodyFailure::Refused(413, "body over 64 KiB"));
    }
    let timeout = shard.tickets().borrow().settings().handshake_timeout;
    monoio::time::timeout(timeout, fill(stream, &mut already, len))
        .await
        .map_err(|_| BodyFailure::Closed)?
        .map_err(|_| BodyFailure::Closed)?;
    already.truncate(len);
    Ok(already)
}

/// Read until `buf` holds `len` bytes.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while buf.len() < len {
        if net::read_some(stream, buf, len - buf.len()).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_defaults_and_limits() {
        let plan = parse_mint(br#"{"workspace_id":"w","source_id":"s","dest_id":"d"}"#);
        assert_eq!(
            plan,
            Ok(MintPlan {
                workspace: "w".into(),
                ttl: Duration::from_millis(300_000),
                max_bytes: 0
            })
        );
        for bad in [
            &br#"{"workspace_id":"","source_id":"s","dest_id":"d"}"#[..],
            br#"{"source_id":"s","dest_id":"d"}"#,
            br#"{"workspace_id":"w","source_id":"s","dest_id":"d","ttl_ms":0}"#,
            br#"{"workspace_id":"w","source_id":"s","dest_id":"d","ttl_ms":-5}"#,
            br#"{"workspace_id":"w","source_id":"s","dest_id":"d","max_bytes":-1}"#,
            b"not json",
        ] {
            assert!(parse_mint(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tickets_have_the_shape() {
        let t = draw_ticket().unwrap_or_default();
        assert!(crate::http::routes::is_ticket_shaped(&t), "{t}");
    }
}
