//! One client connection: the upgrade (routing decided in the handshake callback so
//! `400`/`404`/`409` go out before the `101`), then a reader loop on this task and a
//! writer task draining the connection's bounded outbox.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::registry::{close_message, Outbox, PairGuard, Registry};
use crate::tls::Io;

/// Outbox capacity in messages: 1024 × 64 B probes is far more than any run keeps in
/// flight, so only a stuck reader ever sees it full.
const OUTBOX_MESSAGES: usize = 1024;
/// Messages a writer feeds before one flush (one `write` for a burst).
const WRITE_BATCH: usize = 64;
/// Largest message accepted, as shardrelay's default `--max-message`.
const MAX_MESSAGE: usize = 256 << 10;
/// How long a refused connection gets to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<Io>;

/// What the request head asked for.
enum Route {
    Binary(String),
    Phone(String),
    Pair(PairGuard),
}

/// An envelope from a binary: `{"conn_id":…,"frame":…,"close_code":…}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    conn_id: Cow<'a, str>,
    #[serde(borrow)]
    frame: Option<&'a RawValue>,
    close_code: Option<u16>,
}

/// Upgrades `socket`, then runs it in the role its request asked for.
// The handshake callback's error type is tungstenite's `http::Response`, not ours to shrink.
#[allow(clippy::result_large_err)]
pub async fn serve(socket: Io, registry: Arc<Registry>) {
    let (outbox, queue) = mpsc::channel(OUTBOX_MESSAGES);
    let mut route = None;
    let callback =
        |request: &Request, response: Response| match route_request(request, &registry, &outbox) {
            Ok(chosen) => {
                route = Some(chosen);
                Ok(response)
            }
            Err((status, body)) => {
                let mut refusal = ErrorResponse::new(Some(body.to_owned()));
                *refusal.status_mut() = status;
                Err(refusal)
            }
        };
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
    let upgraded =
        tokio_tungstenite::accept_hdr_async_with_config(socket, callback, Some(config)).await;
    let (Ok(ws), Some(route)) = (upgraded, route) else {
        return;
    };
    match route {
        Route::Binary(server_id) => match registry.claim_server(&server_id, outbox) {
            Ok(_guard) => run_binary(ws, queue, &registry, &server_id).await,
            Err((code, reason)) => refuse(ws, code, reason).await,
        },
        Route::Phone(server_id) => match registry.attach_phone(&server_id, outbox.clone()) {
            Ok((mut guard, binary)) => {
                let prefix = format!(
                    r#"{{"conn_id":{},"frame":"#,
                    serde_json::Value::from(guard.conn_id.as_str())
                );
                guard.close_code = run_phone(ws, queue, &outbox, &binary, &prefix).await;
            }
            Err((code, reason)) => refuse(ws, code, reason).await,
        },
        Route::Pair(mut guard) => {
            guard.clean = run_pair(ws, queue, &registry, &guard).await;
        }
    }
}

/// Checks the head and claims what can be claimed before the `101`.
fn route_request(
    request: &Request,
    registry: &Arc<Registry>,
    outbox: &Outbox,
) -> Result<Route, (StatusCode, &'static str)> {
    let header = |name: &str| {
        let value = request.headers().get(name)?.to_str().ok()?;
        (!value.is_empty()).then(|| value.to_owned())
    };
    let need = |names: [&str; 3]| {
        let mut values = names.map(header);
        match values.iter().all(Option::is_some) {
            true => Ok(values[0].take().unwrap_or_default()),
            false => Err((StatusCode::BAD_REQUEST, "")),
        }
    };
    match request.uri().path() {
        "/v1/server" => {
            need(["X-Pyrycode-Server", "X-Pyrycode-Version", "User-Agent"]).map(Route::Binary)
        }
        "/v1/client" => {
            need(["X-Pyrycode-Server", "X-Pyrycode-Token", "User-Agent"]).map(Route::Phone)
        }
        "/" | "/v1/pair" => {
            let code = request
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("pair="))
                .filter(|code| (1..=256).contains(&code.len()))
                .ok_or((StatusCode::BAD_REQUEST, "missing pair code"))?;
            registry
                .join_pair(code, outbox.clone())
                .map(Route::Pair)
                .ok_or((StatusCode::CONFLICT, "pair is full"))
        }
        _ => Err((StatusCode::NOT_FOUND, "not found")),
    }
}

