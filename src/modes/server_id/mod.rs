//! Server-id routing (PROTOCOL §3, wire-compatible with pyrycode-relay): one binary holds a
//! server-id slot, up to `--max-phones-per-server` phones attach to it, and every message
//! between them travels in the JSON routing envelope. This module owns the slots of the
//! server-ids its shard owns: claim, takeover probe, grace window, phones, envelopes.
//!
//! The phone token is a courier credential: the route checks it is present and then it is
//! gone — it never reaches this module.

pub mod registry;

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::logging::escaped;
use crate::modes::Conn;
use crate::modes::Role;
use crate::modes::StyleHost;
use crate::stats::{Dropped, Event, Gauge, Style};
use crate::ws::codec::{MessageKind, OpCode};
use crate::ws::conn::{OutFrame, Overflow};
use crate::ws::payload::Payload;
use registry::{Claim, Left, PhoneRefusal};

/// The rendezvous style's name in `/stats` (`forward_by_mode`).
const MODE: Style = Style::ServerId;

/// Closing the envelope a phone's message is embedded in.
const ENVELOPE_SUFFIX: &[u8] = b"}";

/// The server-id slots this shard owns, holding its connections.
pub type Registry = registry::Registry<Rc<Conn>>;
pub use registry::Settings;

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
pub fn on_binary<S: StyleHost>(shard: &Rc<S>, conn: Rc<Conn>, server_id: &str, leftover: Vec<u8>) {
    let sid: Rc<str> = Rc::from(server_id);
    let claim = shard
        .server_ids()
        .borrow_mut()
        .claim(&sid, &conn, Instant::now());
    match claim {
        Claim::New => {
            shard.stats().gauge_add(Gauge::ServerSlots, 1);
            set_holder(&conn, &sid);
            tracing::debug!(shard = shard.shard_id(), server_id = %escaped(&sid), "binary claimed server-id");
        }
        Claim::Reclaimed { evicted } => {
            took_over(shard, &conn, &sid, evicted);
            tracing::debug!(shard = shard.shard_id(), server_id = %escaped(&sid), "binary reclaimed server-id from grace");
        }
        Claim::Refused => refuse_claim(shard, &conn),
        Claim::Probe { holder } => start_probe(shard, &holder, &conn, &sid),
    }
    shard.spawn_reader(conn, leftover);
}

/// Make `conn` the holder of `sid`.
fn set_holder(conn: &Conn, sid: &Rc<str>) {
    *conn.role.borrow_mut() = Role::Binary(BinaryRole {
        server_id: sid.clone(),
        holds: true,
        probed: false,
    });
}

/// `newcomer` took the slot: every phone that was attached is evicted with 4404.
fn took_over<S: StyleHost>(
    shard: &Rc<S>,
    newcomer: &Rc<Conn>,
    sid: &Rc<str>,
    evicted: Vec<Rc<Conn>>,
) {
    for phone in evicted {
        *phone.role.borrow_mut() = Role::Detached;
        phone.close(shard, 4404, "binary reclaimed server-id");
    }
    set_holder(newcomer, sid);
    shard.stats().event(Event::Takeovers);
}

/// A claim refused while another waits on the holder's probe, or after the holder
/// answered it: 4409.
fn refuse_claim<S: StyleHost>(shard: &Rc<S>, claimant: &Rc<Conn>) {
    *claimant.role.borrow_mut() = Role::Detached;
    claimant.close(shard, 4409, "server-id already claimed");
    shard.stats().event(Event::ClaimsRefused);
}

/// A second binary for a live slot: ping the holder; the newcomer waits up to
/// `--takeover-probe` as the claimant.
fn start_probe<S: StyleHost>(shard: &Rc<S>, holder: &Rc<Conn>, newcomer: &Rc<Conn>, sid: &Rc<str>) {
    *newcomer.role.borrow_mut() = Role::Binary(BinaryRole {
        server_id: sid.clone(),
        holds: false,
        probed: false,
    });
    if let Role::Binary(role) = &mut *holder.role.borrow_mut() {
        role.probed = true;
    }
    holder.ping(shard);
    tracing::debug!(shard = shard.shard_id(), server_id = %escaped(sid), "second binary: probing the holder");
}

/// The probed holder sent a frame: it is alive, so the claimant is refused.
pub fn on_incumbent_answered<S: StyleHost>(shard: &Rc<S>, holder: &Rc<Conn>) {
    let sid = match &mut *holder.role.borrow_mut() {
        Role::Binary(role) => {
            role.probed = false;
            role.server_id.clone()
        }
        _ => return,
    };
    let claimant = shard.server_ids().borrow_mut().holder_answered(&sid);
    if let Some(claimant) = claimant {
        refuse_claim(shard, &claimant);
    }
}

