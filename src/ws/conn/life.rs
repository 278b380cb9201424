//! A connection's life as one value: where its close handshake and its socket are
//! (`Phase`) and what its reader does with the bytes it reads (`Reading`). Transitions
//! are methods that say whether the caller has something to do (queue a close frame,
//! shut the write half, shut the socket down), so an impossible combination — writing
//! after a move, a shut write half on an open connection, an open connection whose
//! reader has finished — cannot be represented.
//!
//! Pure (no I/O): the connection keeps a `Life` in a `Cell` and acts on what the
//! transitions return.

use std::time::Instant;

/// Where a connection's close handshake and socket are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Messages flow both ways.
    Open,
    /// The close handshake began at `since` (a close frame was queued, one arrived, or
    /// the reader saw EOF); only the close frame and the frames queued before it leave.
    Closing {
        /// When the handshake began (the tick aborts it after the close linger).
        since: Instant,
        /// Everything queued went out, the reader is past the handshake, and the
        /// write half was shut down.
        shut: bool,
    },
    /// The socket failed or was aborted: nothing more is written, and whatever is
    /// queued is discarded.
    Broken,
    /// Moved to another shard, which owns the socket now: this copy writes nothing and
    /// never shuts the socket down; it only has to go away.
    Moved,
}

/// What the reader does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Frames are decoded and dispatched.
    Decoding {
        /// The connection's `partial` buffer may hold whole frames not yet decoded:
        /// decoding stopped when a queue it feeds filled, so the reader decides whether
        /// to pause before it decodes more.
        unparsed: bool,
    },
    /// After a protocol error, or once closed for not reading, the stream is not parsed:
    /// bytes are discarded until EOF or the socket goes.
    Discarding,
    /// The reader finished and the rendezvous has forgotten the connection.
    Done,
}

/// `Phase` as stored: the instant of a close handshake is kept beside it, so the whole
/// `Life` is 24 bytes (an enum carrying the instant would add a tag word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `Phase::Open`.
    Open,
    /// `Phase::Closing` with the write half still open.
    Closing,
    /// `Phase::Closing` with the write half shut.
    Shut,
    /// `Phase::Broken`.
    Broken,
    /// `Phase::Moved`.
    Moved,
}

/// A connection's whole life state. Fields are private: only the transitions below
/// change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    /// When the close handshake began (`Stage::Closing`/`Shut`); the connection's start
    /// until then, and meaningless after a break or a move.
    since: Instant,
    /// The close handshake and the socket.
    stage: Stage,
    /// The reader.
    reading: Reading,
}

impl Life {
    /// A connection upgraded at `now`: open, decoding.
    pub fn new(now: Instant) -> Self {
        Life {
            since: now,
            stage: Stage::Open,
            reading: Reading::Decoding { unparsed: false },
        }
    }

    /// The close handshake and socket state.
    pub fn phase(&self) -> Phase {
        let since = self.since;
        match self.stage {
            Stage::Open => Phase::Open,
            Stage::Closing => Phase::Closing { since, shut: false },
            Stage::Shut => Phase::Closing { since, shut: true },
            Stage::Broken => Phase::Broken,
            Stage::Moved => Phase::Moved,
        }
    }

    /// The reader's state.
    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// Messages may be queued (open, and the socket is fine).
    pub fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    /// Frames may still be written (open or closing; not broken, not moved).
    pub fn may_write(&self) -> bool {
        matches!(self.stage, Stage::Open | Stage::Closing | Stage::Shut)
    }

    /// Moved to another shard.
    pub fn is_moved(&self) -> bool {
        self.stage == Stage::Moved
    }

    /// Nothing will drain this connection's queue any more (its socket is gone or its
    /// reader has finished): whoever waits for room stops waiting.
    pub fn is_gone(&self) -> bool {
        !self.may_write() || self.reading == Reading::Done
    }

    /// The reader has finished.
    pub fn reader_done(&self) -> bool {
        self.reading == Reading::Done
    }

    /// The reader throws its bytes away.
    pub fn is_discarding(&self) -> bool {
        self.reading == Reading::Discarding
    }

    /// Whole frames may wait undecoded in `partial`.
    pub fn unparsed(&self) -> bool {
        self.reading == Reading::Decoding { unparsed: true }
    }

    /// Begin the close handshake at `now`. True when the connection was open and a
    /// close frame (ours, or the echo of the client's) is to be queued; a closing,
    /// broken or moved connection is left as it is.
    #[must_use]
    pub fn close(&mut self, now: Instant) -> bool {
        if self.stage != Stage::Open {
            return false;
        }
        self.stage = Stage::Closing;
        self.since = now;
        true
    }

    /// The queue emptied: true (once) when the close frame went out and the write half
    /// is to be shut down now. That is once the reader is past the handshake too (RFC
    /// 6455 §5.5.1, §7.1.1): it read the client's close frame or EOF, or it discards the
    /// stream after a protocol error or a close for not reading (a failed connection is
    /// not waited on). Until then the write half stays open, so the client's close frame
    /// still reaches the relay through a balancer that ends a tunnel once the server
    /// half-closes (HAProxy); the close linger bounds the wait.
    #[must_use]
    pub fn shut_write(&mut self) -> bool {
        if self.stage != Stage::Closing || matches!(self.reading, Reading::Decoding { .. }) {
            return false;
        }
        self.stage = Stage::Shut;
        true
    }

