//! Server-id routing (PROTOCOL §3, wire-compatible with pyrycode-relay): one binary holds a
//! server-id slot, up to `--max-phones-per-server` phones attach to it, and every message
//! between them travels in the JSON routing envelope. This module owns the slots of the
//! server-ids its shard owns: claim, takeover probe, grace window, phones, envelopes.
//!
//! The phone token is a courier credential: the route checks it is present and then it is
//! gone — it never reaches this module.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::logging::escaped;
use crate::modes::Conn;
use crate::modes::Role;
use crate::shard::Shard;
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::{OutFrame, Overflow};
use crate::ws::payload::Payload;

/// The rendezvous style's name in `/stats` (`forward_by_mode`).
const MODE: &str = "server_id";

/// Closing the envelope a phone's message is embedded in.
const ENVELOPE_SUFFIX: &[u8] = b"}";

/// The server-id slots this shard owns.
#[derive(Debug, Default)]
pub struct Registry {
    /// Slots by server-id.
    slots: HashMap<Rc<str>, ServerSlot, ahash::RandomState>,
}

/// One server-id: its binary (or its grace window), its phones, and a pending claim.
#[derive(Debug)]
struct ServerSlot {
    /// The binary holding the slot; None while in grace.
    binary: Option<Rc<Conn>>,
    /// When the grace window ends (set while `binary` is None).
    grace_until: Option<Instant>,
    /// Attached phones by conn_id (at most `--max-phones-per-server`: a Vec is the
    /// cheapest map at that size).
    phones: Vec<(Rc<str>, Rc<Conn>)>,
    /// A second binary waiting for the takeover probe of the holder, and its deadline.
    claimant: Option<(Rc<Conn>, Instant)>,
}

impl ServerSlot {
    /// A phone of this slot by conn_id.
    fn phone(&self, conn_id: &str) -> Option<&Rc<Conn>> {
        self.phones
            .iter()
            .find(|(id, _)| &**id == conn_id)
            .map(|(_, c)| c)
    }

    /// Take a phone out of the slot.
    fn remove_phone(&mut self, conn: &Rc<Conn>) -> bool {
        let before = self.phones.len();
        self.phones.retain(|(_, c)| !Rc::ptr_eq(c, conn));
        self.phones.len() != before
    }
}

/// A binary's part in its slot.
#[derive(Debug, Clone)]
pub struct BinaryRole {
    /// The slot's server-id.
    pub server_id: Rc<str>,
    /// Holding the slot (true) or waiting for the takeover probe (false).
    holds: bool,
    /// A newcomer is claiming this holder's slot: its next frame proves it alive.
    probed: bool,
}

impl BinaryRole {
    /// A takeover probe is waiting for this holder to answer.
    pub fn is_probed(&self) -> bool {
        self.probed
    }
}

/// A phone's part in its slot.
#[derive(Debug, Clone)]
pub struct PhoneRole {
    /// The slot's server-id.
    pub server_id: Rc<str>,
    /// `{"conn_id":"…","frame":` — shared by every message of this phone, and the only
    /// copy of its conn_id (`client-<server-id>-<8 hex>`, unique in the slot) a phone
    /// carries: the close notice and the logs take it from here.
    prefix: Rc<[u8]>,
}

/// The envelope prefix's fixed parts around the JSON-quoted conn_id.
const PREFIX_HEAD: &str = r#"{"conn_id":"#;
/// See [`PREFIX_HEAD`].
const PREFIX_TAIL: &str = r#","frame":"#;

impl PhoneRole {
    /// The conn_id as a JSON string literal, quotes included.
    fn quoted_conn_id(&self) -> &[u8] {
        &self.prefix[PREFIX_HEAD.len()..self.prefix.len() - PREFIX_TAIL.len()]
    }

    /// The conn_id for a log line (JSON-escaped, without its quotes).
    fn conn_id_for_log(&self) -> String {
        let quoted = String::from_utf8_lossy(self.quoted_conn_id());
        escaped(quoted.trim_matches('"'))
    }
}

