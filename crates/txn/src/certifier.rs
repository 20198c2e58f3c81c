//! The certifier: decides, in commit order, whether a transaction may commit.
//!
//! It is pure bookkeeping — no I/O — and runs under the store's commit lock, so its
//! decisions form one total order, the order of the commit stream.
//!
//! ## Positions
//! Commits and snapshots are placed on one line of *sequence numbers*: the read-write
//! commit at offset `o` sits at `2o + 1`, a snapshot `s` (seeing offsets `< s`) at `2s`, and
//! a transaction that commits without a record (read-only) at `2p`, where `p` is the offset
//! the next record would get. Two transactions are *concurrent* when each one's snapshot
//! precedes the other's commit.
//!
//! ## Rules
//! * **Write-write** (`snapshot`, `serializable`; `read_committed` only for keys read with
//!   `get_for_update`): a key this transaction writes or locks must not have been written
//!   or locked by a transaction that committed after the key's *base* (the snapshot, or for
//!   `read_committed` the moment of the `get_for_update` read). First committer wins.
//!   Two pure increments commute and never conflict — unless the transaction also read
//!   the key (then its increment is a read-modify-write), locked it with
//!   `get_for_update`, or its snapshot reads missed a concurrent commit (then the value its
//!   increment reports, taken at commit, would observe a state its reads do not: it could
//!   not be placed at one point in the serial order).
//! * **SSI** (`serializable` with `serializable`): the rw-antidependency `A → B` exists when
//!   `A` read a key (or a range containing a key) that a concurrent `B` wrote, so `A` did
//!   not see `B`'s write. A cycle in a non-serializable history needs two consecutive such
//!   edges `T1 → T2 → T3` between concurrent transactions (Fekete et al., TODS 2005), and
//!   with the *commit-ordering* refinement of Ports & Grittner (VLDB 2012) only when `T3`
//!   commits first; if `T1` is read-only, only when `T3` committed before `T1`'s snapshot.
//!   Because reads are complete when a transaction commits, all edges between committed
//!   transactions are known at the later commit; the committing transaction `T` checks
//!   (a) `T` as the pivot `T2`: an in-edge from a committed `T1` and an out-edge to a `T3`
//!   that committed before `T1`; (b) `T` as `T1`: an out-edge to a committed `T2` that
//!   itself recorded an out-edge to an earlier `T3`. A hit aborts `T` — the only one of the
//!   three still able to abort — so nothing already acknowledged is ever undone.
//!
//! Only `serializable` transactions take part in SSI (as in PostgreSQL): an rw-antidependency
//! is tracked only between two of them, so mixing levels gives the weaker transaction's
//! guarantees to the anomalies it is part of.
//!
//! ## False positives
//! A dangerous structure is necessary for a cycle, not sufficient: `T1 → T2 → T3` may be
//! closed by no edge back from `T3` to `T1`, and the check aborts anyway. Conflicts are
//! tracked per key and per exact range (no page or relation granularity, no lock
//! promotion), so those do not add false positives; a range read conflicts with any write
//! into the range, including one to a key the reader's limit cut off later (the recorded
//! range ends at the last key returned when a limit cut it).
//!
//! ## Memory
//! A committed transaction's summary is kept while some active transaction is concurrent
//! with it (its commit is after that transaction's snapshot), and dropped otherwise. A
//! transaction whose snapshot falls more than a limit of commits behind is expired (it
//! fails with `TransactionTooOld` at its next operation) so it cannot pin memory.
//!
//! The summaries' bytes (keys, range bounds, a fixed cost per entry) are counted per
//! principal — who committed them ([`Principal`]) — and held under a budget that each
//! principal has a share of: the budget divided by the principals holding summaries plus
//! one, so that a principal holding none always finds room. One principal's commits can
//! push out only its own history, and never a summary an open transaction still needs:
//! * A summary that no registered transaction needs (its commit precedes every open
//!   transaction's snapshot) is kept only for one-shot requests' snapshot window, so it can
//!   be forgotten: one-shot requests with a snapshot before it are then refused as
//!   `snapshot_too_old` ([`Certifier::forgotten_to`]), retryable at a newer snapshot.
//! * A **read-only** summary (no writes; kept only at `serializable`, for its reads) can
//!   always be forgotten: it can only be the `T1` of a later pivot — it writes nothing, so
//!   nobody has an edge into it — and with the read-only refinement only when `T3` committed
//!   before its snapshot. So it is folded into one position, the newest snapshot of a
//!   forgotten reader: a later pivot whose `T3` committed before that position is refused
//!   (a false positive at worst, as for the untracked readers of safe snapshots).
//! * A read-write commit that would take its principal over its share, after that
//!   principal's forgettable summaries are gone, is refused before it is appended
//!   ([`NoRoom::Share`]), and one that would take the total over the budget, after every
//!   forgettable summary is gone, likewise ([`NoRoom::Budget`]); both are retryable, and the
//!   room comes back as the open transactions that pin those summaries end. A read-only
//!   commit's summary that finds no room is folded at once instead. So no open transaction
//!   is ever aborted to make room.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// Keys read, with the version seen (`None`: absent).
pub(crate) type ReadSet = BTreeMap<Vec<u8>, Option<u64>>;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{ConflictKind, TxnError};

/// How a transaction touches a key it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteClass {
    /// Only increments: commutes with other increments.
    Increment,
    /// A put or delete (possibly conditional).
    Write,
    /// `get_for_update` without a write: conflicts like a write, but is not one for SSI.
    Lock,
}

impl WriteClass {
    fn conflicts_with(self, other: WriteClass) -> bool {
        !(self == WriteClass::Increment && other == WriteClass::Increment)
    }
    fn is_write(self) -> bool {
        self != WriteClass::Lock
    }
}

/// A key range as recorded by a scan: `(start, end)` bounds.
pub(crate) type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Whether `key` lies in `range`.
pub(crate) fn in_range(range: &Range, key: &[u8]) -> bool {
    let after_start = match &range.0 {
        Bound::Included(s) => key >= s.as_slice(),
        Bound::Excluded(s) => key > s.as_slice(),
        Bound::Unbounded => true,
    };
    let before_end = match &range.1 {
        Bound::Included(e) => key <= e.as_slice(),
        Bound::Excluded(e) => key < e.as_slice(),
        Bound::Unbounded => true,
    };
    after_start && before_end
}

