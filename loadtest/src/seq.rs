//! Per-stream sequence accounting: from the sequence numbers a receiver sees, count
//! what was lost, duplicated and reordered. Pure state, no I/O, no clock.

use std::collections::BTreeSet;

/// Gaps remembered at most per stream: enough for any reordering TCP could show
/// (none), small enough that a relay dropping everything cannot grow memory.
const MAX_REMEMBERED_GAPS: usize = 65_536;

/// What one stream's receiver has seen so far.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// One past the highest sequence number seen.
    next: u64,
    /// Sequence numbers below `next` not seen yet (possibly reordered, possibly lost).
    gaps: BTreeSet<u64>,
    /// Gaps forgotten because `gaps` was full: counted as lost for good.
    forgotten: u64,
    /// Distinct sequence numbers received.
    pub received: u64,
    /// Arrivals of a sequence number already seen.
    pub duplicated: u64,
    /// Arrivals that filled an earlier gap (came after a later message).
    pub reordered: u64,
}

/// How one arrival was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected, or later (skipping a gap).
    InOrder,
    /// Filled a gap left earlier.
    Reordered,
    /// Already seen.
    Duplicate,
}

impl SeqTracker {
    /// Records sequence number `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            self.skip_to(seq);
            self.next = seq + 1;
            self.received += 1;
            return Arrival::InOrder;
        }
        if self.gaps.remove(&seq) {
            self.received += 1;
            self.reordered += 1;
            return Arrival::Reordered;
        }
        self.duplicated += 1;
        Arrival::Duplicate
    }

    /// Remembers `next..seq` as gaps (bounded).
    fn skip_to(&mut self, seq: u64) {
        for missing in self.next..seq {
            if self.gaps.len() >= MAX_REMEMBERED_GAPS {
                self.forgotten += seq - missing;
                return;
            }
            self.gaps.insert(missing);
        }
    }

    /// Messages lost given that the sender sent `sent` (sequence numbers `0..sent`).
    /// A message still missing when this is asked counts as lost.
    pub fn lost(&self, sent: u64) -> u64 {
        let tail = sent.saturating_sub(self.next);
        self.gaps.len() as u64 + self.forgotten + tail
    }

    /// Messages that were in the gaps so far (lost unless they still arrive).
    pub fn missing_now(&self) -> u64 {
        self.gaps.len() as u64 + self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> SeqTracker {
        let mut tracker = SeqTracker::default();
        for &seq in seqs {
            tracker.record(seq);
        }
        tracker
    }

    #[test]
    fn in_order_is_clean() {
        let t = feed(&[0, 1, 2, 3]);
        assert_eq!(
            (t.received, t.lost(4), t.duplicated, t.reordered),
            (4, 0, 0, 0)
        );
    }

    #[test]
    fn detects_loss_in_the_middle_and_the_tail() {
        let t = feed(&[0, 1, 3, 4]);
        assert_eq!(t.lost(5), 1);
        assert_eq!(t.lost(7), 3, "5 and 6 never arrived");
    }

    #[test]
    fn detects_duplicates() {
        let t = feed(&[0, 1, 1, 2, 0]);
        assert_eq!((t.duplicated, t.lost(3), t.reordered), (2, 0, 0));
    }

    #[test]
    fn detects_reordering_without_counting_it_lost() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(2), Arrival::InOrder);
        assert_eq!(t.missing_now(), 1);
        assert_eq!(t.record(1), Arrival::Reordered);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!((t.reordered, t.duplicated, t.lost(3)), (1, 1, 0));
    }

    #[test]
    fn gap_memory_is_bounded() {
        let t = feed(&[0, 10_000_000]);
        assert_eq!(t.lost(10_000_001), 10_000_000 - 1);
        assert!(t.gaps.len() <= MAX_REMEMBERED_GAPS);
    }
}