/// A binary upgraded on `/v1/server`.
pub fn on_binary(shard: &Rc<Shard>, conn: Rc<Conn>, server_id: &str, leftover: Vec<u8>) {
    let sid: Rc<str> = Rc::from(server_id);
    let now = Instant::now();
    {
        let mut reg = shard.server_ids.borrow_mut();
        match reg.slots.get_mut(&sid) {
            None => {
                reg.slots.insert(sid.clone(), new_slot(conn.clone()));
                shard.stats.borrow_mut().gauge_add("server_slots", 1);
                set_holder(&conn, &sid);
                tracing::debug!(shard = shard.id, server_id = %escaped(&sid), "binary claimed server-id");
            }
            Some(slot) if slot.binary.is_none() => {
                take_over(shard, slot, &conn, &sid);
                tracing::debug!(shard = shard.id, server_id = %escaped(&sid), "binary reclaimed server-id from grace");
            }
            Some(slot) if slot.claimant.is_some() => {
                *conn.role.borrow_mut() = Role::Detached;
                conn.close(shard, 4409, "server-id already claimed");
                shard.stats.borrow_mut().event("claims_refused");
            }
            Some(slot) => start_probe(shard, slot, &conn, &sid, now),
        }
    }
    shard.spawn_reader(conn, leftover);
}

/// A slot held by `binary`.
fn new_slot(binary: Rc<Conn>) -> ServerSlot {
    ServerSlot {
        binary: Some(binary),
        grace_until: None,
        phones: Vec::new(),
        claimant: None,
    }
}

/// Make `conn` the holder of `sid`.
fn set_holder(conn: &Conn, sid: &Rc<str>) {
    *conn.role.borrow_mut() = Role::Binary(BinaryRole {
        server_id: sid.clone(),
        holds: true,
        probed: false,
    });
}

/// `newcomer` takes the slot: every phone still attached is evicted with 4404.
fn take_over(shard: &Rc<Shard>, slot: &mut ServerSlot, newcomer: &Rc<Conn>, sid: &Rc<str>) {
    for (_, phone) in slot.phones.drain(..) {
        *phone.role.borrow_mut() = Role::Detached;
        phone.close(shard, 4404, "binary reclaimed server-id");
    }
    slot.binary = Some(newcomer.clone());
    slot.grace_until = None;
    slot.claimant = None;
    set_holder(newcomer, sid);
    shard.stats.borrow_mut().event("takeovers");
}

/// A second binary for a live slot: ping the holder and wait up to `--takeover-probe`.
fn start_probe(
    shard: &Rc<Shard>,
    slot: &mut ServerSlot,
    newcomer: &Rc<Conn>,
    sid: &Rc<str>,
    now: Instant,
) {
    *newcomer.role.borrow_mut() = Role::Binary(BinaryRole {
        server_id: sid.clone(),
        holds: false,
        probed: false,
    });
    slot.claimant = Some((newcomer.clone(), now + shard.config().takeover_probe));
    if let Some(holder) = &slot.binary {
        if let Role::Binary(role) = &mut *holder.role.borrow_mut() {
            role.probed = true;
        }
        holder.ping(shard);
    }
    tracing::debug!(shard = shard.id, server_id = %escaped(sid), "second binary: probing the holder");
}

/// The probed holder sent a frame: it is alive, so the claimant is refused.
pub fn on_incumbent_answered(shard: &Rc<Shard>, holder: &Rc<Conn>) {
    let sid = match &mut *holder.role.borrow_mut() {
        Role::Binary(role) => {
            role.probed = false;
            role.server_id.clone()
        }
        _ => return,
    };
    let mut reg = shard.server_ids.borrow_mut();
    let Some(slot) = reg.slots.get_mut(&sid) else {
        return;
    };
    if let Some((claimant, _)) = slot.claimant.take() {
        *claimant.role.borrow_mut() = Role::Detached;
        claimant.close(shard, 4409, "server-id already claimed");
        shard.stats.borrow_mut().event("claims_refused");
    }
}

