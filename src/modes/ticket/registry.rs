//! The ticket table of one shard: which tickets exist, which of their sides are
//! claimed, and how each ended. Pure bookkeeping, no I/O: the serving tasks
//! (`serve`, `transfer`) act on the decisions made here, and time is a parameter.
//!
//! A ticket goes `Open` (0–1 sides waiting) → `Running` (both sides met; one task
//! pumps the body) → `Ended` (kept, answering 410, until its original expiry, or for
//! `ENDED_GRACE` when it ended at or after that expiry, so a 408 is followed by 410),
//! then it is removed (404).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use std::io;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use crate::config::Config;
use crate::http::head::RequestHead;
use crate::modes::{Role, StyleHost};
use crate::net::ConnPermit;
use crate::stats::{ConnKind, Event};
use crate::timer::Reminders;
use crate::tls::Link;
use crate::ws::conn::Outbox;

/// How long a ticket that ended at or past its expiry still answers 410: enough for a
/// client that got 408 to retry and learn the ticket is spent rather than unknown.
pub(super) const ENDED_GRACE: Duration = Duration::from_secs(30);

/// Most tickets (of any phase) one shard holds (its workspaces' tickets); each costs a
/// few hundred bytes, so 100 000 caps the table near 50 MiB.
pub(super) const MAX_TICKETS: usize = 100_000;

/// The two sides of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TicketSide {
    /// `PUT /v1/relay`: the sender of the body.
    Put,
    /// `GET /v1/relay`: the receiver.
    Get,
}

impl TicketSide {
    /// The `/stats` connection kind.
    pub(super) fn conn_kind(self) -> ConnKind {
        match self {
            TicketSide::Put => ConnKind::TicketPut,
            TicketSide::Get => ConnKind::TicketGet,
        }
    }

    /// The 423 body for this side.
    pub(super) fn claimed_message(self) -> &'static str {
        match self {
            TicketSide::Put => "PUT side already claimed",
            TicketSide::Get => "GET side already claimed",
        }
    }
}

/// A ticket side's socket, counted as an open connection of its kind for as long as it
/// lives (the `Drop` counts the close, so no early return can leak the gauge).
pub(super) struct SideConn {
    /// The client's socket.
    pub(super) stream: TcpStream,
    /// Its transport (plain, or TLS): every read and write of the body goes through it.
    pub(super) link: RefCell<Link>,
    /// Which side.
    pub(super) side: TicketSide,
    /// The connection's place under `--max-connections`, held for its whole life.
    _permit: ConnPermit,
    /// The shard whose stats count this connection (its close is counted from `Drop`,
    /// once per side: a dynamic call there costs nothing that matters).
    shard: Rc<dyn Outbox<Role>>,
}

impl SideConn {
    /// Count a newly served side.
    pub(super) fn open<S: StyleHost>(
        shard: &Rc<S>,
        stream: TcpStream,
        link: Link,
        side: TicketSide,
        permit: ConnPermit,
    ) -> Self {
        shard.stats().conn_opened(side.conn_kind());
        SideConn {
            stream,
            link: RefCell::new(link),
            side,
            _permit: permit,
            shard: shard.clone() as Rc<dyn Outbox<Role>>,
        }
    }
}

impl SideConn {
    /// Read (and over TLS decrypt) what the socket has, as `sys::recv_into`.
    pub(super) fn recv_into(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        self.link.borrow_mut().recv_into(fd, buf, max)
    }

    /// Write what the socket takes (sealed over TLS), as `sys::send_vectored`.
    pub(super) fn send_vectored(&self, slices: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        self.link.borrow_mut().send_vectored(fd, slices)
    }
}

impl Drop for SideConn {
    fn drop(&mut self) {
        self.shard.stats().conn_closed(self.side.conn_kind());
    }
}

/// A side that arrived second, handed to the waiting side's task, which runs the
/// transfer.
pub(super) struct Arrived {
    /// Its socket.
    pub(super) conn: SideConn,
    /// Its request head (the PUT's says how the body is framed).
    pub(super) head: RequestHead,
    /// Bytes it sent after its head.
    pub(super) leftover: Vec<u8>,
}

