//! Session style (PROTOCOL §5): per unit a host on `/mac` (which gets its code in
//! `registered`) and a browser on `/browser` (which sends `join`); both wait for
//! `joined`. Then the host sends `{"type":"data","payload":<probe>}`; the browser
//! sends the exact text back (echo) or accounts it itself (`--oneway`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ctx::WorkerCtx;
use crate::plan::Style;
use crate::probe;
use crate::stream::{Encoding, Sender, StreamState};
use crate::ws::frame::SendOp;

use super::{account, open_link, stream_id, unexpected, Link, Pending, SetupError, USER_AGENT};

/// A session message from the relay or the peer.
#[derive(Deserialize)]
struct SessionMessage<'a> {
    /// `registered`, `joined`, `data`, `error`, `pong`.
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    /// The host's code (`registered`) or the error code (`error`).
    code: Option<String>,
    /// The data message's payload, verbatim.
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Setup progress shared by the two readers and the setup task.
#[derive(Default)]
struct Progress {
    /// The host's code, once registered.
    code: RefCell<Option<String>>,
    /// `joined` arrived at the host.
    host_joined: Cell<bool>,
    /// `joined` arrived at the browser.
    browser_joined: Cell<bool>,
}

/// Which end of a session a reader serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `/mac`.
    Host,
    /// `/browser`.
    Browser,
}

/// Sets up host and browser of session `index` and waits until both are joined.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<super::Unit, SetupError> {
    let Style::Session { oneway, .. } = ctx.plan.style else {
        return Err(SetupError::Unexpected("style"));
    };
    let stream = StreamState::new(stream_id(ctx, index, 0));
    let progress = Rc::new(Progress::default());
    let mut pending = Pending::default();
    let host = pending.keep(open_side(ctx, "/mac", Role::Host, oneway, &stream, &progress).await?);
    wait_until(ctx, &host, || progress.code.borrow().is_some()).await?;
    let browser =
        pending.keep(open_side(ctx, "/browser", Role::Browser, oneway, &stream, &progress).await?);
    let join = serde_json::json!({"type": "join", "code": progress.code.borrow().clone()});
    browser
        .outbox
        .send(SendOp::Text, join.to_string().as_bytes());
    wait_until(ctx, &browser, || progress.browser_joined.get()).await?;
    wait_until(ctx, &host, || progress.host_joined.get()).await?;
    for side in [&host, &browser] {
        side.streams.borrow_mut().push(Rc::clone(&stream));
    }
    let sender = Sender {
        stream,
        outbox: Rc::clone(&host.outbox),
        encoding: Encoding::SessionData(Rc::clone(&ctx.json_pad)),
        mirrors: Vec::new(),
    };
    Ok(pending.into_unit(vec![sender]))
}

/// Opens one side with its reader.
async fn open_side(
    ctx: &Rc<WorkerCtx>,
    path: &str,
    role: Role,
    oneway: bool,
    stream: &Rc<StreamState>,
    progress: &Rc<Progress>,
) -> Result<Rc<Link>, SetupError> {
    let (rx_ctx, rx_stream, rx_progress) = (Rc::clone(ctx), Rc::clone(stream), Rc::clone(progress));
    open_link(
        ctx,
        path,
        &[("User-Agent", USER_AGENT)],
        move |link, is_text, bytes| {
            if !is_text {
                return unexpected(&rx_ctx, "session_binary");
            }
            let Ok(message) = serde_json::from_slice::<SessionMessage<'_>>(bytes) else {
                return rx_ctx.stats.corrupted();
            };
            on_message(
                &rx_ctx,
                link,
                role,
                oneway,
                &rx_stream,
                &rx_progress,
                &message,
                bytes,
            );
        },
    )
    .await
}

/// One side's reader logic.
#[allow(clippy::too_many_arguments)]
fn on_message(
    ctx: &WorkerCtx,
    link: &Link,
    role: Role,
    oneway: bool,
    stream: &StreamState,
    progress: &Progress,
    message: &SessionMessage<'_>,
    raw: &[u8],
) {
    match (message.kind, role) {
        ("registered", Role::Host) => {
            *progress.code.borrow_mut() = message.code.clone();
            link.hello.notify();
        }
        ("joined", Role::Host) => {
            progress.host_joined.set(true);
            link.hello.notify();
        }
        ("joined", Role::Browser) => {
            progress.browser_joined.set(true);
            link.hello.notify();
        }
        ("data", Role::Browser) if !oneway => {
            link.outbox.send(SendOp::Text, raw);
        }
        ("data", _) => {
            let payload = message.payload.map_or("", |p| p.get());
            account(
                ctx,
                link,
                stream,
                probe::decode_json(payload.as_bytes()),
                raw.len(),
            );
        }
        ("error", _) => {
            let code = message.code.as_deref().unwrap_or("unknown");
            unexpected(ctx, &format!("session_error_{}", code.to_ascii_lowercase()));
        }
        _ => unexpected(ctx, "session_unexpected"),
    }
}

/// Waits until `done()` holds, woken by `link`'s signal, bounded by the connect timeout.
pub(super) async fn wait_until(
    ctx: &WorkerCtx,
    link: &Link,
    done: impl Fn() -> bool,
) -> Result<(), SetupError> {
    let wait = async {
        loop {
            if done() {
                return Ok(());
            }
            if let Some(kind) = link.ended.borrow().clone() {
                return Err(SetupError::Ended(kind));
            }
            link.hello.wait().await;
        }
    };
    monoio::time::timeout(ctx.plan.net.connect_timeout, wait)
        .await
        .map_err(|_| SetupError::HelloTimeout)?
}