/// A phone upgraded on `/v1/client`.
pub fn on_phone(
    shard: &Rc<Shard>,
    conn: Rc<Conn>,
    server_id: &str,
    device_name: Option<&str>,
    leftover: Vec<u8>,
) {
    conn.overflow.set(Overflow::CloseReceiver);
    let max_phones = shard.config().max_phones_per_server;
    {
        let mut reg = shard.server_ids.borrow_mut();
        // The slot's own key, shared by its phones' roles rather than copied per phone.
        let sid = reg
            .slots
            .get_key_value(server_id)
            .map(|(sid, _)| sid.clone());
        match sid.and_then(|sid| Some((reg.slots.get_mut(&sid)?, sid))) {
            None => {
                conn.close(shard, 4404, "no server with that id");
                shard.stats.borrow_mut().event("phones_no_server");
            }
            Some((slot, _)) if slot.phones.len() >= max_phones => {
                conn.close(shard, 4429, "too many phones for server-id");
                shard.stats.borrow_mut().event("phones_over_cap");
            }
            Some((slot, sid)) => {
                let (conn_id, role) = attach_phone(slot, sid);
                tracing::debug!(
                    shard = shard.id,
                    server_id = %escaped(server_id),
                    conn_id = %escaped(&conn_id),
                    device_name = %escaped(device_name.unwrap_or("")),
                    "phone attached"
                );
                slot.phones.push((conn_id, conn.clone()));
                *conn.role.borrow_mut() = Role::Phone(role);
            }
        }
    }
    shard.spawn_reader(conn, leftover);
}

/// Mint a conn_id unique in the slot and the phone's envelope prefix.
fn attach_phone(slot: &ServerSlot, server_id: Rc<str>) -> (Rc<str>, PhoneRole) {
    let conn_id = loop {
        let candidate = format!("client-{server_id}-{}", random_hex8());
        if slot.phone(&candidate).is_none() {
            break candidate;
        }
    };
    let quoted = serde_json::Value::String(conn_id.clone()).to_string();
    let prefix = format!("{PREFIX_HEAD}{quoted}{PREFIX_TAIL}");
    let role = PhoneRole {
        server_id,
        prefix: Rc::from(prefix.into_bytes()),
    };
    (Rc::from(conn_id), role)
}

/// 8 lowercase hex digits from the OS CSPRNG.
fn random_hex8() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS CSPRNG does not fail on Linux once booted; fall back to ahash's
        // per-process random state rather than abort a connection.
        let n = ahash::RandomState::new().hash_one(Instant::now());
        bytes = (n as u32).to_le_bytes();
    }
    format!("{:08x}", u32::from_le_bytes(bytes))
}

/// A phone's message: it must be JSON; it goes to the binary inside the envelope.
pub fn on_phone_message(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    phone: &PhoneRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if !is_json(kind, payload) {
        shard.stats.borrow_mut().dropped("phone_not_json");
        conn.failed.set(true);
        conn.close(shard, 1007, "message is not JSON");
        return;
    }
    let Some(binary) = holder_of(shard, &phone.server_id) else {
        shard.stats.borrow_mut().dropped("slot_in_grace");
        return;
    };
    let frame = OutFrame::message(
        OpCode::Text,
        Some(phone.prefix.clone()),
        Payload::copy_of(payload),
        ENVELOPE_SUFFIX,
    );
    if !binary.send(shard, frame.relayed(read_at, MODE)) {
        shard.stats.borrow_mut().dropped("binary_closing");
    }
}

/// Valid UTF-8 JSON (a binary-opcode message too: it is embedded in a text envelope),
/// nested within serde_json's recursion limit (`modes::json`).
fn is_json(kind: MessageKind, payload: &[u8]) -> bool {
    if kind == MessageKind::Binary && std::str::from_utf8(payload).is_err() {
        return false;
    }
    super::json::is_forwardable(payload)
}

/// The open binary holding `sid`, if any.
fn holder_of(shard: &Shard, sid: &str) -> Option<Rc<Conn>> {
    let reg = shard.server_ids.borrow();
    let binary = reg.slots.get(sid)?.binary.as_ref()?;
    binary.is_open().then(|| binary.clone())
}

/// The binary a phone feeds (for back-pressure).
pub fn binary_of(shard: &Shard, phone: &PhoneRole) -> Option<Rc<Conn>> {
    holder_of(shard, &phone.server_id)
}

