//! The server-id slots of one shard: who holds each server-id, its grace window, its
//! phones and a pending claim. Pure bookkeeping, no I/O: the connection glue
//! (`server_id/mod.rs`) closes, pings and counts as the decisions made here say, and time
//! is a parameter. Generic over the member handle so the rules are unit-tested without
//! sockets.
//!
//! A slot is held (a binary, up to `--max-phones-per-server` phones, perhaps a claimant
//! waiting for the holder's takeover probe) or in grace (no binary; its phones wait until
//! `grace_until`). A binary for a slot in grace reclaims it at once; one for a held slot
//! with no claim pending starts a probe; one while a claim is pending is refused.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::modes::Handle;

/// The settings the server-id rules use, taken from `Config` once per shard.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `--takeover-probe`: how long a probed holder has to answer.
    pub takeover_probe: Duration,
    /// `--grace`: how long a slot whose holder left waits for it.
    pub grace: Duration,
    /// `--max-phones-per-server`.
    pub max_phones: usize,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Settings {
            takeover_probe: config.takeover_probe,
            grace: config.grace,
            max_phones: config.max_phones_per_server,
        }
    }
}

/// The server-id slots this shard owns, by server-id, and the rules' settings.
#[derive(Debug)]
pub struct Registry<C> {
    /// Slots by server-id.
    slots: HashMap<Rc<str>, Slot<C>, ahash::RandomState>,
    /// The settings the rules use.
    settings: Settings,
}

/// One server-id: its binary (or its grace window), its phones, and a pending claim.
#[derive(Debug)]
struct Slot<C> {
    /// The binary holding the slot; None while in grace.
    binary: Option<C>,
    /// When the grace window ends (set while `binary` is None).
    grace_until: Option<Instant>,
    /// Attached phones by conn_id (at most `--max-phones-per-server`: a Vec is the
    /// cheapest map at that size).
    phones: Vec<(Rc<str>, C)>,
    /// A second binary waiting for the takeover probe of the holder, and its deadline.
    claimant: Option<(C, Instant)>,
}

impl<C: Handle> Slot<C> {
    /// A slot held by `binary`.
    fn held_by(binary: C) -> Self {
        Slot {
            binary: Some(binary),
            grace_until: None,
            phones: Vec::new(),
            claimant: None,
        }
    }

    /// A phone of this slot by conn_id.
    fn phone(&self, conn_id: &str) -> Option<&C> {
        self.phones
            .iter()
            .find(|(id, _)| &**id == conn_id)
            .map(|(_, c)| c)
    }

    /// `newcomer` takes the slot; returns the phones it evicts (closed with 4404).
    fn take_over(&mut self, newcomer: C) -> Vec<C> {
        self.binary = Some(newcomer);
        self.grace_until = None;
        self.claimant = None;
        self.phones.drain(..).map(|(_, phone)| phone).collect()
    }
}

/// What a binary's claim of a server-id comes to.
#[derive(Debug)]
pub enum Claim<C> {
    /// No such slot: the binary holds a new one.
    New,
    /// The slot was in grace: the binary holds it now, and these phones of the previous
    /// holder are evicted (4404).
    Reclaimed {
        /// The evicted phones.
        evicted: Vec<C>,
    },
    /// Another claim is already waiting on the holder's probe: refused (4409).
    Refused,
    /// The slot is held: the holder is probed (pinged) and the newcomer waits, as the
    /// claimant, until it answers or the probe's deadline passes.
    Probe {
        /// The holder to ping.
        holder: C,
    },
}

/// Why a phone cannot attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneRefusal {
    /// No slot for the server-id (4404).
    NoServer,
    /// The slot already has `--max-phones-per-server` phones (4429).
    OverCap,
}

