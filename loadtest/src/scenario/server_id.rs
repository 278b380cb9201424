//! Server-id style (PROTOCOL §3): per unit one binary on `/v1/server` and P phones on
//! `/v1/client`, all on one server-id. Echo mode: phones send JSON probes, the binary
//! wraps each back into `{"conn_id":…,"frame":<the exact frame>}`, the phone accounts
//! it. Fan-out mode: the binary sends to every phone through the envelope.
//!
//! Every phone first sends `{"hello":<stream>}`; the binary echoes it (learning the
//! phone's `conn_id`, which only the relay knows), so a phone is "up" only once the
//! whole route works.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ctx::WorkerCtx;
use crate::plan::Style;
use crate::probe::{self, Decoded};
use crate::stream::{Encoding, Sender, StreamState};
use crate::ws::frame::SendOp;

use super::{
    await_hello, on_json_probe, open_link, stream_id, unexpected, Link, Pending, SetupError,
    USER_AGENT,
};

/// Attempts per phone: a phone racing its binary's registration may see `4404`.
const PHONE_ATTEMPTS: u32 = 3;
/// Pause before a phone retries.
const PHONE_RETRY: Duration = Duration::from_millis(200);
/// `X-Pyrycode-Version` we claim.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The courier token phones present (checked for presence only, PROTOCOL §3.2).
const TOKEN: &str = "shardrelay-load-token";

/// An envelope from the relay to a binary.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// The phone it concerns.
    #[serde(borrow)]
    conn_id: Option<Cow<'a, str>>,
    /// The phone's message, verbatim.
    #[serde(borrow)]
    frame: Option<&'a RawValue>,
    /// The phone left with this code.
    close_code: Option<u16>,
}

/// Phones' conn_ids (JSON-encoded, ready to paste into an envelope) by stream id.
type ConnIds = Rc<RefCell<HashMap<u32, Rc<str>>>>;

/// Sets up binary `index` and its phones.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<super::Unit, SetupError> {
    let Style::ServerId {
        phones,
        fanout,
        prefix,
        ..
    } = &ctx.plan.style
    else {
        return Err(SetupError::Unexpected("style"));
    };
    let server_id = format!("{prefix}{index}");
    let conn_ids: ConnIds = Rc::default();
    let mut pending = Pending::default();
    let binary = pending.keep(open_binary(ctx, &server_id, Rc::clone(&conn_ids)).await?);
    let mut senders = Vec::with_capacity(*phones);
    for k in 0..*phones {
        let stream = StreamState::new(stream_id(ctx, index, k));
        let phone = pending.keep(open_phone(ctx, &server_id, k, &stream).await?);
        binary.streams.borrow_mut().push(Rc::clone(&stream));
        let sender = if *fanout {
            let conn_id = conn_ids
                .borrow()
                .get(&stream.id)
                .cloned()
                .ok_or(SetupError::Unexpected("no_conn_id"))?;
            Sender {
                outbox: Rc::clone(&binary.outbox),
                encoding: Encoding::Envelope(conn_id, Rc::clone(&ctx.json_pad)),
                mirrors: Vec::new(),
                stream,
            }
        } else {
            Sender {
                outbox: Rc::clone(&phone.outbox),
                encoding: Encoding::Json(Rc::clone(&ctx.json_pad)),
                mirrors: Vec::new(),
                stream,
            }
        };
        senders.push(sender);
    }
    Ok(pending.into_unit(senders))
}

/// Opens the binary for `server_id`; its reader echoes phone messages (and hellos).
async fn open_binary(
    ctx: &Rc<WorkerCtx>,
    server_id: &str,
    conn_ids: ConnIds,
) -> Result<Rc<Link>, SetupError> {
    let headers = [
        ("X-Pyrycode-Server", server_id),
        ("X-Pyrycode-Version", VERSION),
        ("User-Agent", USER_AGENT),
    ];
    let rx_ctx = Rc::clone(ctx);
    let mut scratch = Vec::new();
    open_link(ctx, "/v1/server", &headers, move |link, _, bytes| {
        on_envelope(&rx_ctx, link, &conn_ids, &mut scratch, bytes);
    })
    .await
}

/// The binary's reader: echo frames back to their phone, note conn_ids from hellos.
fn on_envelope(
    ctx: &WorkerCtx,
    link: &Link,
    conn_ids: &ConnIds,
    scratch: &mut Vec<u8>,
    bytes: &[u8],
) {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(bytes) else {
        return unexpected(ctx, "envelope_malformed");
    };
    let (Some(conn_id), Some(frame)) = (envelope.conn_id, envelope.frame) else {
        if let Some(code) = envelope.close_code {
            unexpected(ctx, &format!("phone_left_{code}"));
        } else {
            unexpected(ctx, "envelope_unexpected");
        }
        return;
    };
    let Ok(conn_id_json) = serde_json::to_string(&conn_id) else {
        return unexpected(ctx, "envelope_conn_id");
    };
    if let Ok(Decoded::Hello(stream)) = probe::decode_json(frame.get().as_bytes()) {
        conn_ids
            .borrow_mut()
            .insert(stream, Rc::from(conn_id_json.as_str()));
    } else if matches!(ctx.plan.style, Style::ServerId { fanout: true, .. }) {
        return unexpected(ctx, "fanout_phone_sent");
    }
    scratch.clear();
    scratch.extend_from_slice(b"{\"conn_id\":");
    scratch.extend_from_slice(conn_id_json.as_bytes());
    scratch.extend_from_slice(b",\"frame\":");
    scratch.extend_from_slice(frame.get().as_bytes());
    scratch.push(b'}');
    link.outbox.send(SendOp::Text, scratch);
}

/// Opens phone `k` of `server_id` and waits until its hello has made the round trip,
/// retrying a phone that raced its binary's registration.
async fn open_phone(
    ctx: &Rc<WorkerCtx>,
    server_id: &str,
    k: usize,
    stream: &Rc<StreamState>,
) -> Result<Rc<Link>, SetupError> {
    let device = format!("load-phone-{k}");
    let headers = [
        ("X-Pyrycode-Server", server_id),
        ("X-Pyrycode-Token", TOKEN),
        ("User-Agent", USER_AGENT),
        ("X-Pyrycode-Device-Name", device.as_str()),
    ];
    let mut attempt = 1;
    loop {
        let (rx_ctx, rx_stream) = (Rc::clone(ctx), Rc::clone(stream));
        let phone = open_link(ctx, "/v1/client", &headers, move |link, _, bytes| {
            on_json_probe(&rx_ctx, link, &rx_stream, bytes)
        })
        .await?;
        let mut hello = Vec::new();
        probe::write_json_hello(&mut hello, stream.id);
        phone.outbox.send(SendOp::Text, &hello);
        match await_hello(ctx, &phone).await {
            Ok(()) => {
                phone.streams.borrow_mut().push(Rc::clone(stream));
                return Ok(phone);
            }
            Err(SetupError::Ended(kind)) if kind == "close_4404" && attempt < PHONE_ATTEMPTS => {
                attempt += 1;
                monoio::time::sleep(PHONE_RETRY).await;
            }
            Err(error) => {
                phone.outbox.close(1000);
                return Err(error);
            }
        }
    }
}
