//! Cooperative cancellation of engine work: the daemon's escalated stop (a second SIGTERM)
//! calls [`request`]; the engine's long loops call [`check`] between units of work (each
//! archive entry while unpacking, each file while installing, each entry while cleaning up
//! the previous install) and stop with [`Cancelled`], so the stop ends within seconds instead
//! of waiting for a large unpack or copy to finish. Hooks are stopped by signals, not by this.
//!
//! One flag per process: the daemon runs one engine, and a stop stops all of it. Local mode
//! never requests cancellation.

use std::sync::atomic::{AtomicBool, Ordering};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// The engine was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent is stopping: the command was interrupted")]
pub struct Cancelled;

/// Asks every running engine loop to stop at its next check.
pub fn request() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// True once [`request`] was called.
pub fn requested() -> bool {
    CANCELLED.load(Ordering::Relaxed)
}

/// `Err(Cancelled)` once [`request`] was called.
pub fn check() -> Result<(), Cancelled> {
    if requested() { Err(Cancelled) } else { Ok(()) }
}
