//! One ticket's transfer: the pump that moves the PUT's body through a bounded window
//! to the GET response, and the endings of PROTOCOL §6.2.
//!
//! One task owns both sockets. It reads the PUT only while the window has room and
//! writes the GET whenever the window holds bytes, with raw non-blocking syscalls; it
//! awaits readiness only when a syscall would block, so dropping a wait (the `select!`
//! below) never loses bytes on either driver.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use super::body::{framing_of, BodyIn, BodyOut, Decoded, Framing, ReadPlan, Window};
use super::registry::{AbortFlag, Ending, SideConn};
use crate::http::head::RequestHead;
use crate::modes::StyleHost;
use crate::net::{self, Linger};
use crate::stats::Gauge;
use crate::sys;

/// Rounds of syscalls the pump makes without awaiting before it yields to the shard's
/// other tasks: a fast pair of sockets would otherwise never block and starve them.
const ROUNDS_BEFORE_YIELD: u32 = 32;

/// The PUT side of a transfer.
pub(super) struct PutSide {
    /// Its socket.
    pub(super) conn: SideConn,
    /// Its request head.
    pub(super) head: RequestHead,
    /// Body bytes read before the transfer began.
    pub(super) pre: Vec<u8>,
}

/// How the pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The whole body reached the GET socket.
    Done,
    /// The body went over `max_bytes`.
    TooLarge,
    /// The PUT ended early, failed, or sent a malformed chunked body.
    PutBroke {
        /// True for a malformed chunked body (the PUT then gets 400, not a silence).
        malformed: bool,
    },
    /// The GET socket failed.
    GetBroke,
    /// `abort_all` at the drain timeout.
    Aborted,
}

/// Run a transfer to its end and answer both sides; `ticket` is the registry key.
pub(super) async fn run<S: StyleHost>(
    shard: Rc<S>,
    ticket: String,
    mut put: PutSide,
    get: SideConn,
) {
    let info = shard.tickets().borrow().running_info(&ticket);
    let Some((max_bytes, abort)) = info else {
        return;
    };
    let framing = framing_of(&put.head).unwrap_or(Framing::Length(0));
    let over = matches!(framing, Framing::Length(n) if max_bytes > 0 && n > max_bytes);

    let mut pump = Pump {
        body: BodyIn::new(framing, std::mem::take(&mut put.pre)),
        out: BodyOut::new(framing),
        window: Window::new(shard.tickets().borrow().settings().window),
        max_bytes,
    };
    // The GET's head goes out before the PUT's body is read (or refused), so every ending
    // after this is a response broken off short of its length or final chunk (PROTOCOL
    // §6.2), never an empty reply — which a balancer in front would turn into its own
    // complete `502`. A declared length over the cap is then refused before a body byte
    // moves.
    let stop = if pump.push(&*shard, &get).is_err() {
        Stop::GetBroke
    } else if over {
        Stop::TooLarge
    } else {
        pump.run(&*shard, &put.conn, &get, &abort).await
    };
    let bytes = pump.body.total;
    let ending = finish(&*shard, &ticket, stop);
    answer(ending, bytes, put.conn, get).await;
}

/// Record the ending: the ticket is spent, the gauge falls, the outcome is counted.
fn finish<S: StyleHost>(shard: &S, ticket: &str, stop: Stop) -> (Ending, bool) {
    let (ending, malformed) = match stop {
        Stop::Done => (Ending::Ok, false),
        Stop::TooLarge => (Ending::TooLarge, false),
        Stop::PutBroke { malformed } => (Ending::PutAborted, malformed),
        Stop::GetBroke => (Ending::GetAborted, false),
        Stop::Aborted => (Ending::Shutdown, false),
    };
    let was_unfinished = shard.tickets().borrow_mut().end(ticket, Instant::now());
    let mut stats = shard.stats();
    if was_unfinished {
        stats.gauge_add(Gauge::Tickets, -1);
    }
    stats.event(ending.event());
    (ending, malformed)
}

/// Answer the PUT and close the GET as the ending says.
async fn answer(ending: (Ending, bool), bytes: u64, put: SideConn, get: SideConn) {
    let (status, error) = match ending {
        (Ending::Ok, _) => (200, None),
        (Ending::TooLarge, _) => (413, Some("body larger than the ticket's max_bytes")),
        (Ending::GetAborted, _) => (502, Some("the receiving side disconnected")),
        (Ending::PutAborted, true) => (400, Some("malformed chunked body")),
        (Ending::PutAborted, false) => (400, Some("the request body ended early")),
        (Ending::Shutdown, _) => (503, Some("shutting down")),
    };
    if status == 200 {
        // The GET's whole response is written: let it read to the end, then close.
        monoio::spawn(linger_close(get));
    } else {
        // Aborted: close now, short of its Content-Length or final chunk.
        sys::shutdown_both(get.stream.as_raw_fd());
        drop(get);
    }
    let body = put_body(bytes, error);
    let resp =
        crate::http::response::close_response(status, "application/json", &[], body.as_bytes());
    respond(put, &resp).await;
}

/// `{"bytes":n,"status":"ok"}` or `{"bytes":n,"error":…,"status":"error"}`.
fn put_body(bytes: u64, error: Option<&str>) -> String {
    match error {
        None => serde_json::json!({"bytes": bytes, "status": "ok"}).to_string(),
        Some(error) => {
            serde_json::json!({"bytes": bytes, "status": "error", "error": error}).to_string()
        }
    }
}

