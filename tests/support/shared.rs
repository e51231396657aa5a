//! The state a fake server shares with its connection threads: a mutex, a condvar that wakes
//! sleepers when the state changes, and the stop flag they check.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A fake's state knows whether the fake is stopping.
pub trait Stopping {
    fn stopping(&self) -> bool;
}

pub struct Shared<S> {
    pub state: Mutex<S>,
    pub changed: Condvar,
}

impl<S: Stopping> Shared<S> {
    pub fn new(state: S) -> Self {
        Self {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// The state, also after a panicking holder poisoned the lock.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps up to `d`, waking early when the fake stops. Returns false if stopping.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut state = self.lock();
        loop {
            if state.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
