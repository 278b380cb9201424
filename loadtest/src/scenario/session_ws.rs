//! Session-ws style (`GET /ws`, the session-code relay's second protocol): per unit one
//! Mac (`register`, which gets its code in `registered`) and B browsers (`auth` with
//! that code, answered `auth_success`). Every browser first sends a binary hello to the
//! Mac, so a unit is up only once both directions work. Then the Mac sends binary
//! probes; the relay fans each out to every browser, and every browser accounts every
//! probe as a stream of its own (loss, duplication, reordering, corruption per browser).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Deserialize;

use crate::ctx::WorkerCtx;
use crate::plan::Style;
use crate::probe::{self, Decoded};
use crate::stream::{Encoding, Sender, StreamState};
use crate::ws::frame::SendOp;

use super::session::wait_until;
use super::{
    await_hello, on_binary_probe, open_link, stream_id, unexpected, Link, Pending, SetupError,
};

/// The `type` of a relay message (the rest is read where needed).
#[derive(Deserialize)]
struct Typed<'a> {
    /// `registered`, `auth_success`, `browser_connected`, `error`, …
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    /// The Mac's code (`registered`).
    code: Option<String>,
}

/// What the Mac's reader has seen during setup.
#[derive(Default)]
struct MacProgress {
    /// The code, once registered.
    code: RefCell<Option<String>>,
    /// `browser_connected` notices.
    connected: Cell<usize>,
    /// Browsers' binary hellos that reached the Mac.
    hellos: Cell<usize>,
}

/// Sets up Mac `index` and its browsers, and checks both directions.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<super::Unit, SetupError> {
    let Style::SessionWs { browsers, .. } = ctx.plan.style else {
        return Err(SetupError::Unexpected("style"));
    };
    let id = stream_id(ctx, index, 0);
    let progress = Rc::new(MacProgress::default());
    let mut pending = Pending::default();
    let mac = pending.keep(open_mac(ctx, id, &progress).await?);
    mac.outbox.send(
        SendOp::Text,
        br#"{"type":"register","client_id":"shardrelay-load"}"#,
    );
    wait_until(ctx, &mac, || progress.code.borrow().is_some()).await?;
    let code = progress.code.borrow().clone().unwrap_or_default();
    let mut streams = Vec::with_capacity(browsers);
    for _ in 0..browsers {
        let stream = StreamState::new(id);
        let browser = pending.keep(open_browser(ctx, &code, &stream).await?);
        let mut hello = Vec::new();
        probe::write_binary_hello(&mut hello, id);
        browser.outbox.send(SendOp::Binary, &hello);
        browser.streams.borrow_mut().push(Rc::clone(&stream));
        mac.streams.borrow_mut().push(Rc::clone(&stream));
        streams.push(stream);
    }
    wait_until(ctx, &mac, || {
        progress.hellos.get() == browsers && progress.connected.get() == browsers
    })
    .await?;
    let mut streams = streams.into_iter();
    let stream = streams.next().ok_or(SetupError::Unexpected("no_browser"))?;
    let sender = Sender {
        stream,
        outbox: Rc::clone(&mac.outbox),
        encoding: Encoding::Binary(Rc::clone(&ctx.binary_fill)),
        mirrors: streams.collect(),
    };
    Ok(pending.into_unit(vec![sender]))
}

/// Opens the Mac; its reader notes the code, browser notices and browsers' hellos.
async fn open_mac(
    ctx: &Rc<WorkerCtx>,
    id: u32,
    progress: &Rc<MacProgress>,
) -> Result<Rc<Link>, SetupError> {
    let (rx_ctx, rx_progress) = (Rc::clone(ctx), Rc::clone(progress));
    open_link(ctx, "/ws", &[], move |link, is_text, bytes| {
        if !is_text {
            match probe::decode_binary(bytes) {
                Ok(Decoded::Hello(got)) if got == id => {
                    rx_progress.hellos.set(rx_progress.hellos.get() + 1);
                    link.hello.notify();
                }
                Ok(Decoded::Hello(_)) => rx_ctx.stats.misrouted(),
                _ => unexpected(&rx_ctx, "session_ws_mac_binary"),
            }
            return;
        }
        let Ok(message) = serde_json::from_slice::<Typed<'_>>(bytes) else {
            return rx_ctx.stats.corrupted();
        };
        match message.kind {
            "registered" => *rx_progress.code.borrow_mut() = message.code,
            "browser_connected" => rx_progress.connected.set(rx_progress.connected.get() + 1),
            other => return unexpected(&rx_ctx, &format!("session_ws_mac_{other}")),
        }
        link.hello.notify();
    })
    .await
}

/// Opens one browser of `code` and waits for `auth_success`; its reader then accounts
/// every binary probe of `stream`.
async fn open_browser(
    ctx: &Rc<WorkerCtx>,
    code: &str,
    stream: &Rc<StreamState>,
) -> Result<Rc<Link>, SetupError> {
    let (rx_ctx, rx_stream) = (Rc::clone(ctx), Rc::clone(stream));
    let browser = open_link(ctx, "/ws", &[], move |link, is_text, bytes| {
        if !is_text {
            return on_binary_probe(&rx_ctx, link, &rx_stream, bytes);
        }
        match serde_json::from_slice::<Typed<'_>>(bytes) {
            Ok(Typed {
                kind: "auth_success",
                ..
            }) => link.mark_hello(),
            Ok(other) => unexpected(&rx_ctx, &format!("session_ws_browser_{}", other.kind)),
            Err(_) => rx_ctx.stats.corrupted(),
        }
    })
    .await?;
    let auth = serde_json::json!({"type": "auth", "session_code": code}).to_string();
    browser.outbox.send(SendOp::Text, auth.as_bytes());
    await_hello(ctx, &browser).await?;
    Ok(browser)
}