/// What the certifier is told about a committing transaction.
#[derive(Debug)]
pub(crate) struct Footprint<'a> {
    /// Whether SSI applies (isolation `serializable`).
    pub serializable: bool,
    /// Whether reads come from one snapshot (`snapshot`, `serializable`).
    pub snapshot_reads: bool,
    /// Snapshot position (`2 × snapshot offset`).
    pub snapshot_seq: u64,
    /// Keys written or locked: class and the base position for the write-write check
    /// (`None`: not checked, `read_committed` blind writes).
    pub writes: &'a HashMap<Vec<u8>, (WriteClass, Option<u64>)>,
    /// Keys read (serializable only).
    pub reads: &'a ReadSet,
    /// Ranges read (serializable only).
    pub ranges: &'a [Range],
}

/// A refused commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub kind: ConflictKind,
    pub key: Vec<u8>,
    /// Position of the other transaction.
    pub other_seq: u64,
}

/// What is remembered of a committed transaction while others may conflict with it.
#[derive(Debug)]
struct Summary {
    commit_seq: u64,
    snapshot_seq: u64,
    serializable: bool,
    /// No writes (locks do not count).
    read_only: bool,
    writes: HashMap<Vec<u8>, WriteClass>,
    reads: ReadSet,
    ranges: Vec<Range>,
    /// Earliest position of a transaction this one had an rw out-edge to (all committed
    /// before it).
    out_min: Option<u64>,
    /// Who committed it: its bytes count against this principal's share.
    principal: Principal,
}

/// Who committed a transaction, as the certifier's shares of its budget count them
/// (`None`: a commit without a principal, as with authentication off).
pub(crate) type Principal = Option<String>;

/// Why the certifier has no room for a read-write commit's summary (see the module
/// documentation): nothing was appended, and a retry can succeed once the open
/// transactions that need the summaries held end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The committing principal's summaries that open transactions need take `held`
    /// bytes of its `share`; this commit's would take `needed` more.
    Share {
        held: usize,
        share: usize,
        needed: usize,
    },
    /// Summaries that open transactions need take `held` bytes of the whole budget `max`;
    /// this commit's would take `needed` more.
    Budget {
        held: usize,
        max: usize,
        needed: usize,
    },
}

/// A commit refused for want of room is the caller's retryable error (here, beside the
/// refusal, so that the error module names nothing of the certifier's).
impl From<NoRoom> for TxnError {
    fn from(no_room: NoRoom) -> Self {
        match no_room {
            NoRoom::Share {
                held,
                share,
                needed,
            } => TxnError::CertifierShareFull {
                held,
                share,
                needed,
            },
            NoRoom::Budget { held, max, needed } => TxnError::CertifierFull { held, max, needed },
        }
    }
}

/// What one entry of a summary (a key, a range) costs in the certifier's byte budget
/// beyond its bytes: the map node or vector slot and the allocation's header.
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 48;

/// The bytes a summary of these parts takes in the budget.
pub(crate) fn footprint_bytes<'a>(
    writes: impl Iterator<Item = &'a Vec<u8>>,
    reads: &'a ReadSet,
    ranges: &[Range],
) -> usize {
    let bound = |b: &Bound<Vec<u8>>| match b {
        Bound::Included(k) | Bound::Excluded(k) => k.len(),
        Bound::Unbounded => 0,
    };
    let keys: usize = writes
        .chain(reads.keys())
        .map(|k| k.len() + ENTRY_OVERHEAD_BYTES)
        .sum();
    let ranges: usize = ranges
        .iter()
        .map(|(a, b)| bound(a) + bound(b) + ENTRY_OVERHEAD_BYTES)
        .sum();
    std::mem::size_of::<Summary>() + keys + ranges
}

impl Summary {
    fn bytes(&self) -> usize {
        footprint_bytes(self.writes.keys(), &self.reads, &self.ranges)
    }

    fn read_covers(&self, key: &[u8]) -> bool {
        self.reads.contains_key(key) || self.ranges.iter().any(|r| in_range(r, key))
    }
}

/// A registered open transaction.
#[derive(Debug)]
struct Active {
    expired: Arc<AtomicBool>,
    started: std::time::Instant,
    /// Serializable and not declared read-only: matters for safe snapshots.
    serializable_rw: bool,
}

#[derive(Debug, Default)]
struct Candidate {
    seq: u64,
    waiting: HashSet<u64>,
    unsafe_: bool,
}

/// The certifier's state. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Certifier {
    /// Summaries of read-write commits, in commit order.
    recent: VecDeque<Summary>,
    /// Summaries of read-only `serializable` commits, in commit order: they matter only as
    /// the `T1` of a later pivot (their reads), so they are checked only for that, and are
    /// forgotten first when over the budget.
    readers: VecDeque<Summary>,
    /// Open transactions by (start position, id). The start position bounds every position
    /// the transaction can still compare against.
    active: BTreeMap<(u64, u64), Active>,
    active_ids: HashMap<u64, u64>,
    /// The open transactions whose certification compares against commits after a
    /// position, by (that position, id): only these pin summaries ([`Self::forget_one`]).
    /// A `read_committed` transaction joins at its first `get_for_update`
    /// ([`Self::need_history`]); a read-only one never does — at a safe snapshot, or not
    /// `serializable`, its commit is checked against nothing; at the newest snapshot its
    /// reads are checked only while the commits after it are still kept (the window).
    needing: BTreeSet<(u64, u64)>,
    /// The position of each transaction in `needing`, by id.
    needing_ids: HashMap<u64, u64>,
    safe_seq: u64,
    candidate: Option<Candidate>,
    /// The snapshot position new transactions start at (or after): without early lock
    /// release it trails the newest commit, and summaries above it must stay.
    floor_seq: u64,
    /// The snapshot window in positions (`2 ×` commits): summaries of commits this close
    /// behind `floor_seq` are kept even when no open transaction needs them, so that a
    /// one-shot commit request with a snapshot in the window can be certified.
    window_seq: u64,
    /// The newest safe snapshot handed to a read-only serializable transaction.
    handed_safe_seq: u64,
    /// Bytes the retained summaries take ([`Summary::bytes`]).
    bytes: usize,
    /// Those bytes by the principal that committed them (no entry: none).
    held: HashMap<Principal, usize>,
    /// The budget of `bytes` (0: none, for tests of the rules alone).
    bytes_max: usize,
    /// The newest snapshot of a read-only summary forgotten for the budget: a pivot whose
    /// `T3` committed before it is refused (see the module documentation).
    forgotten_reader_seq: u64,
    /// The newest commit of a read-write summary forgotten for the budget: no one-shot
    /// request whose snapshot precedes it can be certified any more (no registered
    /// transaction's does: only summaries none of them needs are forgotten).
    forgotten_seq: u64,
}

