//! The one registry every connection shares, the usual way: a `Mutex<HashMap>` of
//! server-id slots and pairs, locked from whichever worker thread runs the
//! connection. Joining hands back a guard whose `Drop` leaves the registry and tells
//! the other side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A connection's bounded outbound queue, drained by its writer task.
pub type Outbox = mpsc::Sender<Message>;

/// Phones per server-id, as in shardrelay (PROTOCOL §3.2).
const MAX_PHONES: usize = 16;
/// Draws before giving up on a unique conn_id (a collision of 32 random bits among
/// at most 16 phones is already unlikely).
const CONN_ID_DRAWS: usize = 8;

/// Every live route.
#[derive(Default)]
pub struct Registry {
    /// Server-id slots and pairs, under one lock.
    routes: Mutex<Routes>,
    /// Source of connection ids, so a guard only removes its own entry.
    next_id: AtomicU64,
}

/// The map behind the lock.
#[derive(Default)]
struct Routes {
    /// Server-id → its binary and phones.
    slots: HashMap<String, ServerSlot>,
    /// Pair code → its two sides.
    pairs: HashMap<String, Pair>,
}

/// One server-id: a binary and the phones attached to it.
struct ServerSlot {
    /// The binary's connection id and outbox.
    binary: (u64, Outbox),
    /// Phones by conn_id.
    phones: HashMap<String, Outbox>,
}

/// One pair code: side A and, once it arrives, side B.
#[derive(Default)]
struct Pair {
    /// Connection id and outbox of each side.
    sides: [Option<(u64, Outbox)>; 2],
}

/// Why a server-id connection was refused after its upgrade: close code and reason.
pub type Refusal = (u16, &'static str);

/// A close message for an outbox.
pub fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Routes> {
        // A panic elsewhere leaves the maps consistent (every update is one insert or
        // remove), so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A binary claims `server_id` (no takeover probe or grace: a live slot refuses).
    pub fn claim_server(
        self: &Arc<Self>,
        server_id: &str,
        outbox: Outbox,
    ) -> Result<BinaryGuard, Refusal> {
        let mut routes = self.lock();
        if routes.slots.contains_key(server_id) {
            return Err((4409, "server-id already claimed"));
        }
        let id = self.fresh_id();
        let slot = ServerSlot {
            binary: (id, outbox),
            phones: HashMap::new(),
        };
        routes.slots.insert(server_id.to_owned(), slot);
        Ok(BinaryGuard {
            registry: Arc::clone(self),
            server_id: server_id.to_owned(),
            id,
        })
    }

    /// A phone attaches to `server_id`: its guard, the binary's outbox and its conn_id.
    pub fn attach_phone(
        self: &Arc<Self>,
        server_id: &str,
        outbox: Outbox,
    ) -> Result<(PhoneGuard, Outbox), Refusal> {
        let mut routes = self.lock();
        let Some(slot) = routes.slots.get_mut(server_id) else {
            return Err((4404, "no server with that id"));
        };
        if slot.phones.len() >= MAX_PHONES {
            return Err((4429, "too many phones for server-id"));
        }
        let conn_id = (0..CONN_ID_DRAWS)
            .map(|_| new_conn_id(server_id, self.fresh_id()))
            .find(|id| !slot.phones.contains_key(id))
            .ok_or((1011, "no free conn_id"))?;
        slot.phones.insert(conn_id.clone(), outbox);
        let guard = PhoneGuard {
            registry: Arc::clone(self),
            server_id: server_id.to_owned(),
            conn_id,
            close_code: 1006,
        };
        Ok((guard, slot.binary.1.clone()))
    }

    /// The outbox of phone `conn_id` on `server_id`, if it is attached there.
    pub fn phone(&self, server_id: &str, conn_id: &str) -> Option<Outbox> {
        self.lock()
            .slots
            .get(server_id)?
            .phones
            .get(conn_id)
            .cloned()
    }

    /// Joins pair `code` as its first free side; `None` when both sides are taken.
    pub fn join_pair(self: &Arc<Self>, code: &str, outbox: Outbox) -> Option<PairGuard> {
        let mut routes = self.lock();
        let pair = routes.pairs.entry(code.to_owned()).or_default();
        let side = pair.sides.iter().position(Option::is_none)?;
        let id = self.fresh_id();
        pair.sides[side] = Some((id, outbox));
        Some(PairGuard {
            registry: Arc::clone(self),
            code: code.to_owned(),
            side,
            id,
            clean: false,
        })
    }

    /// The other side of `guard`'s pair, once it has arrived.
    pub fn pair_peer(&self, guard: &PairGuard) -> Option<Outbox> {
        let routes = self.lock();
        let (_, outbox) = routes.pairs.get(&guard.code)?.sides[1 - guard.side].as_ref()?;
        Some(outbox.clone())
    }
}

/// `client-<server-id>-<8 lowercase hex from the OS CSPRNG>`.
/// Should the OS CSPRNG fail, `fallback` (a fresh counter value) keeps ids unique.
fn new_conn_id(server_id: &str, fallback: u64) -> String {
    let mut bytes = [0u8; 4];
    let suffix = match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_be_bytes(bytes),
        Err(_) => fallback as u32,
    };
    format!("client-{server_id}-{suffix:08x}")
}

