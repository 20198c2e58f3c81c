//! A hybrid logical clock (Kulkarni, Demirbas, Madappa, Avva, Leone: "Logical Physical
//! Clocks and Consistent Snapshots in Globally Distributed Databases", 2014).
//!
//! A timestamp is a pair (l, c): l is the largest physical time (ms since the Unix epoch)
//! this node has seen, its own or in a message; c counts events that share l. Pairs order
//! lexicographically. The clock gives what a wall clock cannot:
//!
//! - **monotonic**: every timestamp it hands out is greater than the one before, even when
//!   the wall clock steps back (NTP, a VM's migration, a skewed node);
//! - **causal**: a timestamp taken after receiving message m is greater than m's, so
//!   "happened before" implies "smaller timestamp", across nodes;
//! - **close to physical time**: l is never below the local wall clock, and exceeds it only
//!   by how far the fastest clock among the messages received is ahead (the skew the
//!   cluster's clock watch bounds).
//!
//! ```text
//!  local or send at wall time pt:   l' = max(l, pt)
//!                                   c' = c + 1 if l' = l, else 0
//!  receive m = (lm, cm) at pt:      l' = max(l, lm, pt)
//!                                   c' = max(c, cm) + 1  if l' = l = lm
//!                                        c + 1           if l' = l only
//!                                        cm + 1          if l' = lm only
//!                                        0               if l' = pt only
//! ```
//!
//! [`HlcState`] is the pure algorithm (the caller passes the wall time, so tests drive any
//! clock); [`HybridClock`] wraps it behind a lock with the system clock.
//!
//! **Record timestamps** (decision 0022): a record's `timestamp_ms` is l of the stamping
//! node's clock ([`HybridClock`] is the embedded log's default [`Clock`], and the JetStream
//! backend's). c is not written: within a partition the offset orders records, and the wire
//! keeps its one i64 of ms since the epoch, so retention and display read it as before. What
//! a reader may rely on: timestamps one node stamps never decrease (whatever its wall clock
//! does), and a record stamped by a node after it read record r has a timestamp ≥ r's
//! ([`HybridClock::observe`]; r's clock within [`HLC_AHEAD_MS_MAX`] of the reader's).
//!
//! ```
//! use logbook_log::hlc::{HlcState, HlcTimestamp};
//! let mut a = HlcState::default();
//! let sent = a.now(1_000);
//! let mut b = HlcState::default();
//! let got = b.receive(900, sent); // b's wall clock is behind a's
//! assert!(got > sent);
//! assert_eq!(got, HlcTimestamp { physical_ms: 1_000, logical: 1 });
//! ```

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Clock;
pub use crate::limits::HLC_AHEAD_MS_MAX;

/// A hybrid logical clock's timestamp: `physical_ms` (ms since the Unix epoch) first, then
/// `logical`. Ordered lexicographically (the derived order follows field order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HlcTimestamp {
    /// The largest physical time seen, in ms since the Unix epoch.
    pub physical_ms: u64,
    /// Events that share `physical_ms`, in order.
    pub logical: u32,
}

/// The pure clock: the last timestamp handed out. Starts at (0, 0).
///
/// Invariant: each timestamp returned is strictly greater than every earlier one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HlcState {
    last: HlcTimestamp,
}

impl HlcState {
    /// The timestamp of a local event (or a message sent) at wall time `wall_ms`.
    pub fn now(&mut self, wall_ms: u64) -> HlcTimestamp {
        let next = if wall_ms > self.last.physical_ms {
            HlcTimestamp {
                physical_ms: wall_ms,
                logical: 0,
            }
        } else {
            successor(self.last)
        };
        self.advance(next)
    }

    /// The timestamp of receiving a message stamped `message` at wall time `wall_ms`:
    /// greater than both `message` and every timestamp this clock handed out before.
    pub fn receive(&mut self, wall_ms: u64, message: HlcTimestamp) -> HlcTimestamp {
        let latest = self.last.max(message);
        let next = if wall_ms > latest.physical_ms {
            HlcTimestamp {
                physical_ms: wall_ms,
                logical: 0,
            }
        } else {
            successor(latest)
        };
        self.advance(next)
    }

