//! The daemon: poll loop, backoff and the throttle gate, in-flight tracking, crash recovery,
//! graceful shutdown.

pub mod tracking;