/// What a binary's leaving does to its slot.
#[derive(Debug)]
pub enum Left<C> {
    /// Nothing: it was not (or no longer) the slot's holder or claimant.
    Nothing,
    /// A claimant stopped claiming.
    ClaimWithdrawn,
    /// The holder left: the slot is in grace until the given instant.
    Grace,
    /// The holder left while probed: the claimant holds the slot now.
    TakenOver {
        /// The new holder.
        claimant: C,
        /// The phones it evicts (4404).
        evicted: Vec<C>,
    },
}

/// A holder that did not answer its takeover probe in time.
#[derive(Debug)]
pub struct ProbeFailed<C> {
    /// The slot's server-id.
    pub server_id: Rc<str>,
    /// The silent holder, closed with 1011.
    pub holder: Option<C>,
    /// The claimant, now the holder.
    pub claimant: C,
    /// The phones it evicts (4404).
    pub evicted: Vec<C>,
}

/// A slot whose grace window ran out: removed.
#[derive(Debug)]
pub struct GraceExpired<C> {
    /// The slot's server-id.
    pub server_id: Rc<str>,
    /// Its phones, closed with 1011.
    pub phones: Vec<C>,
}

/// What the deadlines of one tick decided.
#[derive(Debug)]
pub struct Due<C> {
    /// Probes that were not answered in time.
    pub probes_failed: Vec<ProbeFailed<C>>,
    /// Grace windows that ended.
    pub graces_expired: Vec<GraceExpired<C>>,
}

impl<C: Handle> Registry<C> {
    /// No slots yet.
    pub fn new(settings: Settings) -> Self {
        Registry {
            slots: HashMap::default(),
            settings,
        }
    }

    /// Slots held or in grace.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True without slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A binary claims `sid` at `now`; a probe it starts must be answered within
    /// `--takeover-probe`.
    pub fn claim(&mut self, sid: &Rc<str>, binary: &C, now: Instant) -> Claim<C> {
        let probe_deadline = now + self.settings.takeover_probe;
        let Some(slot) = self.slots.get_mut(sid) else {
            self.slots
                .insert(sid.clone(), Slot::held_by(binary.clone()));
            return Claim::New;
        };
        match &slot.binary {
            None => Claim::Reclaimed {
                evicted: slot.take_over(binary.clone()),
            },
            Some(_) if slot.claimant.is_some() => Claim::Refused,
            Some(holder) => {
                let holder = holder.clone();
                slot.claimant = Some((binary.clone(), probe_deadline));
                Claim::Probe { holder }
            }
        }
    }

    /// The probed holder of `sid` answered: the claim fails; returns the claimant to
    /// refuse (4409).
    pub fn holder_answered(&mut self, sid: &str) -> Option<C> {
        let slot = self.slots.get_mut(sid)?;
        slot.claimant.take().map(|(claimant, _)| claimant)
    }

    /// A phone attaches to `server_id` if the slot exists and has room for it under
    /// `--max-phones-per-server`; returns the slot's key (shared by the phone's role) and the phone's
    /// fresh conn_id, drawn by `draw` until unique in the slot.
    pub fn attach_phone(
        &mut self,
        server_id: &str,
        phone: &C,
        mut draw: impl FnMut() -> String,
    ) -> Result<(Rc<str>, Rc<str>), PhoneRefusal> {
        let (sid, slot) = self
            .slots
            .get_key_value(server_id)
            .ok_or(PhoneRefusal::NoServer)?;
        if slot.phones.len() >= self.settings.max_phones {
            return Err(PhoneRefusal::OverCap);
        }
        let sid = sid.clone();
        let conn_id: Rc<str> = loop {
            let candidate = draw();
            if slot.phone(&candidate).is_none() {
                break Rc::from(candidate);
            }
        };
        let slot = self
            .slots
            .get_mut(server_id)
            .ok_or(PhoneRefusal::NoServer)?;
        slot.phones.push((conn_id.clone(), phone.clone()));
        Ok((sid, conn_id))
    }