/// The routing envelope a binary sends (PROTOCOL §3.3). Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    /// The phone addressed.
    #[serde(borrow, default)]
    conn_id: Option<JsonStr<'a>>,
    /// The message for the phone, delivered byte for byte.
    #[serde(borrow, default)]
    frame: Option<&'a RawValue>,
    /// Close the phone with this code (after `frame`, if both).
    #[serde(default)]
    close_code: Option<i64>,
    /// A wake request for the relay itself (counted and dropped).
    #[serde(borrow, default)]
    push_wake: Option<PushWake<'a>>,
}

/// A JSON string borrowed from the message when it has no escapes. serde borrows a
/// `Cow<str>` field only when the field's type is exactly `Cow<str>` — inside an
/// `Option` it would allocate a `String` for every envelope — hence the newtype.
#[derive(Debug, Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// `push_wake`: validated, counted, dropped; its token is never logged.
#[derive(Debug, Deserialize)]
struct PushWake<'a> {
    /// Must be "fcm".
    #[serde(borrow, default)]
    platform: Option<Cow<'a, str>>,
    /// Must be non-empty.
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// What a well-formed envelope asks for (public for the benches and property tests).
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Deliver `frame` and/or close with `close_code`.
    ToPhone {
        /// The phone.
        conn_id: Cow<'a, str>,
        /// Raw JSON bytes for the phone.
        frame: Option<&'a str>,
        /// 1000 or 3000–4999.
        close_code: Option<u16>,
    },
    /// A valid push-wake request.
    PushWake,
}

/// Parse and validate an envelope; None when malformed.
pub fn parse_envelope(kind: MessageKind, payload: &[u8]) -> Option<Command<'_>> {
    if kind == MessageKind::Binary {
        std::str::from_utf8(payload).ok()?;
    }
    let env: Envelope<'_> = serde_json::from_slice(payload).ok()?;
    let Some(JsonStr(conn_id)) = env.conn_id else {
        let wake = env.push_wake?;
        let valid = wake.platform.as_deref() == Some("fcm")
            && wake.token.as_deref().is_some_and(|t| !t.is_empty());
        return valid.then_some(Command::PushWake);
    };
    let close_code = match env.close_code {
        None => None,
        Some(code) if code == 1000 || (3000..=4999).contains(&code) => Some(code as u16),
        Some(_) => return None,
    };
    let frame = env.frame.map(RawValue::get);
    if frame.is_none() && close_code.is_none() {
        return None;
    }
    Some(Command::ToPhone {
        conn_id,
        frame,
        close_code,
    })
}

/// A binary's envelope: deliver to / close one of its slot's phones.
pub fn on_binary_message(
    shard: &Rc<Shard>,
    _conn: &Rc<Conn>,
    binary: &BinaryRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if !binary.holds {
        shard.stats.borrow_mut().dropped("claim_pending");
        return;
    }
    match parse_envelope(kind, payload) {
        None => shard.stats.borrow_mut().dropped("malformed_envelope"),
        Some(Command::PushWake) => shard.stats.borrow_mut().event("push_wake"),
        Some(Command::ToPhone {
            conn_id,
            frame,
            close_code,
        }) => to_phone(shard, binary, &conn_id, frame, close_code, read_at),
    }
}

/// Carry out a binary's command for one phone of its slot.
fn to_phone(
    shard: &Rc<Shard>,
    binary: &BinaryRole,
    conn_id: &str,
    frame: Option<&str>,
    close_code: Option<u16>,
    read_at: Instant,
) {
    let phone = {
        let reg = shard.server_ids.borrow();
        reg.slots
            .get(&binary.server_id)
            .and_then(|slot| slot.phone(conn_id))
            .cloned()
    };
    let Some(phone) = phone else {
        shard.stats.borrow_mut().dropped("unknown_conn_id");
        return;
    };
    if let Some(frame) = frame {
        deliver_to_phone(shard, binary, &phone, frame.as_bytes(), read_at);
    }
    if let Some(code) = close_code {
        detach_phone(shard, &binary.server_id, &phone);
        phone.close(shard, code, "");
    }
}

