//! Connection-level plumbing below the WebSocket and HTTP layers: the process-wide count
//! of open client connections (`--max-connections`) and the permit each admitted
//! connection holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Open client connections (public listener), shared by every shard; touched once per
/// connection, never per message.
#[derive(Debug, Default)]
pub struct ConnCount {
    /// Connections counted now.
    open: AtomicUsize,
}

impl ConnCount {
    /// Count one more open connection, unless `max` are open already.
    pub fn admit(self: &Arc<Self>, max: usize) -> Option<ConnPermit> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnPermit(self.clone()))
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One admitted connection's place under `--max-connections`; released on drop.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnCount>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let count = Arc::new(ConnCount::default());
        let a = count.admit(2).expect("first");
        let _b = count.admit(2).expect("second");
        assert!(count.admit(2).is_none(), "third is over the cap");
        assert_eq!(count.open(), 2);
        drop(a);
        assert_eq!(count.open(), 1);
        assert!(count.admit(2).is_some());
    }
}