    /// The socket failed or is being killed: true when the caller is to shut it down
    /// (never for a moved connection, whose socket lives on elsewhere).
    #[must_use]
    pub fn abort(&mut self) -> bool {
        if self.stage == Stage::Moved {
            return false;
        }
        self.stage = Stage::Broken;
        true
    }

    /// The connection went to another shard.
    pub fn moved(&mut self) {
        self.stage = Stage::Moved;
    }

    /// Stop parsing the peer's bytes (after a protocol error, or a close for not
    /// reading). A finished reader stays finished.
    pub fn discard(&mut self) {
        if self.reading != Reading::Done {
            self.reading = Reading::Discarding;
        }
    }

    /// Note whether whole frames wait undecoded (only while decoding).
    pub fn set_unparsed(&mut self, unparsed: bool) {
        if let Reading::Decoding { .. } = self.reading {
            self.reading = Reading::Decoding { unparsed };
        }
    }

    /// The reader finished at `now`. An open connection (EOF without a close frame)
    /// has nothing more to send: it is closing from now.
    pub fn finish_reading(&mut self, now: Instant) {
        self.reading = Reading::Done;
        let _ = self.close(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_new_connection_is_open_and_decoding() {
        let life = Life::new(t0());
        assert!(life.is_open() && life.may_write() && !life.is_gone());
        assert_eq!(life.reading(), Reading::Decoding { unparsed: false });
        assert!(!life.unparsed() && !life.is_discarding() && !life.reader_done());
    }

    #[test]
    fn close_queues_one_close_frame_then_shuts_the_write_half_once() {
        let now = t0() + std::time::Duration::from_secs(1);
        let mut life = Life::new(t0());
        assert!(life.close(now), "an open connection queues its close frame");
        assert!(!life.close(now), "a second close queues nothing");
        assert!(!life.is_open() && life.may_write());
        assert_eq!(
            life.phase(),
            Phase::Closing {
                since: now,
                shut: false
            }
        );
        assert!(
            !life.shut_write(),
            "the write half stays open while the client's close frame may still come"
        );
        life.finish_reading(now);
        assert!(
            life.shut_write(),
            "the write half is shut once the queue emptied and the reader finished"
        );
        assert!(!life.shut_write(), "and only once");
        assert_eq!(
            life.phase(),
            Phase::Closing {
                since: now,
                shut: true
            }
        );
    }

    #[test]
    fn a_discarding_reader_is_not_waited_on() {
        let mut life = Life::new(t0());
        life.discard();
        assert!(life.close(t0()));
        assert!(
            life.shut_write(),
            "after a protocol error or a close for not reading, the write half is shut at once"
        );
    }

    #[test]
    fn an_open_connection_never_shuts_its_write_half() {
        let mut life = Life::new(t0());
        assert!(!life.shut_write());
        assert!(life.is_open());
    }

    #[test]
    fn abort_breaks_the_socket_and_stops_writes() {
        let mut life = Life::new(t0());
        assert!(life.close(t0()));
        assert!(life.abort(), "the caller shuts the socket down");
        assert_eq!(life.phase(), Phase::Broken);
        assert!(!life.may_write() && life.is_gone());
        assert!(
            !life.close(t0()),
            "a broken connection queues no close frame"
        );
        assert!(!life.shut_write());
    }

    #[test]
    fn a_moved_connection_writes_nothing_and_is_never_shut_down() {
        let mut life = Life::new(t0());
        life.moved();
        assert!(life.is_moved() && !life.may_write() && life.is_gone());
        assert!(!life.abort(), "its socket lives on at the new owner");
        assert!(life.is_moved());
        assert!(!life.close(t0()) && !life.shut_write());
        life.finish_reading(t0());
        assert!(life.is_moved() && life.reader_done());
    }

    #[test]
    fn eof_on_an_open_connection_starts_closing() {
        let now = t0();
        let mut life = Life::new(t0());
        life.finish_reading(now);
        assert!(life.reader_done() && life.is_gone());
        assert_eq!(
            life.phase(),
            Phase::Closing {
                since: now,
                shut: false
            }
        );
    }

    #[test]
    fn eof_keeps_an_earlier_close_instant() {
        let first = t0();
        let mut life = Life::new(t0());
        assert!(life.close(first));
        life.finish_reading(first + std::time::Duration::from_secs(1));
        assert_eq!(
            life.phase(),
            Phase::Closing {
                since: first,
                shut: false
            }
        );
    }

    #[test]
    fn discarding_forgets_unparsed_frames_and_ignores_new_marks() {
        let mut life = Life::new(t0());
        life.set_unparsed(true);
        assert!(life.unparsed());
        life.discard();
        assert!(life.is_discarding() && !life.unparsed());
        life.set_unparsed(true);
        assert!(
            !life.unparsed(),
            "a discarding reader holds no frames to decode"
        );
    }

    #[test]
    fn a_finished_reader_stays_finished() {
        let mut life = Life::new(t0());
        life.finish_reading(t0());
        life.discard();
        life.set_unparsed(true);
        assert_eq!(life.reading(), Reading::Done);
    }

    #[test]
    fn the_life_value_is_small() {
        // One `Cell<Life>` replaces a state enum of 16 B and six booleans.
        assert!(std::mem::size_of::<Life>() <= 24);
    }
}