/// Write a final response, half-close, and linger briefly (bounded) for the client to
/// read it before the socket closes (`net::Linger::UPLOAD`: an uploader may be mid-body).
pub(super) async fn respond(conn: SideConn, resp: &[u8]) {
    let mut link = conn.link.take();
    net::respond_and_close(&conn.stream, &mut link, resp, Linger::UPLOAD).await;
}

/// Half-close, then read and drop what the client still sends until EOF (bounded).
async fn linger_close(conn: SideConn) {
    let mut link = conn.link.take();
    net::linger_close(&conn.stream, &mut link, Linger::UPLOAD).await;
}

/// The moving parts of one transfer.
struct Pump {
    /// The PUT's body decoder.
    body: BodyIn,
    /// The GET's response framer.
    out: BodyOut,
    /// Bytes between the two.
    window: Window,
    /// Body cap; 0 = unlimited.
    max_bytes: u64,
}

/// What one attempt at the PUT did.
enum Pulled {
    /// Payload bytes were added (0 when only framing was consumed).
    Some,
    /// The socket has nothing now.
    Blocked,
}

impl Pump {
    /// Move bytes until the body is through or a side breaks.
    async fn run<S: StyleHost>(
        &mut self,
        shard: &S,
        put: &SideConn,
        get: &SideConn,
        abort: &AbortFlag,
    ) -> Stop {
        let mut rounds = 0;
        loop {
            if abort.is_raised() {
                return Stop::Aborted;
            }
            let mut progressed = false;
            let mut put_blocked = false;
            if !self.body.is_done() && self.window.room() > 0 {
                match self.pull(shard, put) {
                    Ok(Pulled::Some) => progressed = true,
                    Ok(Pulled::Blocked) => put_blocked = true,
                    Err(stop) => return stop,
                }
            }
            self.out.frame(self.window.len());
            if self.body.is_done() {
                self.out.frame(self.window.len());
                if self.window.len() == 0 {
                    self.out.finish();
                }
            }
            let mut get_blocked = false;
            if self.out.has_pending() {
                match self.push(shard, get) {
                    Ok(true) => progressed = true,
                    Ok(false) => get_blocked = true,
                    Err(()) => return Stop::GetBroke,
                }
            } else if self.body.is_done() {
                return Stop::Done;
            }
            if progressed {
                rounds += 1;
                if rounds >= ROUNDS_BEFORE_YIELD {
                    rounds = 0;
                    net::yield_now().await;
                }
                continue;
            }
            rounds = 0;
            if let Err(stop) = wait(put, get, abort, put_blocked, get_blocked).await {
                return stop;
            }
        }
    }

    /// Take what the PUT has (decoded, into the window), under the cap.
    fn pull<S: StyleHost>(&mut self, shard: &S, put: &SideConn) -> Result<Pulled, Stop> {
        let room = self.window.room();
        let added = match self.body.decode_buffered(self.window.tail(room), room) {
            Ok(Decoded::Bytes(n)) => Some(n),
            Ok(Decoded::NeedInput) => self.read_socket(put, room)?,
            Err(_) => return Err(Stop::PutBroke { malformed: true }),
        };
        let Some(added) = added else {
            return Ok(Pulled::Blocked);
        };
        shard.stats().message_in(added);
        if self.max_bytes > 0 && self.body.total > self.max_bytes {
            let excess = usize::try_from(self.body.total - self.max_bytes).unwrap_or(usize::MAX);
            self.window.unappend(excess);
            return Err(Stop::TooLarge);
        }
        Ok(Pulled::Some)
    }

    /// One non-blocking read from the PUT. `Ok(None)`: nothing there now.
    fn read_socket(&mut self, put: &SideConn, room: usize) -> Result<Option<usize>, Stop> {
        let read = match self.body.read_plan(room) {
            ReadPlan::Direct(max) => put
                .recv_into(self.window.tail(max), max)
                .inspect(|&n| self.body.took_direct(n)),
            ReadPlan::Raw(max) => put.recv_into(self.body.raw_buffer(), max),
        };
        match read {
            Ok(0) => Err(Stop::PutBroke { malformed: false }),
            Ok(n) => match self.body.read_plan(room) {
                ReadPlan::Direct(_) => Ok(Some(n)),
                ReadPlan::Raw(_) => {
                    let tail = self.window.tail(room);
                    match self.body.decode_buffered(tail, room) {
                        Ok(Decoded::Bytes(m)) => Ok(Some(m)),
                        Ok(Decoded::NeedInput) => Ok(Some(0)),
                        Err(_) => Err(Stop::PutBroke { malformed: true }),
                    }
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
            Err(_) => Err(Stop::PutBroke { malformed: false }),
        }
    }

    /// One vectored write to the GET. `Ok(false)`: the socket is full.
    fn push<S: StyleHost>(&mut self, shard: &S, get: &SideConn) -> Result<bool, ()> {
        let sent = {
            let slices = self.out.slices(self.window.data());
            get.send_vectored(&slices)
        };
        match sent {
            Ok(n) => {
                let payload = self.out.advance(n);
                self.window.consume(payload);
                if payload > 0 {
                    shard.stats().message_out(payload);
                }
                Ok(n > 0)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err(()),
        }
    }
}

/// Wait until a blocked side may move again (or the abort flag rises).
async fn wait(
    put: &SideConn,
    get: &SideConn,
    abort: &AbortFlag,
    put_blocked: bool,
    get_blocked: bool,
) -> Result<(), Stop> {
    monoio::select! {
        r = put.stream.readable(false), if put_blocked => {
            r.map_err(|_| Stop::PutBroke { malformed: false })
        }
        r = get.stream.writable(false), if get_blocked => r.map_err(|_| Stop::GetBroke),
        _ = abort.raised() => Err(Stop::Aborted),
    }
}