/// A binary's hold on its slot; dropping it frees the slot and closes its phones
/// (no grace window in the baseline).
pub struct BinaryGuard {
    registry: Arc<Registry>,
    server_id: String,
    id: u64,
}

impl Drop for BinaryGuard {
    fn drop(&mut self) {
        let mut routes = self.registry.lock();
        let Some(slot) = routes.slots.remove(&self.server_id) else {
            return;
        };
        // Claims never replace a live slot, so the slot found is this binary's own.
        debug_assert_eq!(slot.binary.0, self.id);
        for phone in slot.phones.values() {
            let _ = phone.try_send(close_message(1011, "binary did not reconnect"));
        }
    }
}

/// A phone's place in its slot; dropping it detaches the phone and tells the binary.
pub struct PhoneGuard {
    registry: Arc<Registry>,
    server_id: String,
    /// The phone's conn_id, as the binary addresses it.
    pub conn_id: String,
    /// The close code the phone sent (1006 when it sent none), reported to the binary.
    pub close_code: u16,
}

impl Drop for PhoneGuard {
    fn drop(&mut self) {
        let mut routes = self.registry.lock();
        let Some(slot) = routes.slots.get_mut(&self.server_id) else {
            return;
        };
        if slot.phones.remove(&self.conn_id).is_some() {
            let note = format!(
                r#"{{"conn_id":{},"close_code":{}}}"#,
                serde_json::Value::from(self.conn_id.as_str()),
                self.close_code
            );
            let _ = slot.binary.1.try_send(Message::text(note));
        }
    }
}

/// One side of a pair; dropping it removes the pair and closes the other side.
pub struct PairGuard {
    registry: Arc<Registry>,
    code: String,
    side: usize,
    id: u64,
    /// Whether this side closed with a close frame (1000 for the peer, else 1011).
    pub clean: bool,
}

impl Drop for PairGuard {
    fn drop(&mut self) {
        let mut routes = self.registry.lock();
        let Some(pair) = routes.pairs.get(&self.code) else {
            return;
        };
        if pair.sides[self.side]
            .as_ref()
            .is_none_or(|(id, _)| *id != self.id)
        {
            return;
        }
        if let Some(pair) = routes.pairs.remove(&self.code) {
            if let Some((_, peer)) = &pair.sides[1 - self.side] {
                let close = if self.clean {
                    close_message(1000, "peer disconnected")
                } else {
                    close_message(1011, "peer connection failed")
                };
                let _ = peer.try_send(close);
            }
        }
    }
}