/// Queue a message for a phone; a phone whose queue overflows is closed with
/// `1011 "phone backlog full"` (the binary is never stalled by one slow phone).
fn deliver_to_phone(
    shard: &Rc<Shard>,
    binary: &BinaryRole,
    phone: &Rc<Conn>,
    bytes: &[u8],
    read_at: Instant,
) {
    if phone.queued_bytes() + OutFrame::charge_for(bytes.len()) > shard.config().max_queue {
        shard.stats.borrow_mut().dropped("phone_backlog_full");
        let role = detach_phone(shard, &binary.server_id, phone);
        if let (Some(holder), Some(role)) = (holder_of(shard, &binary.server_id), role) {
            send_close_notice(shard, &holder, &role, 1011);
        }
        phone.failed.set(true);
        phone.close_discarding(shard, 1011, "phone backlog full");
        return;
    }
    let frame = OutFrame::message(OpCode::Text, None, Payload::copy_of(bytes), b"");
    if !phone.send(shard, frame.relayed(read_at, MODE)) {
        shard.stats.borrow_mut().dropped("phone_closing");
    }
}

/// Take a phone out of its slot (the relay closes it; its end changes nothing more).
/// Returns its role.
fn detach_phone(shard: &Shard, sid: &str, phone: &Rc<Conn>) -> Option<PhoneRole> {
    let role = std::mem::replace(&mut *phone.role.borrow_mut(), Role::Detached);
    if let Some(slot) = shard.server_ids.borrow_mut().slots.get_mut(sid) {
        slot.remove_phone(phone);
    }
    match role {
        Role::Phone(p) => Some(p),
        _ => None,
    }
}

/// `{"conn_id":"…","close_code":N}` to a binary.
fn send_close_notice(shard: &Rc<Shard>, binary: &Rc<Conn>, phone: &PhoneRole, code: u16) {
    // Written by hand to keep pyrycode's field order (conn_id first).
    let mut body = Vec::with_capacity(phone.prefix.len() + 8);
    body.extend_from_slice(PREFIX_HEAD.as_bytes());
    body.extend_from_slice(phone.quoted_conn_id());
    body.extend_from_slice(format!(",\"close_code\":{code}}}").as_bytes());
    let frame = OutFrame::message(OpCode::Text, None, Payload::from(body), b"");
    binary.send(shard, frame);
}

/// A phone's connection ended while attached: leave the slot, tell the binary.
pub fn on_phone_gone(shard: &Rc<Shard>, conn: &Rc<Conn>, phone: &PhoneRole) {
    if let Some(slot) = shard
        .server_ids
        .borrow_mut()
        .slots
        .get_mut(&phone.server_id)
    {
        slot.remove_phone(conn);
    }
    let code = conn.peer_close.get().unwrap_or(1006);
    if let Some(binary) = holder_of(shard, &phone.server_id) {
        send_close_notice(shard, &binary, phone, code);
    }
    tracing::debug!(shard = shard.id, conn_id = %phone.conn_id_for_log(), code, "phone left");
}

/// A binary's connection ended: a holder's slot enters its grace window (or passes to
/// a waiting claimant); a claimant simply stops claiming.
pub fn on_binary_gone(shard: &Rc<Shard>, conn: &Rc<Conn>, binary: &BinaryRole) {
    let mut reg = shard.server_ids.borrow_mut();
    let Some(slot) = reg.slots.get_mut(&binary.server_id) else {
        return;
    };
    if !binary.holds {
        if matches!(&slot.claimant, Some((c, _)) if Rc::ptr_eq(c, conn)) {
            slot.claimant = None;
        }
        return;
    }
    if !matches!(&slot.binary, Some(b) if Rc::ptr_eq(b, conn)) {
        return;
    }
    slot.binary = None;
    if let Some((claimant, _)) = slot.claimant.take() {
        take_over(shard, slot, &claimant, &binary.server_id);
        tracing::debug!(shard = shard.id, server_id = %escaped(&binary.server_id), "holder left during probe: claimant took over");
        return;
    }
    slot.grace_until = Some(Instant::now() + shard.config().grace);
    tracing::debug!(shard = shard.id, server_id = %escaped(&binary.server_id), "binary left: grace window open");
}