impl Certifier {
    /// A certifier that keeps the summaries of the last `window_commits` commits for
    /// one-shot commit requests (see [`Self::admit_unregistered`]).
    /// Its summaries take at most `bytes_max` bytes (see the module documentation).
    pub(crate) fn with_window(window_commits: u64, bytes_max: usize) -> Self {
        Certifier {
            window_seq: window_commits.saturating_mul(2),
            bytes_max,
            ..Certifier::default()
        }
    }

    /// Bytes the retained summaries take, counted as the budget counts them.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The oldest snapshot (a commit-stream offset) a one-shot request may still be
    /// certified at: summaries of read-write commits before it were forgotten for the
    /// byte budget (0: none were).
    pub(crate) fn forgotten_to(&self) -> u64 {
        self.forgotten_seq.div_ceil(2)
    }

    /// Registers an open transaction starting at `start_seq`; returns its expiry flag.
    /// `needs_history`: its commit is certified against the commits after `start_seq`
    /// (see `needing`).
    pub(crate) fn register(
        &mut self,
        id: u64,
        start_seq: u64,
        serializable_rw: bool,
        needs_history: bool,
    ) -> Arc<AtomicBool> {
        let expired = Arc::new(AtomicBool::new(false));
        self.active.insert(
            (start_seq, id),
            Active {
                expired: expired.clone(),
                started: std::time::Instant::now(),
                serializable_rw,
            },
        );
        self.active_ids.insert(id, start_seq);
        if needs_history {
            self.needing.insert((start_seq, id));
            self.needing_ids.insert(id, start_seq);
        }
        expired
    }

    /// Marks the open transaction `id` as needing the commits after the newest position a
    /// read taken from now on can be based at (a `read_committed` transaction's first
    /// `get_for_update`, whose base is read right after this): no summary after that
    /// position is forgotten while it is open, and none after it was (only summaries up to
    /// `floor_seq` ever are). Nothing for an unknown or already marked transaction.
    pub(crate) fn need_history(&mut self, id: u64) {
        let Some(&start) = self.active_ids.get(&id) else {
            return;
        };
        if self.needing_ids.contains_key(&id) {
            return;
        }
        let from = start.max(self.floor_seq);
        self.needing.insert((from, id));
        self.needing_ids.insert(id, from);
    }

    /// Drops `id` from the transactions that need history.
    fn unneed(&mut self, id: u64) {
        if let Some(from) = self.needing_ids.remove(&id) {
            self.needing.remove(&(from, id));
        }
    }

    /// Open transactions.
    pub(crate) fn open(&self) -> usize {
        self.active.len()
    }

    /// Summaries of committed transactions retained.
    pub(crate) fn retained(&self) -> usize {
        self.recent.len() + self.readers.len()
    }

    /// The newest published safe snapshot position: the table must keep what a
    /// transaction beginning there can read.
    pub(crate) fn safe_seq(&self) -> u64 {
        self.safe_seq
    }

    /// Oldest start position of an open transaction.
    pub(crate) fn horizon_seq(&self) -> Option<u64> {
        self.active.keys().next().map(|(s, _)| *s)
    }