/// A phone upgraded on `/v1/client`.
pub fn on_phone<S: StyleHost>(
    shard: &Rc<S>,
    conn: Rc<Conn>,
    server_id: &str,
    device_name: Option<&str>,
    leftover: Vec<u8>,
) {
    conn.overflow.set(Overflow::CloseReceiver);
    let draw = || format!("client-{server_id}-{}", random_hex8());
    let attached = shard
        .server_ids()
        .borrow_mut()
        .attach_phone(server_id, &conn, draw);
    match attached {
        Err(PhoneRefusal::NoServer) => {
            conn.close(shard, 4404, "no server with that id");
            shard.stats().event(Event::PhonesNoServer);
        }
        Err(PhoneRefusal::OverCap) => {
            conn.close(shard, 4429, "too many phones for server-id");
            shard.stats().event(Event::PhonesOverCap);
        }
        Ok((sid, conn_id)) => {
            tracing::debug!(
                shard = shard.shard_id(),
                server_id = %escaped(server_id),
                conn_id = %escaped(&conn_id),
                device_name = %escaped(device_name.unwrap_or("")),
                "phone attached"
            );
            *conn.role.borrow_mut() = Role::Phone(phone_role(sid, &conn_id));
        }
    }
    shard.spawn_reader(conn, leftover);
}