    /// Folds in `physical_ms`, a time read from another node (a record's timestamp, which
    /// carries l only), at wall time `wall_ms`: every later timestamp of this clock has
    /// l ≥ `physical_ms`. A time more than `max_ahead_ms` ahead of `wall_ms` is ignored
    /// (returns false): a clock that far off is one the clock watch removes, and one bad
    /// clock, or a caller's own timestamp, must not drag this node's clock with it.
    pub fn observe(&mut self, wall_ms: u64, physical_ms: u64, max_ahead_ms: u64) -> bool {
        if physical_ms > wall_ms.saturating_add(max_ahead_ms) {
            return false;
        }
        let message = HlcTimestamp {
            physical_ms,
            logical: 0,
        };
        self.receive(wall_ms, message);
        true
    }

    /// The last timestamp handed out.
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }

    fn advance(&mut self, next: HlcTimestamp) -> HlcTimestamp {
        assert!(
            next > self.last,
            "the hybrid clock went back: {next:?} ≤ {:?}",
            self.last
        );
        self.last = next;
        next
    }
}

/// The next timestamp at the same physical time. When the counter is full (2³² events in one
/// ms, which no node reaches), the physical part moves on by a ms rather than wrap.
fn successor(t: HlcTimestamp) -> HlcTimestamp {
    match t.logical.checked_add(1) {
        Some(logical) => HlcTimestamp {
            physical_ms: t.physical_ms,
            logical,
        },
        None => HlcTimestamp {
            physical_ms: t.physical_ms.saturating_add(1),
            logical: 0,
        },
    }
}

/// A hybrid logical clock on the system's wall clock, shared between threads.
#[derive(Debug, Default)]
pub struct HybridClock {
    state: Mutex<HlcState>,
}

impl HybridClock {
    /// A clock that has handed out nothing yet.
    pub fn new() -> Self {
        HybridClock::default()
    }

    /// The timestamp of a local event (or a message sent) now.
    pub fn now(&self) -> HlcTimestamp {
        let wall = wall_ms();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .now(wall)
    }

    /// The timestamp of receiving a message stamped `message` now.
    pub fn receive(&self, message: HlcTimestamp) -> HlcTimestamp {
        let wall = wall_ms();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .receive(wall, message)
    }

    /// Folds in the newest of `timestamps_ms`, record timestamps read from the log, unless
    /// it is more than [`HLC_AHEAD_MS_MAX`] ahead of the wall clock ([`HlcState::observe`]);
    /// whether it was folded in (false too when there is none).
    pub fn observe(&self, timestamps_ms: impl IntoIterator<Item = i64>) -> bool {
        let Some(newest) = timestamps_ms.into_iter().max() else {
            return false;
        };
        let Ok(newest) = u64::try_from(newest) else {
            return false;
        };
        let wall = wall_ms();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(wall, newest, HLC_AHEAD_MS_MAX)
    }
}

/// Record timestamps from the clock: l of [`HybridClock::now`], in ms since the epoch —
/// never below the wall clock, never decreasing.
impl Clock for HybridClock {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.now().physical_ms).unwrap_or(i64::MAX)
    }
}

