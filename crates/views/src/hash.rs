//! A fast hasher for the processors' in-memory maps of state keys.
//!
//! The standard SipHash showed up at ~3% of a processor's time (profile in
//! `docs/benchmarks.md`, "Views"). Keys are short byte strings, so one-shot xxh3 per write is
//! much cheaper. The seed is drawn from the standard library's per-process random keys, so
//! record contents cannot be chosen to collide; it affects only where entries sit in memory,
//! never a view's state (commits are written in key order).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Builds [`KeyHasher`]s with a per-map random seed.
#[derive(Debug, Clone)]
pub struct KeyHash {
    seed: u64,
}

impl Default for KeyHash {
    fn default() -> Self {
        KeyHash {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// xxh3 over each written slice, chained through the seed.
#[derive(Debug, Clone)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by state keys.
pub type KeyMap<V> = std::collections::HashMap<Vec<u8>, V, KeyHash>;