/// A phone's role: its slot's key and its envelope prefix.
fn phone_role(server_id: Rc<str>, conn_id: &str) -> PhoneRole {
    let quoted = serde_json::Value::String(conn_id.to_owned()).to_string();
    let prefix = format!("{PREFIX_HEAD}{quoted}{PREFIX_TAIL}");
    PhoneRole {
        server_id,
        prefix: Rc::from(prefix.into_bytes()),
    }
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
pub fn on_phone_message<S: StyleHost>(
    shard: &Rc<S>,
    conn: &Rc<Conn>,
    phone: &PhoneRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if !is_json(kind, payload) {
        shard.stats().dropped(Dropped::PhoneNotJson);
        conn.failed.set(true);
        conn.close(shard, 1007, "message is not JSON");
        return;
    }
    let Some(binary) = holder_of(&**shard, &phone.server_id) else {
        shard.stats().dropped(Dropped::SlotInGrace);
        return;
    };
    let frame = OutFrame::message(
        OpCode::Text,
        Some(phone.prefix.clone()),
        Payload::copy_of(payload),
        ENVELOPE_SUFFIX,
    );
    if !binary.send(shard, frame.relayed(read_at, MODE)) {
        shard.stats().dropped(Dropped::BinaryClosing);
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
fn holder_of<S: StyleHost>(shard: &S, sid: &str) -> Option<Rc<Conn>> {
    let reg = shard.server_ids().borrow();
    let binary = reg.holder(sid)?;
    binary.is_open().then(|| binary.clone())
}

/// The binary a phone feeds (for back-pressure).
pub fn binary_of<S: StyleHost>(shard: &S, phone: &PhoneRole) -> Option<Rc<Conn>> {
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
pub fn on_binary_message<S: StyleHost>(
    shard: &Rc<S>,
    _conn: &Rc<Conn>,
    binary: &BinaryRole,
    kind: MessageKind,
    payload: &[u8],
    read_at: Instant,
) {
    if !binary.holds {
        shard.stats().dropped(Dropped::ClaimPending);
        return;
    }
    match parse_envelope(kind, payload) {
        None => shard.stats().dropped(Dropped::MalformedEnvelope),
        Some(Command::PushWake) => shard.stats().event(Event::PushWake),
        Some(Command::ToPhone {
            conn_id,
            frame,
            close_code,
        }) => to_phone(shard, binary, &conn_id, frame, close_code, read_at),
    }
}

/// Carry out a binary's command for one phone of its slot.
fn to_phone<S: StyleHost>(
    shard: &Rc<S>,
    binary: &BinaryRole,
    conn_id: &str,
    frame: Option<&str>,
    close_code: Option<u16>,
    read_at: Instant,
) {
    let phone = {
        let reg = shard.server_ids().borrow();
        reg.phone(&binary.server_id, conn_id).cloned()
    };
    let Some(phone) = phone else {
        shard.stats().dropped(Dropped::UnknownConnId);
        return;
    };
    if let Some(frame) = frame {
        deliver_to_phone(shard, binary, &phone, frame.as_bytes(), read_at);
    }
    if let Some(code) = close_code {
        detach_phone(&**shard, &binary.server_id, &phone);
        phone.close(shard, code, "");
    }
}

/// Queue a message for a phone; a phone whose queue overflows is closed with
/// `1011 "phone backlog full"` (the binary is never stalled by one slow phone).
fn deliver_to_phone<S: StyleHost>(
    shard: &Rc<S>,
    binary: &BinaryRole,
    phone: &Rc<Conn>,
    bytes: &[u8],
    read_at: Instant,
) {
    if phone.queued_bytes() + OutFrame::charge_for(bytes.len()) > shard.max_queue() {
        shard.stats().dropped(Dropped::PhoneBacklogFull);
        let role = detach_phone(&**shard, &binary.server_id, phone);
        if let (Some(holder), Some(role)) = (holder_of(&**shard, &binary.server_id), role) {
            send_close_notice(shard, &holder, &role, 1011);
        }
        phone.failed.set(true);
        phone.close_discarding(shard, 1011, "phone backlog full");
        return;
    }
    let frame = OutFrame::message(OpCode::Text, None, Payload::copy_of(bytes), b"");
    if !phone.send(shard, frame.relayed(read_at, MODE)) {
        shard.stats().dropped(Dropped::PhoneClosing);
    }
}

/// Take a phone out of its slot (the relay closes it; its end changes nothing more).
/// Returns its role.
fn detach_phone<S: StyleHost>(shard: &S, sid: &str, phone: &Rc<Conn>) -> Option<PhoneRole> {
    let role = std::mem::replace(&mut *phone.role.borrow_mut(), Role::Detached);
    shard.server_ids().borrow_mut().remove_phone(sid, phone);
    match role {
        Role::Phone(p) => Some(p),
        _ => None,
    }
}

/// `{"conn_id":"…","close_code":N}` to a binary.
fn send_close_notice<S: StyleHost>(shard: &Rc<S>, binary: &Rc<Conn>, phone: &PhoneRole, code: u16) {
    // Written by hand to keep pyrycode's field order (conn_id first).
    let mut body = Vec::with_capacity(phone.prefix.len() + 8);
    body.extend_from_slice(PREFIX_HEAD.as_bytes());
    body.extend_from_slice(phone.quoted_conn_id());
    body.extend_from_slice(format!(",\"close_code\":{code}}}").as_bytes());
    let frame = OutFrame::message(OpCode::Text, None, Payload::from(body), b"");
    binary.send(shard, frame);
}

/// A phone's connection ended while attached: leave the slot, tell the binary.
pub fn on_phone_gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, phone: &PhoneRole) {
    shard
        .server_ids()
        .borrow_mut()
        .remove_phone(&phone.server_id, conn);
    let code = conn.peer_close.get().unwrap_or(1006);
    if let Some(binary) = holder_of(&**shard, &phone.server_id) {
        send_close_notice(shard, &binary, phone, code);
    }
    tracing::debug!(shard = shard.shard_id(), conn_id = %phone.conn_id_for_log(), code, "phone left");
}

/// A binary's connection ended: a holder's slot enters its grace window (or passes to
/// a waiting claimant); a claimant simply stops claiming.
pub fn on_binary_gone<S: StyleHost>(shard: &Rc<S>, conn: &Rc<Conn>, binary: &BinaryRole) {
    let sid = &binary.server_id;
    let left = shard
        .server_ids()
        .borrow_mut()
        .binary_left(sid, conn, binary.holds, Instant::now());
    match left {
        Left::Nothing | Left::ClaimWithdrawn => {}
        Left::TakenOver { claimant, evicted } => {
            took_over(shard, &claimant, sid, evicted);
            tracing::debug!(shard = shard.shard_id(), server_id = %escaped(sid), "holder left during probe: claimant took over");
        }
        Left::Grace => {
            tracing::debug!(shard = shard.shard_id(), server_id = %escaped(sid), "binary left: grace window open")
        }
    }
}

/// Housekeeping from the shard's tick: takeover probes past their deadline (the holder
/// is closed with 1011 and the claimant takes over exactly as from grace), grace windows
/// past their end (the slot's phones are closed with 1011).
pub fn tick<S: StyleHost>(shard: &Rc<S>, now: Instant) {
    let due = shard.server_ids().borrow_mut().due(now);
    for failed in due.probes_failed {
        if let Some(holder) = failed.holder {
            *holder.role.borrow_mut() = Role::Detached;
            holder.failed.set(true);
            holder.close_discarding(shard, 1011, "heartbeat timeout");
        }
        took_over(shard, &failed.claimant, &failed.server_id, failed.evicted);
        tracing::debug!(shard = shard.shard_id(), server_id = %escaped(&failed.server_id), "holder did not answer the probe: claimant took over");
    }
    for expired in due.graces_expired {
        for phone in expired.phones {
            *phone.role.borrow_mut() = Role::Detached;
            phone.close(shard, 1011, "binary did not reconnect");
        }
        shard.stats().gauge_add(Gauge::ServerSlots, -1);
        tracing::debug!(shard = shard.shard_id(), server_id = %escaped(&expired.server_id), "grace window expired");
    }
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