/// Housekeeping from the shard's tick: takeover probes past their deadline, grace
/// windows past their end.
pub fn tick(shard: &Rc<Shard>, now: Instant) {
    let mut reg = shard.server_ids.borrow_mut();
    let mut expired = Vec::new();
    for (sid, slot) in reg.slots.iter_mut() {
        if matches!(slot.claimant, Some((_, deadline)) if deadline <= now) {
            probe_failed(shard, slot, sid);
        }
        if matches!(slot.grace_until, Some(end) if end <= now) {
            for (_, phone) in slot.phones.drain(..) {
                *phone.role.borrow_mut() = Role::Detached;
                phone.close(shard, 1011, "binary did not reconnect");
            }
            expired.push(sid.clone());
        }
    }
    for sid in expired {
        reg.slots.remove(&sid);
        shard.stats.borrow_mut().gauge_add("server_slots", -1);
        tracing::debug!(shard = shard.id, server_id = %escaped(&sid), "grace window expired");
    }
}

/// The holder did not answer the probe: it is closed with 1011 and the claimant takes
/// over exactly as from grace.
fn probe_failed(shard: &Rc<Shard>, slot: &mut ServerSlot, sid: &Rc<str>) {
    let Some((claimant, _)) = slot.claimant.take() else {
        return;
    };
    if let Some(holder) = slot.binary.take() {
        *holder.role.borrow_mut() = Role::Detached;
        holder.failed.set(true);
        holder.close_discarding(shard, 1011, "heartbeat timeout");
    }
    take_over(shard, slot, &claimant, sid);
    tracing::debug!(shard = shard.id, server_id = %escaped(sid), "holder did not answer the probe: claimant took over");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_with_frame_keeps_exact_bytes() {
        let msg = br#"{"conn_id":"client-s-0000abcd","frame": {"a" : [1, 2.50]} }"#;
        let cmd = parse_envelope(MessageKind::Text, msg);
        assert_eq!(
            cmd,
            Some(Command::ToPhone {
                conn_id: Cow::Borrowed("client-s-0000abcd"),
                frame: Some(r#"{"a" : [1, 2.50]}"#),
                close_code: None,
            })
        );
    }

    #[test]
    fn an_unescaped_conn_id_is_borrowed_not_copied() {
        let msg = br#"{"conn_id":"client-s-0000abcd","frame":1}"#;
        let Some(Command::ToPhone { conn_id, .. }) = parse_envelope(MessageKind::Text, msg) else {
            panic!("a valid envelope");
        };
        assert!(matches!(conn_id, Cow::Borrowed(_)));
        let escaped = br#"{"conn_id":"client-\u0073-0000abcd","frame":1}"#;
        let Some(Command::ToPhone { conn_id, .. }) = parse_envelope(MessageKind::Text, escaped)
        else {
            panic!("a valid envelope");
        };
        assert_eq!(conn_id, "client-s-0000abcd");
    }

    #[test]
    fn envelope_close_codes_are_checked() {
        for (code, ok) in [
            (1000, true),
            (3000, true),
            (4999, true),
            (1001, false),
            (5000, false),
            (2999, false),
        ] {
            let msg = format!(r#"{{"conn_id":"c","close_code":{code}}}"#);
            assert_eq!(
                parse_envelope(MessageKind::Text, msg.as_bytes()).is_some(),
                ok,
                "{code}"
            );
        }
    }

    #[test]
    fn malformed_envelopes_are_none() {
        for msg in [
            &b"not json"[..],
            br#"{"conn_id":"c"}"#,
            br#"{"frame":{}}"#,
            br#"{"push_wake":{"platform":"apns","token":"t"}}"#,
            br#"{"push_wake":{"platform":"fcm","token":""}}"#,
            br#"{"conn_id":7,"frame":1}"#,
        ] {
            assert_eq!(parse_envelope(MessageKind::Text, msg), None);
        }
        let wake = br#"{"push_wake":{"platform":"fcm","token":"abc"}}"#;
        assert_eq!(
            parse_envelope(MessageKind::Text, wake),
            Some(Command::PushWake)
        );
    }

    #[test]
    fn phone_messages_must_be_json() {
        assert!(is_json(MessageKind::Text, br#"{"a":1}"#));
        assert!(is_json(MessageKind::Binary, b"[1,2]"));
        assert!(!is_json(MessageKind::Text, b"{"));
        assert!(!is_json(MessageKind::Binary, &[0xff, 0xfe]));
    }
}