/// Closes a freshly upgraded connection with `refusal`'s code.
async fn refuse(mut ws: Ws, code: u16, reason: &str) {
    let close = close_message(code, reason);
    let drain = async {
        let _ = ws.send(close).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

/// Starts the writer task; the caller aborts it once its reader is done.
fn spawn_writer(ws: Ws, queue: mpsc::Receiver<Message>) -> (SplitStream<Ws>, WriterTask) {
    let (sink, stream) = ws.split();
    (stream, WriterTask(tokio::spawn(write_loop(sink, queue))))
}

/// Aborts the writer when the reader returns, however it returns.
struct WriterTask(tokio::task::JoinHandle<()>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drains the outbox: feeds whatever is queued (up to a batch), then flushes once.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut queue: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for message in batch.drain(..) {
            let closing = message.is_close();
            if sink.feed(message).await.is_err() || closing {
                let _ = sink.flush().await;
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// A binary: every envelope goes to the phone it names, as the exact `frame` bytes.
async fn run_binary(ws: Ws, queue: mpsc::Receiver<Message>, registry: &Registry, sid: &str) {
    let (mut stream, _writer) = spawn_writer(ws, queue);
    while let Some(Ok(message)) = stream.next().await {
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            _ => continue,
        };
        // Malformed or misaddressed envelopes are dropped; the binary stays.
        let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(bytes) else {
            continue;
        };
        let Some(phone) = registry.phone(sid, &envelope.conn_id) else {
            continue;
        };
        // A binary is never stalled by a phone: a full phone outbox drops (shardrelay
        // closes that phone with 1011 instead).
        if let Some(frame) = envelope.frame {
            let _ = phone.try_send(Message::text(frame.get()));
        }
        if let Some(code) = envelope.close_code {
            let _ = phone.try_send(close_message(code, ""));
        }
    }
}

/// A phone: each JSON message goes to the binary inside an envelope. Returns the
/// close code the phone sent (1006 if none).
async fn run_phone(
    ws: Ws,
    queue: mpsc::Receiver<Message>,
    own: &Outbox,
    binary: &Outbox,
    prefix: &str,
) -> u16 {
    let (mut stream, _writer) = spawn_writer(ws, queue);
    let mut close_code = 1006;
    while let Some(Ok(message)) = stream.next().await {
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => {
                close_code = frame.as_ref().map_or(1005, |f| f.code.into());
                continue;
            }
            _ => continue,
        };
        if serde_json::from_slice::<&RawValue>(bytes).is_err() {
            let _ = own.try_send(close_message(1007, "frame is not JSON"));
            continue;
        }
        let mut envelope = String::with_capacity(prefix.len() + bytes.len() + 1);
        envelope.push_str(prefix);
        envelope.push_str(&String::from_utf8_lossy(bytes));
        envelope.push('}');
        // A slow binary pauses its phones (back-pressure), never drops them.
        if binary.send(Message::text(envelope)).await.is_err() {
            break;
        }
    }
    close_code
}

/// A pair side: binary messages go verbatim to the other side; text is dropped.
/// Returns whether this side closed cleanly.
async fn run_pair(
    ws: Ws,
    queue: mpsc::Receiver<Message>,
    registry: &Registry,
    guard: &PairGuard,
) -> bool {
    let (mut stream, _writer) = spawn_writer(ws, queue);
    let mut peer = None;
    let mut clean = false;
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Binary(bytes) => {
                if peer.is_none() {
                    peer = registry.pair_peer(guard);
                }
                // Before the other side arrives the message is dropped (shardrelay
                // queues it); a full peer outbox stops this reader (back-pressure).
                if let Some(outbox) = &peer {
                    if outbox.send(Message::Binary(bytes)).await.is_err() {
                        peer = None;
                    }
                }
            }
            Message::Close(_) => clean = true,
            _ => {}
        }
    }
    clean
}
