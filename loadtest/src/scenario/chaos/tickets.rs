//! The faults on ticket transfers (PROTOCOL §6): a PUT cut off by a reset or a
//! half-close, a chunked PUT turning to garbage, a body over the ticket's `max_bytes`,
//! and a clean transfer right after. Whatever breaks, the GET response must never look
//! complete: fewer bytes than its `Content-Length`, or no final chunk.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;

use super::client::{reset, HttpClient};
use super::{Ctx, Fault};
use crate::http::{self, Dechunker, Framing, ResponseHead};

/// Body of a transfer: small enough to sit in socket buffers, so one thread can play
/// both sides without blocking.
const BODY_LEN: usize = 64 * 1024;
/// A ticket's life: short, so tickets a fault left unused leave the registry soon.
const TICKET_TTL_MS: u64 = 20_000;

/// Runs `fault` on a fresh ticket; `Err` names what the relay did wrong.
pub fn run(ctx: &Ctx, fault: Fault, n: u64) -> Result<(), String> {
    match fault {
        Fault::Kill => put_breaks_off(ctx, n, true),
        Fault::HalfClose => put_breaks_off(ctx, n, false),
        Fault::Garbage => garbage_chunk(ctx, n),
        Fault::Oversize => over_max_bytes(ctx, n),
        Fault::Reconnect => clean_transfer(ctx, n),
    }
}

/// The body of transfer `n`.
fn body(n: u64) -> Vec<u8> {
    (0..BODY_LEN)
        .map(|i| (i as u64 ^ n).wrapping_mul(31) as u8)
        .collect()
}

/// Mints a ticket (optionally capped at `max_bytes`) on the admin listener.
fn mint(ctx: &Ctx, n: u64, max_bytes: Option<usize>) -> Result<String, String> {
    let mut request = json!({
        "workspace_id": scenes_key(ctx, n),
        "source_id": "chaos-put",
        "dest_id": "chaos-get",
        "ttl_ms": TICKET_TTL_MS,
    });
    if let Some(max) = max_bytes {
        request["max_bytes"] = json!(max);
    }
    let body = request.to_string();
    let auth = ctx.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(auth.as_deref().map(|a| ("Authorization", a)));
    let mut head = http::request_head(
        "POST",
        &ctx.admin.to_string(),
        "/v1/tickets",
        &headers,
        Some(body.len() as u64),
    );
    head.extend_from_slice(body.as_bytes());
    let mut admin = HttpClient::send_head(ctx.admin, &head, ctx.io_timeout)?;
    admin.read_to_end(ctx.deadline())?;
    let (status, body) = split_response(&admin.received)?;
    if status.status != 201 {
        return Err(format!("mint_status_{}", status.status));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "mint_not_json")?;
    value["ticket"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "mint_no_ticket".into())
}

/// The workspace of action `n` (one per action: the relay caps tickets per workspace).
fn scenes_key(ctx: &Ctx, n: u64) -> String {
    format!("{}{n}", ctx.tag)
}

/// A parsed response head and the bytes after it.
fn split_response(raw: &[u8]) -> Result<(ResponseHead, &[u8]), String> {
    let head = http::parse_head(raw)
        .map_err(|e| format!("bad_response: {e}"))?
        .ok_or("incomplete_response")?;
    let len = head.len;
    Ok((head, &raw[len..]))
}