/// Why a waiting side stops waiting.
pub(super) enum Wakeup {
    /// The other side arrived: run the transfer.
    Peer(Box<Arrived>),
    /// The ticket expired first: 408.
    Expired,
    /// The relay is shutting down: 503.
    ShuttingDown,
}

/// A single-thread, single-waiter latch carrying why a waiting side was woken.
#[derive(Default)]
pub(super) struct Waiter {
    /// The reason, once given.
    wakeup: RefCell<Option<Wakeup>>,
    /// The waiting task.
    waker: RefCell<Option<Waker>>,
}

impl Waiter {
    /// Give the reason and wake the task (the first reason wins).
    pub(super) fn wake(&self, why: Wakeup) {
        let mut slot = self.wakeup.borrow_mut();
        if slot.is_none() {
            *slot = Some(why);
        }
        drop(slot);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Take the reason, if one was given.
    pub(super) fn take(&self) -> Option<Wakeup> {
        self.wakeup.borrow_mut().take()
    }

    /// Wait until a reason is given (it stays in place for `take`).
    pub(super) async fn woken(&self) {
        poll_fn(|cx| {
            if self.wakeup.borrow().is_some() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A one-shot flag a running transfer watches: set by `abort_all` at the drain timeout.
#[derive(Default)]
pub(super) struct AbortFlag {
    /// Set.
    set: Cell<bool>,
    /// The transfer task.
    waker: RefCell<Option<Waker>>,
}

impl AbortFlag {
    /// Raise the flag and wake the transfer.
    pub(super) fn raise(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Raised already.
    pub(super) fn is_raised(&self) -> bool {
        self.set.get()
    }

    /// Wait until raised.
    pub(super) async fn raised(&self) {
        poll_fn(|cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Where a ticket is in its life.
enum Phase {
    /// Minted; at most one side waiting per side.
    Open {
        /// The waiting PUT, if any.
        put: Option<Rc<Waiter>>,
        /// The waiting GET, if any.
        get: Option<Rc<Waiter>>,
    },
    /// Both sides met; a task pumps the body.
    Running(Rc<AbortFlag>),
    /// Spent; answers 410 until `until`.
    Ended {
        /// When it is forgotten (404 after).
        until: Instant,
    },
}

/// One minted ticket.
struct Ticket {
    /// Its workspace, for the concurrent-relay cap.
    workspace: Rc<str>,
    /// The original expiry.
    expires_at: Instant,
    /// Body cap in bytes; 0 = unlimited.
    max_bytes: u64,
    /// Life phase.
    phase: Phase,
}

/// What a side arriving at a ticket gets.
pub(super) enum Claim {
    /// No such ticket, or forgotten: 404.
    NotFound,
    /// Spent: 410.
    Finished,
    /// That side is taken: 423.
    AlreadyClaimed,
    /// First side: wait on this latch.
    Wait(Rc<Waiter>),
    /// Second side: hand yourself to this waiter (the ticket is now running).
    Meet(Rc<Waiter>),
}

/// What minting can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MintRefusal {
    /// The workspace holds its cap of unfinished tickets.
    WorkspaceCap,
    /// The shard's table is full.
    TableFull,
}

/// What a transfer ends with (for the `/stats` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// The whole body went through.
    Ok,
    /// The body was over `max_bytes`.
    TooLarge,
    /// The PUT broke off.
    PutAborted,
    /// The GET broke off.
    GetAborted,
    /// Refused at shutdown or aborted at the drain timeout.
    Shutdown,
}

impl Ending {
    /// The `/stats` event name.
    pub(super) fn event(self) -> Event {
        match self {
            Ending::Ok => Event::TicketsOk,
            Ending::TooLarge => Event::TicketsTooLarge,
            Ending::PutAborted => Event::TicketsPutAborted,
            Ending::GetAborted => Event::TicketsGetAborted,
            Ending::Shutdown => Event::TicketsShutdown,
        }
    }
}

/// The settings the ticket glue uses, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--ticket-window`: bytes of a body held between the PUT and the GET.
    pub window: usize,
    /// `--max-relays-per-workspace`: unfinished tickets one workspace may hold.
    pub max_relays_per_workspace: usize,
    /// `--handshake-timeout`: how long a mint request's body may take to arrive.
    pub handshake_timeout: Duration,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            window: config.ticket_window,
            max_relays_per_workspace: config.max_relays_per_workspace,
            handshake_timeout: config.handshake_timeout,
        }
    }
}

/// The tickets minted by one shard.
pub struct Registry {
    /// The settings the glue reads.
    settings: Settings,
    /// Tickets by their bearer string (kept in memory only; never logged).
    tickets: HashMap<String, Ticket>,
    /// Unfinished tickets per workspace.
    unfinished: HashMap<Rc<str>, usize>,
    /// Transfers running now (shutdown waits for them).
    running: usize,
    /// A reminder at each ticket's expiry and at the end of its 410 window, so that a
    /// tick looks at the tickets with something due, not at every ticket (issue 20).
    /// Holds copies of the ticket strings: in memory only, like `tickets`, never printed.
    reminders: Reminders<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tickets themselves.
        f.debug_struct("Registry")
            .field("tickets", &self.tickets.len())
            .field("running", &self.running)
            .finish()
    }
}

impl Registry {
    /// An empty table.
    pub fn new(settings: Settings) -> Self {
        Registry {
            settings,
            tickets: HashMap::new(),
            unfinished: HashMap::new(),
            running: 0,
            reminders: Reminders::default(),
        }
    }

    /// The settings the glue reads.
    pub(super) fn settings(&self) -> Settings {
        self.settings
    }

    /// Check the caps for one more ticket in `workspace`.
    pub(super) fn may_mint(&self, workspace: &str, cap: usize) -> Result<(), MintRefusal> {
        if self.tickets.len() >= MAX_TICKETS {
            return Err(MintRefusal::TableFull);
        }
        let held = self.unfinished.get(workspace).copied().unwrap_or(0);
        if held >= cap {
            return Err(MintRefusal::WorkspaceCap);
        }
        Ok(())
    }

    /// True if the string is already a ticket here (a redraw is needed).
    pub(super) fn contains(&self, ticket: &str) -> bool {
        self.tickets.contains_key(ticket)
    }

    /// Record a freshly minted ticket.
    pub(super) fn insert(
        &mut self,
        ticket: String,
        workspace: &str,
        expires_at: Instant,
        max_bytes: u64,
    ) {
        let workspace: Rc<str> = match self.unfinished.get_key_value(workspace) {
            Some((key, _)) => key.clone(),
            None => Rc::from(workspace),
        };
        *self.unfinished.entry(workspace.clone()).or_insert(0) += 1;
        let phase = Phase::Open {
            put: None,
            get: None,
        };
        self.reminders.remind(expires_at, ticket.clone());
        self.tickets.insert(
            ticket,
            Ticket {
                workspace,
                expires_at,
                max_bytes,
                phase,
            },
        );
    }

    /// A side arrives at `ticket` at `now`.
    pub(super) fn claim(&mut self, ticket: &str, side: TicketSide, now: Instant) -> Claim {
        let Some(entry) = self.tickets.get_mut(ticket) else {
            return Claim::NotFound;
        };
        match &mut entry.phase {
            Phase::Ended { .. } => Claim::Finished,
            Phase::Running(_) => Claim::AlreadyClaimed,
            Phase::Open { .. } if now >= entry.expires_at => Claim::NotFound,
            Phase::Open { put, get } => {
                let (mine, theirs) = match side {
                    TicketSide::Put => (put, get),
                    TicketSide::Get => (get, put),
                };
                if mine.is_some() {
                    return Claim::AlreadyClaimed;
                }
                if let Some(waiter) = theirs.take() {
                    entry.phase = Phase::Running(Rc::new(AbortFlag::default()));
                    self.running += 1;
                    return Claim::Meet(waiter);
                }
                let waiter = Rc::new(Waiter::default());
                *mine = Some(waiter.clone());
                Claim::Wait(waiter)
            }
        }
    }

    /// A waiting side left (its client disconnected): free its claim if it still
    /// holds it. Returns false if it was already matched or woken (it must look at its
    /// waiter instead).
    pub(super) fn release(&mut self, ticket: &str, waiter: &Rc<Waiter>) -> bool {
        let Some(Ticket {
            phase: Phase::Open { put, get },
            ..
        }) = self.tickets.get_mut(ticket)
        else {
            return false;
        };
        for slot in [put, get] {
            if slot.as_ref().is_some_and(|w| Rc::ptr_eq(w, waiter)) {
                *slot = None;
                return true;
            }
        }
        false
    }

    /// The body cap and abort flag of a running ticket.
    pub(super) fn running_info(&self, ticket: &str) -> Option<(u64, Rc<AbortFlag>)> {
        match self.tickets.get(ticket) {
            Some(Ticket {
                phase: Phase::Running(flag),
                max_bytes,
                ..
            }) => Some((*max_bytes, flag.clone())),
            _ => None,
        }
    }

    /// The ticket ended at `now` (transfer over, or timed out): it answers 410 from now
    /// on and no longer counts against its workspace. Returns whether it was unfinished.
    pub(super) fn end(&mut self, ticket: &str, now: Instant) -> bool {
        let Some(entry) = self.tickets.get_mut(ticket) else {
            return false;
        };
        if matches!(entry.phase, Phase::Ended { .. }) {
            return false;
        }
        if matches!(entry.phase, Phase::Running(_)) {
            self.running = self.running.saturating_sub(1);
        }
        let until = if now < entry.expires_at {
            entry.expires_at
        } else {
            now + ENDED_GRACE
        };
        entry.phase = Phase::Ended { until };
        let workspace = entry.workspace.clone();
        self.reminders.remind(until, ticket.to_owned());
        self.uncount(&workspace);
        true
    }

    /// One fewer unfinished ticket in `workspace`.
    fn uncount(&mut self, workspace: &Rc<str>) {
        if let Some(n) = self.unfinished.get_mut(workspace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unfinished.remove(workspace);
            }
        }
    }

    /// Expire what is due at `now`. Returns the waiters to wake with 408 and how many
    /// unfinished tickets left the table (never used, or timed out). Looks only at the
    /// tickets reminded of; a stale reminder (the ticket moved on, or is gone) is skipped.
    pub(super) fn sweep(&mut self, now: Instant) -> Swept {
        let mut swept = Swept::default();
        while let Some(key) = self.reminders.pop_due(now) {
            let Some(entry) = self.tickets.get_mut(&key) else {
                continue;
            };
            match &mut entry.phase {
                Phase::Open { put, get } if now >= entry.expires_at => {
                    let waiters: Vec<Rc<Waiter>> =
                        put.take().into_iter().chain(get.take()).collect();
                    let workspace = entry.workspace.clone();
                    if waiters.is_empty() {
                        self.tickets.remove(&key);
                        swept.unused += 1;
                    } else {
                        swept.timed_out += 1;
                        swept.waiters.extend(waiters);
                        let until = now + ENDED_GRACE;
                        entry.phase = Phase::Ended { until };
                        self.reminders.remind(until, key);
                    }
                    self.uncount(&workspace);
                    swept.unfinished_gone += 1;
                }
                Phase::Ended { until } if now >= *until => {
                    self.tickets.remove(&key);
                }
                _ => {}
            }
        }
        swept
    }

    /// Shutdown: every waiting side, taken out of its ticket (its claim freed).
    pub(super) fn take_all_waiters(&mut self) -> Vec<Rc<Waiter>> {
        let mut out = Vec::new();
        for entry in self.tickets.values_mut() {
            if let Phase::Open { put, get } = &mut entry.phase {
                out.extend(put.take());
                out.extend(get.take());
            }
        }
        out
    }

    /// Every running transfer's abort flag.
    pub(super) fn abort_flags(&self) -> Vec<Rc<AbortFlag>> {
        self.tickets
            .values()
            .filter_map(|entry| match &entry.phase {
                Phase::Running(flag) => Some(flag.clone()),
                _ => None,
            })
            .collect()
    }

    /// Transfers running now.
    pub(super) fn running(&self) -> usize {
        self.running
    }
}

/// What one sweep did.
#[derive(Default)]
pub(super) struct Swept {
    /// Waiting sides whose ticket expired: each gets 408.
    pub(super) waiters: Vec<Rc<Waiter>>,
    /// Tickets that timed out with a side waiting.
    pub(super) timed_out: u64,
    /// Tickets that expired with no side ever waiting.
    pub(super) unused: u64,
    /// Unfinished tickets that ended or left (the `tickets` gauge falls by this).
    pub(super) unfinished_gone: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults of `--ticket-window`, `--max-relays-per-workspace` and
    /// `--handshake-timeout` (the table's rules do not read them).
    const TEST_SETTINGS: Settings = Settings {
        window: 256 * 1024,
        max_relays_per_workspace: 64,
        handshake_timeout: Duration::from_secs(10),
    };

    fn registry_with(ticket: &str, ttl: Duration, now: Instant) -> Registry {
        let mut r = Registry::new(TEST_SETTINGS);
        r.insert(ticket.to_owned(), "ws", now + ttl, 0);
        r
    }

    #[test]
    fn sides_meet_then_423_then_410_then_404() {
        let now = Instant::now();
        let mut r = registry_with("t", Duration::from_secs(10), now);
        assert!(matches!(r.claim("t", TicketSide::Get, now), Claim::Wait(_)));
        assert!(matches!(
            r.claim("t", TicketSide::Get, now),
            Claim::AlreadyClaimed
        ));
        assert!(matches!(r.claim("t", TicketSide::Put, now), Claim::Meet(_)));
        assert!(matches!(
            r.claim("t", TicketSide::Put, now),
            Claim::AlreadyClaimed
        ));
        assert_eq!(r.running(), 1);
        assert!(r.end("t", now));
        assert_eq!(r.running(), 0);
        assert!(matches!(
            r.claim("t", TicketSide::Put, now),
            Claim::Finished
        ));
        let later = now + Duration::from_secs(11);
        let swept = r.sweep(later);
        assert_eq!(swept.unfinished_gone, 0);
        assert!(matches!(
            r.claim("t", TicketSide::Put, later),
            Claim::NotFound
        ));
    }

    #[test]
    fn workspace_cap_counts_unfinished_only() {
        let now = Instant::now();
        let mut r = Registry::new(TEST_SETTINGS);
        r.insert("a".into(), "ws", now + Duration::from_secs(5), 0);
        assert_eq!(r.may_mint("ws", 1), Err(MintRefusal::WorkspaceCap));
        assert_eq!(r.may_mint("other", 1), Ok(()));
        assert!(r.end("a", now));
        assert_eq!(r.may_mint("ws", 1), Ok(()));
    }

    #[test]
    fn released_claim_can_be_taken_again() {
        let now = Instant::now();
        let mut r = registry_with("t", Duration::from_secs(10), now);
        let Claim::Wait(w) = r.claim("t", TicketSide::Put, now) else {
            panic!("expected wait");
        };
        assert!(r.release("t", &w));
        assert!(!r.release("t", &w));
        assert!(matches!(r.claim("t", TicketSide::Put, now), Claim::Wait(_)));
    }

    #[test]
    fn expiry_times_out_waiters_and_keeps_410() {
        let now = Instant::now();
        let mut r = registry_with("t", Duration::from_secs(1), now);
        assert!(matches!(r.claim("t", TicketSide::Put, now), Claim::Wait(_)));
        let at = now + Duration::from_secs(1);
        let swept = r.sweep(at);
        assert_eq!(swept.waiters.len(), 1);
        assert_eq!(swept.timed_out, 1);
        assert_eq!(swept.unfinished_gone, 1);
        assert!(matches!(r.claim("t", TicketSide::Get, at), Claim::Finished));
        let swept = r.sweep(at + ENDED_GRACE);
        assert_eq!(swept.unfinished_gone, 0);
        assert!(matches!(
            r.claim("t", TicketSide::Get, at + ENDED_GRACE),
            Claim::NotFound
        ));
        assert_eq!(r.may_mint("ws", 1), Ok(()));
    }

    #[test]
    fn unused_expiry_is_forgotten() {
        let now = Instant::now();
        let mut r = registry_with("t", Duration::from_secs(1), now);
        let swept = r.sweep(now + Duration::from_secs(2));
        assert_eq!(swept.unused, 1);
        assert_eq!(swept.unfinished_gone, 1);
        assert!(!r.contains("t"));
    }
}