    /// The binary holding `sid` (None while in grace).
    pub fn holder(&self, sid: &str) -> Option<&C> {
        self.slots.get(sid)?.binary.as_ref()
    }

    /// A phone of `sid` by conn_id.
    pub fn phone(&self, sid: &str, conn_id: &str) -> Option<&C> {
        self.slots.get(sid)?.phone(conn_id)
    }

    /// Phones attached to `sid`.
    pub fn phone_count(&self, sid: &str) -> usize {
        self.slots.get(sid).map_or(0, |slot| slot.phones.len())
    }

    /// Take a phone out of `sid`'s slot; true if it was there.
    pub fn remove_phone(&mut self, sid: &str, phone: &C) -> bool {
        let Some(slot) = self.slots.get_mut(sid) else {
            return false;
        };
        let before = slot.phones.len();
        slot.phones.retain(|(_, c)| !c.same(phone));
        slot.phones.len() != before
    }

    /// A binary of `sid` left at `now` (`held`: as its holder, else as a claimant). A
    /// holder's slot passes to a waiting claimant, or else enters grace for `--grace`.
    pub fn binary_left(&mut self, sid: &str, binary: &C, held: bool, now: Instant) -> Left<C> {
        let Some(slot) = self.slots.get_mut(sid) else {
            return Left::Nothing;
        };
        if !held {
            if matches!(&slot.claimant, Some((c, _)) if c.same(binary)) {
                slot.claimant = None;
                return Left::ClaimWithdrawn;
            }
            return Left::Nothing;
        }
        if !matches!(&slot.binary, Some(b) if b.same(binary)) {
            return Left::Nothing;
        }
        slot.binary = None;
        if let Some((claimant, _)) = slot.claimant.take() {
            let evicted = slot.take_over(claimant.clone());
            return Left::TakenOver { claimant, evicted };
        }
        slot.grace_until = Some(now + self.settings.grace);
        Left::Grace
    }

    /// Deadlines at `now`: probes not answered pass the slot to the claimant (the
    /// holder is closed), and slots whose grace window ended are removed.
    pub fn due(&mut self, now: Instant) -> Due<C> {
        let mut due = Due {
            probes_failed: Vec::new(),
            graces_expired: Vec::new(),
        };
        for (sid, slot) in self.slots.iter_mut() {
            if matches!(slot.claimant, Some((_, deadline)) if deadline <= now) {
                if let Some((claimant, _)) = slot.claimant.take() {
                    let holder = slot.binary.take();
                    let evicted = slot.take_over(claimant.clone());
                    due.probes_failed.push(ProbeFailed {
                        server_id: sid.clone(),
                        holder,
                        claimant,
                        evicted,
                    });
                }
            }
            if matches!(slot.grace_until, Some(end) if end <= now) {
                let phones = slot.phones.drain(..).map(|(_, phone)| phone).collect();
                due.graces_expired.push(GraceExpired {
                    server_id: sid.clone(),
                    phones,
                });
            }
        }
        for expired in &due.graces_expired {
            self.slots.remove(&expired.server_id);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A member connection, told apart by identity.
    type Member = Rc<&'static str>;

    /// A fresh member.
    fn member(name: &'static str) -> Member {
        Rc::new(name)
    }

    /// The probe deadline used throughout.
    const PROBE: Duration = Duration::from_secs(5);
    /// The grace window used throughout.
    const GRACE: Duration = Duration::from_secs(30);

    /// The settings used throughout: 4 phones at most unless a test says otherwise.
    fn settings(max_phones: usize) -> Settings {
        Settings {
            takeover_probe: PROBE,
            grace: GRACE,
            max_phones,
        }
    }

    /// conn_ids 0, 1, 2, … for phones.
    fn counter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("client-s-{n:08x}")
        }
    }

    /// A registry where `binary` holds "s".
    fn held(binary: &Member, now: Instant) -> (Registry<Member>, Rc<str>) {
        let mut reg = Registry::new(settings(4));
        let sid: Rc<str> = Rc::from("s");
        assert!(matches!(reg.claim(&sid, binary, now), Claim::New));
        (reg, sid)
    }