/// Opens a relay side: `GET` (no body) or `PUT` with `framing` headers.
fn side(
    target: SocketAddr,
    ctx: &Ctx,
    method: &str,
    ticket: &str,
    extra: &[(&str, &str)],
    len: Option<u64>,
) -> Result<HttpClient, String> {
    let auth = format!("Bearer {ticket}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let head = http::request_head(method, &target.to_string(), "/v1/relay", &headers, len);
    HttpClient::send_head(target, &head, ctx.io_timeout)
}

/// Waits for the GET's response head (the transfer has started); returns it.
fn get_started(ctx: &Ctx, get: &mut HttpClient) -> Result<ResponseHead, String> {
    let complete = get.read_until(ctx.deadline(), |b| {
        matches!(http::parse_head(b), Ok(Some(_)) | Err(_))
    })?;
    if !complete {
        return Err("get_closed_before_its_head".into());
    }
    let (head, _) = split_response(&get.received)?;
    if head.status != 200 {
        return Err(format!("get_status_{}", head.status));
    }
    Ok(head)
}

/// Whether a GET response (head and body so far) is a complete HTTP message.
fn looks_complete(raw: &[u8]) -> Result<bool, String> {
    let (head, body) = split_response(raw)?;
    if head.status != 200 {
        return Ok(false);
    }
    Ok(match head.framing {
        Framing::Length(len) => body.len() as u64 >= len,
        Framing::Chunked => Dechunker::default()
            .feed(body, &mut |_| {})
            .unwrap_or(false),
        // Nothing could tell a cut body from a whole one.
        Framing::UntilClose => true,
    })
}

/// Reads the GET to its end and insists it does not look complete.
fn get_aborted(ctx: &Ctx, mut get: HttpClient) -> Result<(), String> {
    get.read_to_end(ctx.deadline())
        .map_err(|e| format!("aborted_get_left_open_{e}"))?;
    if get.received.is_empty() {
        return Ok(());
    }
    match looks_complete(&get.received)? {
        true => Err("aborted_get_looked_complete".into()),
        false => Ok(()),
    }
}

/// The PUT sends half its body, then resets (`reset`) or half-closes.
fn put_breaks_off(ctx: &Ctx, n: u64, reset_it: bool) -> Result<(), String> {
    let ticket = mint(ctx, n, None)?;
    let mut get = side(ctx.target, ctx, "GET", &ticket, &[], None)?;
    let mut put = side(ctx.target, ctx, "PUT", &ticket, &[], Some(BODY_LEN as u64))?;
    let body = body(n);
    let _ = std::io::Write::write_all(&mut put.stream, &body[..BODY_LEN / 2]);
    get_started(ctx, &mut get)?;
    if reset_it {
        reset(put.stream);
    } else {
        let _ = put.stream.shutdown(std::net::Shutdown::Write);
        put.read_to_end(ctx.deadline())
            .map_err(|e| format!("half_closed_put_left_open_{e}"))?;
    }
    get_aborted(ctx, get)
}

/// A chunked PUT whose second chunk-size line is garbage.
fn garbage_chunk(ctx: &Ctx, n: u64) -> Result<(), String> {
    let ticket = mint(ctx, n, None)?;
    let mut get = side(ctx.target, ctx, "GET", &ticket, &[], None)?;
    let mut put = side(
        ctx.target,
        ctx,
        "PUT",
        &ticket,
        &[("Transfer-Encoding", "chunked")],
        None,
    )?;
    let _ = std::io::Write::write_all(&mut put.stream, b"10\r\n0123456789abcdef\r\n");
    get_started(ctx, &mut get)?;
    let mut junk = b"zz-not-a-size\r\n".to_vec();
    junk.extend((0..1024u64).map(|i| (i.wrapping_mul(n | 1) >> 3) as u8));
    let _ = std::io::Write::write_all(&mut put.stream, &junk);
    put.read_to_end(ctx.deadline())
        .map_err(|e| format!("garbage_put_left_open_{e}"))?;
    get_aborted(ctx, get)
}

/// A body twice the ticket's `max_bytes`: the PUT gets `413`, the GET no whole body.
fn over_max_bytes(ctx: &Ctx, n: u64) -> Result<(), String> {
    let ticket = mint(ctx, n, Some(BODY_LEN / 2))?;
    let get = side(ctx.target, ctx, "GET", &ticket, &[], None)?;
    let mut put = side(ctx.target, ctx, "PUT", &ticket, &[], Some(BODY_LEN as u64))?;
    let _ = std::io::Write::write_all(&mut put.stream, &body(n));
    put.read_to_end(ctx.deadline())
        .map_err(|e| format!("oversize_put_left_open_{e}"))?;
    let (head, _) = split_response(&put.received)?;
    if head.status != 413 {
        return Err(format!("oversize_put_status_{}", head.status));
    }
    get_aborted(ctx, get)
}

/// A whole transfer, checked byte for byte, with the PUT's `200 {"bytes":n}`.
fn clean_transfer(ctx: &Ctx, n: u64) -> Result<(), String> {
    let ticket = mint(ctx, n, None)?;
    let mut get = side(ctx.target, ctx, "GET", &ticket, &[], None)?;
    let mut put = side(ctx.target, ctx, "PUT", &ticket, &[], Some(BODY_LEN as u64))?;
    let body = body(n);
    std::io::Write::write_all(&mut put.stream, &body)
        .map_err(|e| format!("put_write_{:?}", e.kind()))?;
    let deadline: Instant = ctx.deadline();
    if !get.read_until(deadline, |raw| looks_complete(raw).unwrap_or(false))? {
        return Err("clean_transfer_cut".into());
    }
    let (_, got) = split_response(&get.received)?;
    if got != body.as_slice() {
        return Err("transfer_corrupted".into());
    }
    put.read_to_end(deadline)?;
    let (head, reply) = split_response(&put.received)?;
    let expected = format!(r#""bytes":{BODY_LEN}"#);
    if head.status != 200 || !String::from_utf8_lossy(reply).contains(&expected) {
        return Err(format!("put_status_{}", head.status));
    }
    Ok(())
}