    /// Decides whether the transaction may commit at `commit_seq`. On success returns its
    /// earliest rw out-edge target and the key of that edge (the position is kept for
    /// [`Self::record`]).
    pub(crate) fn certify(
        &self,
        fp: &Footprint<'_>,
        commit_seq: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, Conflict> {
        let min_base = fp
            .writes
            .values()
            .filter_map(|(_, b)| *b)
            .chain(fp.serializable.then_some(fp.snapshot_seq))
            .min();
        let Some(min_base) = min_base else {
            return Ok(None);
        };
        let t_read_only = !fp.writes.values().any(|(c, _)| c.is_write());
        let first = self.recent.partition_point(|w| w.commit_seq <= min_base);
        let mut out_min: Option<(u64, Vec<u8>)> = None;
        let mut in_edges: Vec<(&Summary, Vec<u8>)> = Vec::new();
        // A concurrent commit wrote what this transaction read (its reads are stale at
        // commit), and one incremented a key this transaction increments.
        let mut stale_read = false;
        let mut observed_increment: Option<(Vec<u8>, u64)> = None;
        for w in self.recent.range(first..) {
            debug_assert!(w.commit_seq < commit_seq);
            // First committer wins.
            for (key, class) in &w.writes {
                if let Some((mine, Some(base))) = fp.writes.get(key)
                    && w.commit_seq > *base
                {
                    if mine.conflicts_with(*class) {
                        return Err(Conflict {
                            kind: ConflictKind::WriteWrite,
                            key: key.clone(),
                            other_seq: w.commit_seq,
                        });
                    }
                    observed_increment.get_or_insert((key.clone(), w.commit_seq));
                }
                if fp.snapshot_reads
                    && !stale_read
                    && w.commit_seq > fp.snapshot_seq
                    && class.is_write()
                    && (fp.reads.contains_key(key) || fp.ranges.iter().any(|r| in_range(r, key)))
                {
                    stale_read = true;
                }
            }
            if stale_read && let Some((key, other_seq)) = &observed_increment {
                return Err(Conflict {
                    kind: ConflictKind::StaleIncrement,
                    key: key.clone(),
                    other_seq: *other_seq,
                });
            }
            if !(fp.serializable && w.serializable && w.commit_seq > fp.snapshot_seq) {
                continue;
            }
            // T → W: W wrote what T read.
            if let Some(key) = w
                .writes
                .iter()
                .filter(|(_, c)| c.is_write())
                .map(|(k, _)| k)
                .find(|k| {
                    fp.reads.contains_key(k.as_slice()) || fp.ranges.iter().any(|r| in_range(r, k))
                })
            {
                // T as T1: W is T2 and already has an out-edge to an earlier T3.
                if let Some(t3) = w.out_min
                    && (!t_read_only || t3 < fp.snapshot_seq)
                {
                    return Err(Conflict {
                        kind: ConflictKind::DangerousStructure,
                        key: key.clone(),
                        other_seq: w.commit_seq,
                    });
                }
                if out_min.as_ref().is_none_or(|(s, _)| w.commit_seq < *s) {
                    out_min = Some((w.commit_seq, key.clone()));
                }
            }
            // R → T: R read what T writes.
            if let Some(key) = fp
                .writes
                .iter()
                .filter(|(_, (c, _))| c.is_write())
                .map(|(k, _)| k)
                .find(|k| w.read_covers(k))
            {
                in_edges.push((w, key.clone()));
            }
        }
        // R → T for the read-only R (which have no writes for the checks above).
        if fp.serializable && !t_read_only {
            let first = self.readers.partition_point(|r| r.commit_seq <= min_base);
            for r in self.readers.range(first..) {
                if r.commit_seq <= fp.snapshot_seq {
                    continue;
                }
                if let Some((key, _)) = fp
                    .writes
                    .iter()
                    .find(|(k, (c, _))| c.is_write() && r.read_covers(k))
                {
                    in_edges.push((r, key.clone()));
                }
            }
        }
        // T as the pivot T2: T1 = R committed, T3 = the earliest out-edge target, first.
        // T3 may be T1 itself (write skew is the cycle T1 → T2 → T1), hence `<=`.
        if let Some((t3, key)) = &out_min {
            // A forgotten reader with a snapshot after T3 may be T1: its reads are gone, so
            // assume it read what T writes (it is concurrent with T: its snapshot follows
            // T3, which follows T's snapshot).
            if !t_read_only && *t3 < self.forgotten_reader_seq {
                return Err(Conflict {
                    kind: ConflictKind::DangerousStructure,
                    key: key.clone(),
                    other_seq: *t3,
                });
            }
            for (r, key) in &in_edges {
                if *t3 <= r.commit_seq && (!r.read_only || *t3 < r.snapshot_seq) {
                    return Err(Conflict {
                        kind: ConflictKind::DangerousStructure,
                        key: key.clone(),
                        other_seq: r.commit_seq,
                    });
                }
            }
        }
        Ok(out_min)
    }

    /// The bytes the summary of a commit with these parts takes when it is kept, as
    /// [`Self::record`] keeps it (0: it is not kept).
    pub(crate) fn bytes_to_keep(
        &self,
        serializable: bool,
        writes: &HashMap<Vec<u8>, WriteClass>,
        reads: &ReadSet,
        ranges: &[Range],
    ) -> usize {
        let written = writes.iter().filter(|(_, c)| c.is_write());
        let read = serializable && (!reads.is_empty() || !ranges.is_empty());
        if !self.keeps(written.clone().next().is_some(), read) {
            return 0;
        }
        let none = ReadSet::new();
        let (reads, ranges) = if serializable {
            (reads, ranges)
        } else {
            (&none, &[][..])
        };
        footprint_bytes(written.map(|(k, _)| k), reads, ranges)
    }

    /// Whether a commit's summary is kept: it wrote, or read at `serializable` (`read`);
    /// and an open transaction or a one-shot request's snapshot may still need it.
    fn keeps(&self, wrote: bool, read: bool) -> bool {
        (wrote || read) && (!self.needing.is_empty() || self.window_seq > 0)
    }

    /// Makes room for the `needed` bytes of the summary a read-write commit of
    /// transaction `id` by `principal` leaves (see [`Self::bytes_to_keep`]), before it is
    /// appended: forgets that principal's forgettable summaries while it is over its share,
    /// then anyone's, oldest first, while the total is over the budget (see the module
    /// documentation). Summaries only `id` itself needs are forgettable: it is certified.
    ///
    /// # Errors
    /// [`NoRoom`] when the summaries open transactions need leave no room; nothing is
    /// forgotten that any of them needs.
    pub(crate) fn make_room(
        &mut self,
        id: u64,
        principal: &Principal,
        needed: usize,
    ) -> Result<(), NoRoom> {
        if self.bytes_max == 0 || needed == 0 {
            return Ok(());
        }
        let share = self.share(principal);
        let held = |c: &Certifier| c.held.get(principal).copied().unwrap_or(0);
        while held(self) + needed > share && self.forget_one(id, Some(principal)) {}
        // A principal holding nothing may always leave one summary: the share is a bound
        // on what it holds, not on one transaction (that is `FOOTPRINT_BYTES_MAX`).
        if held(self) > 0 && held(self) + needed > share {
            return Err(NoRoom::Share {
                held: held(self),
                share,
                needed,
            });
        }
        while self.bytes + needed > self.bytes_max && self.forget_one(id, None) {}
        if self.bytes + needed > self.bytes_max {
            return Err(NoRoom::Budget {
                held: self.bytes,
                max: self.bytes_max,
                needed,
            });
        }
        Ok(())
    }

    /// A principal's share of the budget: the budget divided by the principals holding
    /// summaries (counting `principal`) plus one, so one share is always free for a
    /// principal that holds none yet.
    fn share(&self, principal: &Principal) -> usize {
        let holders = self.held.len() + usize::from(!self.held.contains_key(principal));
        self.bytes_max / (holders + 1)
    }

    /// Forgets the oldest summary of `whose` (`None`: of anyone) that no open transaction
    /// but `id` needs: a read-only one first (folded), then a read-write one whose commit
    /// precedes the position of every other transaction that needs history (`needing`)
    /// and `floor_seq` (a transaction beginning now starts at or after it). Returns
    /// whether one was.
    fn forget_one(&mut self, id: u64, whose: Option<&Principal>) -> bool {
        let mine = |s: &Summary| whose.is_none_or(|p| s.principal == *p);
        if let Some(i) = self.readers.iter().position(mine) {
            if let Some(old) = self.readers.remove(i) {
                self.forgotten_reader_seq = self.forgotten_reader_seq.max(old.snapshot_seq);
                self.unhold(&old);
            }
            return true;
        }
        let horizon = self.needing.iter().find(|(_, other)| *other != id);
        let floor = self.floor_seq;
        let needed = |s: &Summary| {
            s.commit_seq > floor || horizon.is_some_and(|(from, _)| s.commit_seq > *from)
        };
        let Some(i) = self.recent.iter().take_while(|s| !needed(s)).position(mine) else {
            return false;
        };
        if let Some(old) = self.recent.remove(i) {
            self.forgotten_seq = self.forgotten_seq.max(old.commit_seq);
            self.unhold(&old);
        }
        true
    }

    /// Counts a summary kept.
    fn hold(&mut self, s: &Summary) {
        let bytes = s.bytes();
        self.bytes += bytes;
        *self.held.entry(s.principal.clone()).or_default() += bytes;
    }

    /// Counts a summary dropped or forgotten.
    fn unhold(&mut self, s: &Summary) {
        let bytes = s.bytes();
        self.bytes -= bytes;
        if let Some(held) = self.held.get_mut(&s.principal) {
            *held -= bytes;
            if *held == 0 {
                self.held.remove(&s.principal);
            }
        }
    }

    /// Records a committed transaction (after [`Self::certify`] accepted it, and for a
    /// read-write one [`Self::make_room`] made room for it) and unregisters it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one certified transaction, each moved in from its own source"
    )]
    pub(crate) fn record(
        &mut self,
        id: u64,
        principal: Principal,
        commit_seq: u64,
        snapshot_seq: u64,
        serializable: bool,
        writes: HashMap<Vec<u8>, WriteClass>,
        reads: ReadSet,
        ranges: Vec<Range>,
        out_min: Option<u64>,
        now_seq: u64,
    ) {
        if let Some(last) = self
            .recent
            .back()
            .into_iter()
            .chain(self.readers.back())
            .max_by_key(|s| s.commit_seq)
        {
            assert!(
                last.commit_seq <= commit_seq,
                "commits are certified in order"
            );
        }
        let read_only = !writes.values().any(|c| c.is_write());
        // A lock ends with its transaction (as a row lock in PostgreSQL): once committed it
        // conflicts with nobody, so only real writes are remembered.
        let mut writes = writes;
        writes.retain(|_, c| c.is_write());
        let read = serializable && (!reads.is_empty() || !ranges.is_empty());
        if self.keeps(!writes.is_empty(), read) {
            let summary = Summary {
                commit_seq,
                snapshot_seq,
                serializable,
                read_only,
                writes,
                reads: if serializable { reads } else { ReadSet::new() },
                ranges: if serializable { ranges } else { Vec::new() },
                out_min,
                principal,
            };
            if !read_only {
                self.hold(&summary);
                self.recent.push_back(summary);
            } else if self
                .make_room(id, &summary.principal, summary.bytes())
                .is_ok()
            {
                self.hold(&summary);
                self.readers.push_back(summary);
            } else {
                // No room: folded at once, as a reader forgotten later would be.
                self.forgotten_reader_seq = self.forgotten_reader_seq.max(snapshot_seq);
            }
        }
        debug_assert!(
            self.bytes_max == 0 || self.bytes <= self.bytes_max,
            "room was made before the summary was kept"
        );
        self.finish(id, now_seq, out_min);
    }

    /// Unregisters a transaction that ends without committing anything worth recording.
    /// `now_seq` is the current snapshot position (even).
    pub(crate) fn finish(&mut self, id: u64, now_seq: u64, out_min: Option<u64>) {
        // New transactions start at `now_seq` or later: summaries at or below it can only
        // matter to transactions open now.
        self.floor_seq = self.floor_seq.max(now_seq);
        if let Some(start) = self.active_ids.remove(&id) {
            self.active.remove(&(start, id));
        }
        self.unneed(id);
        if let Some(c) = &mut self.candidate
            && c.waiting.remove(&id)
        {
            if out_min.is_some_and(|u| u < c.seq) {
                c.unsafe_ = true;
            }
            if c.waiting.is_empty() {
                if !c.unsafe_ {
                    self.safe_seq = self.safe_seq.max(c.seq);
                }
                self.candidate = None;
            }
        }
        if self.candidate.is_none() {
            self.new_candidate(now_seq);
        }
        self.prune();
    }

    fn new_candidate(&mut self, now_seq: u64) {
        let waiting: HashSet<u64> = self
            .active
            .iter()
            .filter(|(_, a)| a.serializable_rw)
            .map(|((_, id), _)| *id)
            .collect();
        if waiting.is_empty() {
            self.safe_seq = self.safe_seq.max(now_seq);
        } else {
            self.candidate = Some(Candidate {
                seq: now_seq,
                waiting,
                unsafe_: false,
            });
        }
    }

    /// The newest snapshot position known to be safe for a read-only serializable
    /// transaction: no transaction concurrent with it can still complete a dangerous
    /// structure with it (Ports & Grittner 2012, §4.2). `now_seq` is the current position.
    pub(crate) fn safe_snapshot(&mut self, now_seq: u64) -> u64 {
        if self.candidate.is_none() {
            self.new_candidate(now_seq);
        }
        self.handed_safe_seq = self.handed_safe_seq.max(self.safe_seq);
        self.safe_seq
    }

    /// The extra check for a `serializable` read-write transaction that was never
    /// registered (a one-shot commit request), given its earliest rw out-edge `out` (the
    /// position of `T3` and the key), after [`Self::certify`] accepted it.
    ///
    /// Safe snapshots are published by waiting for the registered read-write transactions
    /// only; an unregistered one is unseen. It can still be the pivot of the read-only
    /// anomaly with a reader `R` at a safe snapshot `S`: `R` does not see it (it commits
    /// after `S`), and it has an out-edge to a `T3` committed before `S`. `R`'s reads are
    /// not tracked, so this is refused whenever such a reader can exist: one was handed a
    /// snapshot above `T3`, or the published one (above `T3`) may still be handed out
    /// because registered read-write transactions are open. A pending candidate above `T3`
    /// becomes unsafe. Without safe-snapshot readers it refuses nothing.
    pub(crate) fn admit_unregistered(&mut self, out: Option<(u64, &[u8])>) -> Result<(), Conflict> {
        let Some((t3, key)) = out else {
            return Ok(());
        };
        let published_reachable =
            self.candidate.is_some() || self.active.values().any(|a| a.serializable_rw);
        if t3 < self.handed_safe_seq || (published_reachable && t3 < self.safe_seq) {
            return Err(Conflict {
                kind: ConflictKind::DangerousStructure,
                key: key.to_vec(),
                other_seq: t3,
            });
        }
        if let Some(c) = &mut self.candidate
            && t3 < c.seq
        {
            c.unsafe_ = true;
        }
        Ok(())
    }

    /// Expires open transactions whose start is more than `max_behind` positions behind
    /// `now_seq`, and — when `age_max` is given — those open longer than it, so that memory
    /// stays bounded even when an idle transaction never calls again. Returns how many were
    /// expired. An expired transaction is treated as aborted.
    pub(crate) fn expire(
        &mut self,
        now_seq: u64,
        max_behind: u64,
        age_max: Option<std::time::Duration>,
    ) -> usize {
        let mut victims: Vec<(u64, u64)> = Vec::new();
        for &(start, id) in self.active.keys() {
            if now_seq.saturating_sub(start) <= max_behind {
                break;
            }
            victims.push((start, id));
        }
        if let Some(age_max) = age_max {
            let now = std::time::Instant::now();
            for (&key, a) in &self.active {
                if now.duration_since(a.started) > age_max && !victims.contains(&key) {
                    victims.push(key);
                }
            }
        }
        self.expire_these(&victims);
        victims.len()
    }

    /// Expires the open transactions `victims` (`(start, id)`).
    fn expire_these(&mut self, victims: &[(u64, u64)]) {
        for (start, id) in victims {
            if let Some(a) = self.active.remove(&(*start, *id)) {
                a.expired.store(true, Ordering::Release);
            }
            self.active_ids.remove(id);
            self.unneed(*id);
            if let Some(c) = &mut self.candidate {
                c.waiting.remove(id);
            }
        }
        // An expired transaction commits nothing: a candidate that waited only for it is
        // safe (unless already marked otherwise) and is published.
        if let Some(c) = &self.candidate
            && c.waiting.is_empty()
        {
            if !c.unsafe_ {
                self.safe_seq = self.safe_seq.max(c.seq);
            }
            self.candidate = None;
        }
        if !victims.is_empty() {
            self.prune();
        }
    }

    /// Drops the summaries nobody can be certified against any more: committed before the
    /// position of every open transaction that needs history, and before every snapshot a
    /// one-shot request may still name (the window, and past a forgotten summary).
    fn prune(&mut self) {
        let oldest_snapshot = self
            .floor_seq
            .saturating_sub(self.window_seq)
            .max(self.forgotten_seq);
        let horizon = self
            .needing
            .first()
            .map_or(oldest_snapshot, |(h, _)| (*h).min(oldest_snapshot));
        for readers in [false, true] {
            loop {
                let summaries = if readers {
                    &mut self.readers
                } else {
                    &mut self.recent
                };
                match summaries.front() {
                    Some(front) if front.commit_seq <= horizon => {}
                    _ => break,
                }
                if let Some(old) = summaries.pop_front() {
                    self.unhold(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[&str]) -> ReadSet {
        keys.iter().map(|k| (k.as_bytes().to_vec(), None)).collect()
    }
    fn writes(
        keys: &[&str],
        class: WriteClass,
        base: Option<u64>,
    ) -> HashMap<Vec<u8>, (WriteClass, Option<u64>)> {
        keys.iter()
            .map(|k| (k.as_bytes().to_vec(), (class, base)))
            .collect()
    }

    /// Why a test commit was refused.
    #[derive(Debug, PartialEq, Eq)]
    enum Refused {
        Conflict(Conflict),
        NoRoom(NoRoom),
    }

    /// Commits a transaction through certify + record; returns the conflict if refused.
    fn commit(
        c: &mut Certifier,
        id: u64,
        snapshot_seq: u64,
        commit_seq: u64,
        reads: &[&str],
        w: &[&str],
        class: WriteClass,
    ) -> Result<(), Conflict> {
        match commit_as(c, None, id, snapshot_seq, commit_seq, reads, w, class) {
            Ok(()) => Ok(()),
            Err(Refused::Conflict(conflict)) => Err(conflict),
            Err(Refused::NoRoom(no)) => panic!("no room: {no:?}"),
        }
    }

    /// [`commit`] by `principal`, as the store commits: certify, make room for a
    /// read-write summary, record.
    #[expect(clippy::too_many_arguments, reason = "a test's whole transaction")]
    fn commit_as(
        c: &mut Certifier,
        principal: Option<&str>,
        id: u64,
        snapshot_seq: u64,
        commit_seq: u64,
        reads: &[&str],
        w: &[&str],
        class: WriteClass,
    ) -> Result<(), Refused> {
        let principal: Principal = principal.map(str::to_string);
        let ws = writes(w, class, Some(snapshot_seq));
        let rs = set(reads);
        let fp = Footprint {
            serializable: true,
            snapshot_reads: true,
            snapshot_seq,
            writes: &ws,
            reads: &rs,
            ranges: &[],
        };
        let now_seq = (commit_seq + 1) & !1;
        let out_min = match c.certify(&fp, commit_seq) {
            Ok(out_min) => out_min.map(|(s, _)| s),
            Err(e) => {
                c.finish(id, commit_seq & !1, None);
                return Err(Refused::Conflict(e));
            }
        };
        let classes = ws.iter().map(|(k, (c, _))| (k.clone(), *c)).collect();
        if !w.is_empty() {
            let needed = c.bytes_to_keep(true, &classes, &rs, &[]);
            if let Err(no) = c.make_room(id, &principal, needed) {
                c.finish(id, commit_seq & !1, None);
                return Err(Refused::NoRoom(no));
            }
        }
        c.record(
            id,
            principal,
            commit_seq,
            snapshot_seq,
            true,
            classes,
            rs,
            vec![],
            out_min,
            now_seq,
        );
        Ok(())
    }

    /// The read-only anomaly (Fekete et al. 2004): R reads x and y after T3 wrote x; the
    /// pivot T2, which read x before T3 and writes y, must abort — also once R's summary
    /// was folded for the byte budget (into the forgotten readers' position).
    #[test]
    fn a_reader_forgotten_for_the_budget_still_refuses_the_read_only_anomaly() {
        // Room for T3 and the pivot, and a share (half) too small for T3 and the reader.
        let t3_bytes = footprint_bytes([b"x".to_vec()].iter(), &ReadSet::new(), &[]);
        for (budget, forgotten) in [(0, false), (4 * t3_bytes, true)] {
            let mut c = Certifier::with_window(0, budget);
            c.register(2, 0, true, true);
            commit(&mut c, 3, 0, 1, &[], &["x"], WriteClass::Write).unwrap();
            commit(&mut c, 4, 2, 2, &["x", "y"], &[], WriteClass::Write).unwrap();
            assert_eq!(c.forgotten_reader_seq > 0, forgotten, "budget {budget}");
            assert!(
                budget == 0 || c.bytes() <= budget,
                "{} > {budget}",
                c.bytes()
            );
            let e = commit(&mut c, 2, 0, 3, &["x"], &["y"], WriteClass::Write).unwrap_err();
            assert_eq!(e.kind, ConflictKind::DangerousStructure, "budget {budget}");
        }
        // Without the reader, the pivot commits.
        let mut c = Certifier::with_window(0, 4 * t3_bytes);
        c.register(2, 0, true, true);
        commit(&mut c, 3, 0, 1, &[], &["x"], WriteClass::Write).unwrap();
        commit(&mut c, 2, 0, 3, &["x"], &["y"], WriteClass::Write).unwrap();
    }

    /// Mallory's commit `id` of key `m/{id}` at the next position (`commit_seq`, advanced
    /// when it commits).
    fn flood(c: &mut Certifier, id: u64, commit_seq: &mut u64) -> Result<(), Refused> {
        let key = format!("m/{id}");
        let at = *commit_seq;
        commit_as(
            c,
            Some("mallory"),
            id,
            at - 1,
            at,
            &[],
            &[&key],
            WriteClass::Write,
        )?;
        *commit_seq += 2;
        Ok(())
    }

    /// One principal's commits that an open transaction needs fill only its share: its
    /// next one is refused, and another principal's open transaction is not expired and
    /// commits. Once that transaction ended, the first principal's history is forgotten
    /// for its own commits.
    #[test]
    fn a_principal_over_its_share_is_refused_and_anothers_open_transaction_commits() {
        let one = footprint_bytes([b"m/10".to_vec()].iter(), &ReadSet::new(), &[]);
        // Alone, mallory's share is half the budget: three summaries.
        let mut c = Certifier::with_window(0, 6 * one);
        let victim = c.register(1, 0, true, true);
        let mut at = 1;
        for id in 10..13 {
            flood(&mut c, id, &mut at).unwrap();
        }
        let refused = flood(&mut c, 13, &mut at).unwrap_err();
        let share = NoRoom::Share {
            held: 3 * one,
            share: 3 * one,
            needed: one,
        };
        assert_eq!(refused, Refused::NoRoom(share));
        assert!(!victim.load(Ordering::Acquire), "the victim is not expired");
        assert_eq!((c.bytes(), c.forgotten_to()), (3 * one, 0));
        let victim_commit = at;
        at += 2;
        let (r, w) = (["v/a"], ["v/a"]);
        commit_as(
            &mut c,
            Some("v"),
            1,
            0,
            victim_commit,
            &r,
            &w,
            WriteClass::Write,
        )
        .unwrap();
        // Nobody is open: mallory's history goes for its own commits (window 0: at once).
        for id in 14..20 {
            flood(&mut c, id, &mut at).unwrap();
        }
    }

    /// Shares shrink as principals begin holding summaries: when those that filled larger
    /// shares leave no room, a principal within its share is refused (`Budget`), and still
    /// nobody open is expired.
    #[test]
    fn a_full_budget_of_needed_history_refuses_a_commit_and_expires_nobody() {
        let one = footprint_bytes([b"m/10".to_vec()].iter(), &ReadSet::new(), &[]);
        let mut c = Certifier::with_window(0, 6 * one);
        let victim = c.register(1, 0, true, true);
        let mut at = 1;
        let mut put = |c: &mut Certifier, who: &str, id: u64| {
            let key = format!("{who}/{id}");
            let r = commit_as(
                c,
                Some(who),
                id,
                at - 1,
                at,
                &[],
                &[&key],
                WriteClass::Write,
            );
            at += 2;
            r
        };
        // Alone, `a` may hold half; beside it, `b` a third; then `c` holds nothing yet.
        for id in 10..13 {
            put(&mut c, "a", id).unwrap();
        }
        for id in 20..22 {
            put(&mut c, "b", id).unwrap();
        }
        put(&mut c, "c", 30).unwrap();
        let refused = put(&mut c, "d", 40).unwrap_err();
        let full = NoRoom::Budget {
            held: 6 * one,
            max: 6 * one,
            needed: one,
        };
        assert_eq!(refused, Refused::NoRoom(full));
        assert!(!victim.load(Ordering::Acquire), "nobody is expired");
        assert_eq!(c.bytes(), 6 * one);
    }

    /// Review r14d F1: open transactions whose commits are checked against no history (a
    /// `read_committed` one before its first `get_for_update`; the store registers a
    /// declared read-only one below `serializable`, or one at a safe snapshot, alike) pin
    /// none: another principal commits past its share. From its first `get_for_update`
    /// on, a `read_committed` transaction keeps the commits after that read, and one of
    /// them conflicts with its write.
    #[test]
    fn only_transactions_that_need_history_pin_it() {
        let one = footprint_bytes([b"m/10".to_vec()].iter(), &ReadSet::new(), &[]);
        let mut c = Certifier::with_window(0, 6 * one);
        let reader = c.register(1, 0, false, false);
        let writer = c.register(2, 0, false, false);
        let mut at = 1;
        for id in 10..20 {
            flood(&mut c, id, &mut at).unwrap();
        }
        assert_eq!(c.bytes(), 0, "nobody needs mallory's history");
        // The writer's `get_for_update`: its base is the snapshot now.
        c.need_history(2);
        let base = at - 1;
        for id in 20..23 {
            flood(&mut c, id, &mut at).unwrap();
        }
        let refused = flood(&mut c, 23, &mut at).unwrap_err();
        assert!(
            matches!(refused, Refused::NoRoom(NoRoom::Share { .. })),
            "{refused:?}"
        );
        let e = commit_as(
            &mut c,
            Some("rc"),
            2,
            base,
            at,
            &[],
            &["m/21"],
            WriteClass::Write,
        );
        match e {
            Err(Refused::Conflict(conflict)) => {
                assert_eq!(conflict.kind, ConflictKind::WriteWrite);
            }
            other => panic!("{other:?}"),
        }
        assert!(!reader.load(Ordering::Acquire) && !writer.load(Ordering::Acquire));
    }

    /// Summaries kept only for one-shot snapshots (no open transaction needs them) are
    /// forgotten, the committing principal's own first: it is never refused for them and
    /// holds at most its share.
    #[test]
    fn a_principals_history_no_transaction_needs_makes_room_for_its_commits() {
        let one = footprint_bytes([b"m/10".to_vec()].iter(), &ReadSet::new(), &[]);
        let mut c = Certifier::with_window(1_000, 6 * one);
        commit_as(
            &mut c,
            Some("a"),
            1,
            0,
            1,
            &[],
            &["a/00"],
            WriteClass::Write,
        )
        .unwrap();
        let mut at = 3;
        for id in 10..30 {
            flood(&mut c, id, &mut at).unwrap();
            assert!(c.bytes() <= 6 * one, "{} bytes", c.bytes());
        }
        // Mallory's forgotten commits refuse one-shot snapshots before them: alice's
        // summary went with the first (no snapshot it could be needed for may still be
        // named), and alone mallory's share is half the budget.
        let mallory = Some("mallory".to_string());
        assert_eq!(c.held.get(&mallory), Some(&(3 * one)));
        assert_eq!(c.held.get(&Some("a".to_string())), None);
        assert_eq!(
            c.forgotten_to(),
            18,
            "m/26, committed at offset 17, is forgotten"
        );
    }

    #[test]
    fn write_skew_aborts_the_second_committer() {
        let mut c = Certifier::default();
        c.register(1, 0, true, true);
        c.register(2, 0, true, true);
        // T1 reads x,y writes x; T2 reads x,y writes y: T1 → T2 and T2 → T1.
        commit(&mut c, 1, 0, 1, &["x", "y"], &["x"], WriteClass::Write).unwrap();
        let e = commit(&mut c, 2, 0, 3, &["x", "y"], &["y"], WriteClass::Write).unwrap_err();
        assert_eq!(e.kind, ConflictKind::DangerousStructure);
    }

    #[test]
    fn increments_commute_but_puts_do_not() {
        let mut c = Certifier::default();
        c.register(1, 0, false, true);
        c.register(2, 0, false, true);
        c.register(3, 0, false, true);
        commit(&mut c, 1, 0, 1, &[], &["n"], WriteClass::Increment).unwrap();
        commit(&mut c, 2, 0, 3, &[], &["n"], WriteClass::Increment).unwrap();
        let e = commit(&mut c, 3, 0, 5, &[], &["n"], WriteClass::Write).unwrap_err();
        assert_eq!(e.kind, ConflictKind::WriteWrite);
        assert!(
            e.other_seq == 1 || e.other_seq == 3,
            "names a conflicting increment"
        );
    }

    #[test]
    fn summaries_are_dropped_once_nobody_is_concurrent() {
        let mut c = Certifier::default();
        c.register(1, 0, true, true);
        c.register(2, 0, true, true);
        commit(&mut c, 1, 0, 1, &["a"], &["a"], WriteClass::Write).unwrap();
        assert_eq!(c.retained(), 1);
        commit(&mut c, 2, 0, 3, &["b"], &["b"], WriteClass::Write).unwrap();
        assert_eq!(c.retained(), 0, "no open transaction left");
    }

    #[test]
    fn expiry_unpins_the_horizon() {
        let mut c = Certifier::default();
        let old = c.register(1, 0, true, true);
        c.register(2, 10, true, true);
        assert_eq!(c.expire(100, 50, None), 2);
        assert!(old.load(Ordering::Acquire));
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn safe_snapshot_waits_for_concurrent_writers() {
        let mut c = Certifier::default();
        c.register(1, 0, true, true);
        assert_eq!(c.safe_snapshot(4), 0, "a serializable writer is open at 4");
        c.finish(1, 6, None);
        assert_eq!(c.safe_snapshot(6), 6);
    }

    #[test]
    fn unsafe_candidate_is_not_published() {
        let mut c = Certifier::default();
        c.register(1, 0, true, true);
        assert_eq!(c.safe_snapshot(4), 0);
        c.register(2, 4, true, true);
        // T1 commits with an rw out-edge to something committed before position 4.
        c.finish(1, 6, Some(3));
        // The unsafe candidate is dropped; a new one (at 6) waits for T2.
        assert_eq!(c.safe_snapshot(6), 0);
        c.finish(2, 8, None);
        assert_eq!(c.safe_snapshot(8), 8);
    }
}