    #[test]
    fn first_binary_claims_a_new_slot() {
        let now = Instant::now();
        let bin = member("bin");
        let (reg, sid) = held(&bin, now);
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&bin)));
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn holder_leaving_opens_grace_and_phones_stay_until_it_ends() {
        let now = Instant::now();
        let bin = member("bin");
        let phone = member("phone");
        let (mut reg, sid) = held(&bin, now);
        reg.attach_phone(&sid, &phone, counter()).ok();
        let left = reg.binary_left(&sid, &bin, true, now);
        assert!(matches!(left, Left::Grace));
        assert!(reg.holder(&sid).is_none());
        // Within grace: the slot and its phone stay.
        let due = reg.due(now + GRACE - Duration::from_millis(1));
        assert!(due.graces_expired.is_empty());
        assert_eq!(reg.phone_count(&sid), 1);
        // At its end: the slot goes, its phone is closed.
        let due = reg.due(now + GRACE);
        assert_eq!(due.graces_expired.len(), 1);
        assert!(due.graces_expired[0].phones[0].same(&phone));
        assert!(reg.is_empty());
    }

    #[test]
    fn a_binary_during_grace_reclaims_at_once_and_evicts_the_phones() {
        let now = Instant::now();
        let (old, new, phone) = (member("old"), member("new"), member("phone"));
        let (mut reg, sid) = held(&old, now);
        reg.attach_phone(&sid, &phone, counter()).ok();
        reg.binary_left(&sid, &old, true, now);
        let Claim::Reclaimed { evicted } = reg.claim(&sid, &new, now) else {
            panic!("a slot in grace is reclaimed");
        };
        assert_eq!(evicted.len(), 1);
        assert!(evicted[0].same(&phone));
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&new)));
        assert_eq!(reg.phone_count(&sid), 0);
        // The reclaimed slot no longer expires with the old grace window.
        assert!(reg.due(now + GRACE).graces_expired.is_empty());
    }

    #[test]
    fn a_second_binary_probes_the_holder_and_a_third_is_refused() {
        let now = Instant::now();
        let (holder, second, third) = (member("holder"), member("second"), member("third"));
        let (mut reg, sid) = held(&holder, now);
        let Claim::Probe { holder: probed } = reg.claim(&sid, &second, now) else {
            panic!("a live holder is probed");
        };
        assert!(probed.same(&holder));
        assert!(matches!(reg.claim(&sid, &third, now), Claim::Refused));
        // The holder still holds while the probe runs.
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&holder)));
    }

    #[test]
    fn takeover_probe_answered_keeps_the_holder_and_refuses_the_claimant() {
        let now = Instant::now();
        let (holder, second) = (member("holder"), member("second"));
        let (mut reg, sid) = held(&holder, now);
        reg.claim(&sid, &second, now);
        let refused = reg.holder_answered(&sid);
        assert!(refused.is_some_and(|c| c.same(&second)));
        assert!(reg.due(now + PROBE).probes_failed.is_empty());
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&holder)));
    }

    #[test]
    fn takeover_probe_unanswered_by_its_deadline_passes_the_slot_to_the_claimant() {
        let now = Instant::now();
        let (holder, second, phone) = (member("holder"), member("second"), member("phone"));
        let (mut reg, sid) = held(&holder, now);
        reg.attach_phone(&sid, &phone, counter()).ok();
        reg.claim(&sid, &second, now);
        assert!(reg
            .due(now + PROBE - Duration::from_millis(1))
            .probes_failed
            .is_empty());
        let due = reg.due(now + PROBE);
        let [failed] = &due.probes_failed[..] else {
            panic!("one probe failed");
        };
        assert!(failed.holder.as_ref().is_some_and(|h| h.same(&holder)));
        assert!(failed.claimant.same(&second));
        assert!(failed.evicted[0].same(&phone));
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&second)));
        // Nothing more to answer: a late frame from the old holder refuses no one.
        assert!(reg.holder_answered(&sid).is_none());
    }

    #[test]
    fn holder_leaving_during_the_probe_hands_the_slot_to_the_claimant() {
        let now = Instant::now();
        let (holder, second) = (member("holder"), member("second"));
        let (mut reg, sid) = held(&holder, now);
        reg.claim(&sid, &second, now);
        let left = reg.binary_left(&sid, &holder, true, now);
        assert!(matches!(left, Left::TakenOver { claimant, .. } if claimant.same(&second)));
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&second)));
    }

    #[test]
    fn a_claimant_leaving_withdraws_its_claim_only() {
        let now = Instant::now();
        let (holder, second, third) = (member("holder"), member("second"), member("third"));
        let (mut reg, sid) = held(&holder, now);
        reg.claim(&sid, &second, now);
        let left = reg.binary_left(&sid, &second, false, now);
        assert!(matches!(left, Left::ClaimWithdrawn));
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&holder)));
        // A new claim may start.
        assert!(matches!(reg.claim(&sid, &third, now), Claim::Probe { .. }));
    }

    #[test]
    fn a_replaced_holder_leaving_changes_nothing() {
        let now = Instant::now();
        let (old, new) = (member("old"), member("new"));
        let (mut reg, sid) = held(&old, now);
        reg.binary_left(&sid, &old, true, now);
        reg.claim(&sid, &new, now);
        // A second report of the old holder's end must not put the new one in grace.
        assert!(matches!(
            reg.binary_left(&sid, &old, true, now),
            Left::Nothing
        ));
        assert!(reg.holder(&sid).is_some_and(|h| h.same(&new)));
    }

    #[test]
    fn phone_cap_refuses_the_phone_past_max_phones() {
        let now = Instant::now();
        let bin = member("bin");
        let (mut reg, sid) = held(&bin, now);
        reg.settings.max_phones = 2;
        for _ in 0..2 {
            assert!(reg.attach_phone(&sid, &member("phone"), counter()).is_ok());
        }
        assert_eq!(
            reg.attach_phone(&sid, &member("third"), counter()),
            Err(PhoneRefusal::OverCap)
        );
        assert_eq!(reg.phone_count(&sid), 2);
    }

    #[test]
    fn a_phone_for_an_unknown_server_id_is_refused() {
        let mut reg: Registry<Member> = Registry::new(settings(4));
        assert_eq!(
            reg.attach_phone("nobody", &member("phone"), counter()),
            Err(PhoneRefusal::NoServer)
        );
    }

    #[test]
    fn phone_conn_ids_are_unique_in_the_slot() {
        let now = Instant::now();
        let bin = member("bin");
        let (mut reg, sid) = held(&bin, now);
        let first = reg.attach_phone(&sid, &member("a"), || "client-s-same".into());
        assert!(first.is_ok());
        // A draw that repeats the first id is drawn again.
        let mut draws = ["client-s-other", "client-s-same"]
            .into_iter()
            .map(String::from);
        let second = reg.attach_phone(&sid, &member("b"), || draws.next_back().unwrap_or_default());
        assert_eq!(second.map(|(_, id)| id), Ok(Rc::from("client-s-other")));
    }

    #[test]
    fn a_removed_phone_is_no_longer_addressable() {
        let now = Instant::now();
        let (bin, phone) = (member("bin"), member("phone"));
        let (mut reg, sid) = held(&bin, now);
        let (_, conn_id) = reg
            .attach_phone(&sid, &phone, counter())
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(reg.phone(&sid, &conn_id).is_some());
        assert!(reg.remove_phone(&sid, &phone));
        assert!(reg.phone(&sid, &conn_id).is_none());
        assert!(!reg.remove_phone(&sid, &phone));
    }
}
