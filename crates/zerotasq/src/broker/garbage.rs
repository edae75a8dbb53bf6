//! The garbage guard: counts malformed messages per peer and, at the configured limit,
//! names the peer to be ignored from then on. Both of its tables are bounded, so a flood of
//! made-up routing ids resets them instead of growing them.

use std::collections::{HashMap, HashSet};

/// Peers whose malformed messages are counted at once; beyond it the counts start over.
const MAX_COUNTED_PEERS: usize = 10_000;
/// Peers ignored at once; beyond it the list starts over (a forgiven peer that goes on
/// sending garbage is caught again).
const MAX_IGNORED_PEERS: usize = 10_000;

pub(super) struct GarbageGuard {
    /// Malformed messages a peer may send before it is ignored.
    limit: u32,
    counts: HashMap<Vec<u8>, u32>,
    ignored: HashSet<Vec<u8>>,
    /// Malformed messages seen, for the figures.
    malformed: u64,
}

impl GarbageGuard {
    pub(super) fn new(limit: u32) -> Self {
        GarbageGuard {
            limit,
            counts: HashMap::new(),
            ignored: HashSet::new(),
            malformed: 0,
        }
    }

    pub(super) fn is_ignored(&self, identity: &[u8]) -> bool {
        self.ignored.contains(identity)
    }

    /// Counts one malformed message from `identity`; true when it is the one that makes
    /// the peer ignored.
    pub(super) fn strike(&mut self, identity: &[u8]) -> bool {
        self.malformed += 1;
        if self.counts.len() > MAX_COUNTED_PEERS {
            self.counts.clear();
        }
        let count = self.counts.entry(identity.to_vec()).or_insert(0);
        *count += 1;
        if *count < self.limit {
            return false;
        }
        tracing::warn!("ignoring a peer that sent {count} malformed messages");
        if self.ignored.len() > MAX_IGNORED_PEERS {
            self.ignored.clear();
        }
        self.ignored.insert(identity.to_vec());
        true
    }

    pub(super) fn malformed(&self) -> u64 {
        self.malformed
    }
}