/// The wall clock in ms since the Unix epoch (0 before the epoch).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One step of a run: a local event at a wall time, or a receipt of a message.
    #[derive(Debug, Clone)]
    enum Step {
        Local(u64),
        Receive(u64, HlcTimestamp),
    }

    fn step() -> impl Strategy<Value = Step> {
        let ts = (0u64..1_000_000, 0u32..5).prop_map(|(physical_ms, logical)| HlcTimestamp {
            physical_ms,
            logical,
        });
        prop_oneof![
            (0u64..1_000_000).prop_map(Step::Local),
            (0u64..1_000_000, ts).prop_map(|(w, m)| Step::Receive(w, m)),
        ]
    }

    #[test]
    fn a_wall_clock_that_steps_back_does_not_move_the_clock_back() {
        let mut c = HlcState::default();
        let a = c.now(5_000);
        let b = c.now(4_000);
        assert_eq!(
            a,
            HlcTimestamp {
                physical_ms: 5_000,
                logical: 0
            }
        );
        assert_eq!(
            b,
            HlcTimestamp {
                physical_ms: 5_000,
                logical: 1
            }
        );
        assert_eq!(
            c.now(6_000),
            HlcTimestamp {
                physical_ms: 6_000,
                logical: 0
            }
        );
    }

    #[test]
    fn a_full_counter_moves_to_the_next_ms() {
        let mut c = HlcState {
            last: HlcTimestamp {
                physical_ms: 7,
                logical: u32::MAX,
            },
        };
        assert_eq!(
            c.now(7),
            HlcTimestamp {
                physical_ms: 8,
                logical: 0
            }
        );
    }

    #[test]
    fn system_clock_is_monotonic_and_near_the_wall() {
        let clock = HybridClock::new();
        let mut prev = clock.now();
        for _ in 0..10_000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
        assert!(prev.physical_ms.abs_diff(wall_ms()) < 60_000);
    }

    proptest! {
        /// Every timestamp is greater than all before it, and a receipt is greater than the
        /// message; l is never below the wall time and never above the largest physical
        /// time seen (wall or message): the clock stays as close to physical time as the
        /// inputs allow.
        #[test]
        fn monotonic_causal_and_close_to_physical_time(
            steps in prop::collection::vec(step(), 1..300),
        ) {
            let mut c = HlcState::default();
            let mut prev = HlcTimestamp::default();
            let mut max_seen = 0u64;
            for s in steps {
                let t = match s {
                    Step::Local(w) => {
                        max_seen = max_seen.max(w);
                        let t = c.now(w);
                        prop_assert!(t.physical_ms >= w);
                        t
                    }
                    Step::Receive(w, m) => {
                        max_seen = max_seen.max(w).max(m.physical_ms);
                        let t = c.receive(w, m);
                        prop_assert!(t > m, "receive({m:?}) = {t:?}");
                        prop_assert!(t.physical_ms >= w);
                        t
                    }
                };
                prop_assert!(t > prev, "{t:?} after {prev:?}");
                prop_assert!(t.physical_ms <= max_seen, "l = {} > max seen {max_seen}", t.physical_ms);
                prev = t;
            }
        }

        /// A record timestamp read from another node (l only): within the bound, every later
        /// timestamp has l at least it; beyond it, the clock is unmoved. Either way the clock
        /// stays monotonic.
        #[test]
        fn an_observed_timestamp_bounds_later_ones_unless_too_far_ahead(
            start in 0u64..1_000_000,
            ahead in 0u64..2_000,
            later_walls in prop::collection::vec(0u64..2_000, 1..20),
        ) {
            let mut c = HlcState::default();
            let before = c.now(start);
            let observed = start + ahead;
            let folded = c.observe(start, observed, HLC_AHEAD_MS_MAX);
            prop_assert_eq!(folded, ahead <= HLC_AHEAD_MS_MAX);
            let mut prev = c.last();
            prop_assert!(prev >= before);
            let mut wall_max = start;
            for w in later_walls {
                wall_max = wall_max.max(start + w);
                let t = c.now(start + w);
                prop_assert!(t > prev);
                if folded {
                    prop_assert!(t.physical_ms >= observed, "{t:?} below {observed}");
                } else {
                    // Unmoved by the observed time: l is the largest wall time seen.
                    prop_assert!(t.physical_ms <= wall_max, "dragged: {t:?}");
                }
                prev = t;
            }
        }

        /// Messages between two nodes with skewed clocks: every receipt is stamped after its
        /// send, so causally ordered events are ordered by timestamp whatever the skew.
        #[test]
        fn causality_across_two_skewed_nodes(
            skew in 0u64..10_000,
            sends in prop::collection::vec((any::<bool>(), 0u64..50), 1..200),
        ) {
            let (mut a, mut b) = (HlcState::default(), HlcState::default());
            let mut real = 100_000u64;
            for (a_to_b, dt) in sends {
                real += dt;
                let (from, to, from_wall, to_wall) = if a_to_b {
                    (&mut a, &mut b, real + skew, real)
                } else {
                    (&mut b, &mut a, real, real + skew)
                };
                let sent = from.now(from_wall);
                let got = to.receive(to_wall, sent);
                prop_assert!(got > sent);
            }
        }
    }
}
