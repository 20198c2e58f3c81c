//! Logbook's log (stub while being written).
pub mod storage;
pub mod sim;
