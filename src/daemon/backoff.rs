//! Backoff after errors and the shared throttle gate.
//!
//! Schedule after the n-th consecutive poll error (agent-behaviour.md §1.7), in seconds:
//! `floor(1.2675^n * 90 / 1.2675^10)` for n = 1..10, i.e. 10, 13, 17, 21, 27, 34, 44, 56, 71,
//! 90, then 90 for every further error; minus the time the failed call took. Each sleep gets up
//! to 20% random jitter on top, so a fleet that failed together does not retry together.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The AWS agent's error backoff for the `n`-th consecutive error (n ≥ 1, capped at 10).
pub fn error_backoff(n: u32) -> Duration {
    let n = n.clamp(1, 10);
    let secs = (1.2675f64.powi(n as i32) * (90.0 / 1.2675f64.powi(10))).floor();
    Duration::from_secs(secs as u64)
}

/// A random fraction in [0, 1) from the OS, for jitter (quality does not matter here).
pub fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b = u64::from(nanos).to_le_bytes();
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `base` plus up to `fraction` of it, at random.
pub fn with_jitter(base: Duration, fraction: f64) -> Duration {
    base + base.mul_f64(fraction * random_fraction())
}

/// One gate for every call to the service: when any call is throttled, all calls wait until
/// the gate opens, and each further throttle in a row doubles the wait (capped).
#[derive(Debug, Default)]
pub struct ThrottleGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    closed_until: Option<Instant>,
    consecutive: u32,
}

/// First wait after a throttle; doubles per consecutive throttle up to [`THROTTLE_MAX`].
pub const THROTTLE_BASE: Duration = Duration::from_secs(5);
pub const THROTTLE_MAX: Duration = Duration::from_secs(120);

impl ThrottleGate {
    /// How long a caller must wait before calling the service (zero when open).
    pub fn wait_time(&self, now: Instant) -> Duration {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .closed_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// Records a throttled call; returns how long the gate is now closed.
    pub fn throttled(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.consecutive = state.consecutive.saturating_add(1);
        let exp = state.consecutive.saturating_sub(1).min(10);
        let wait = with_jitter((THROTTLE_BASE * 2u32.pow(exp)).min(THROTTLE_MAX), 0.2);
        let until = now + wait;
        state.closed_until = Some(state.closed_until.map_or(until, |u| u.max(until)));
        wait
    }

    /// Records a call the service accepted.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.consecutive = 0;
    }

    /// Waits until the gate is open.
    pub async fn pass(&self) {
        loop {
            let wait = self.wait_time(Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_schedule() {
        let secs: Vec<u64> = (1..=12).map(|n| error_backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 13, 17, 21, 27, 34, 44, 56, 71, 90, 90, 90]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_secs(10), 0.2);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }

    #[test]
    fn random_fractions_are_in_range_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_fraction()).collect();
        assert!(draws.iter().all(|f| (0.0..1.0).contains(f)), "{draws:?}");
        let distinct: std::collections::BTreeSet<u64> = draws.iter().map(|f| f.to_bits()).collect();
        assert!(distinct.len() > 32, "random, not constant: {draws:?}");
        // So jitter spreads a fleet: not every retry waits the same.
        let waits: std::collections::BTreeSet<Duration> = (0..32)
            .map(|_| with_jitter(Duration::from_secs(10), 0.2))
            .collect();
        assert!(waits.len() > 16, "{waits:?}");
    }

    #[tokio::test]
    async fn pass_waits_while_the_gate_is_closed() {
        let gate = ThrottleGate::default();
        let open = tokio::time::timeout(Duration::from_millis(500), gate.pass()).await;
        assert!(open.is_ok(), "an open gate lets the call through at once");
        gate.throttled(Instant::now());
        let closed = tokio::time::timeout(Duration::from_millis(100), gate.pass()).await;
        assert!(closed.is_err(), "a closed gate holds the call");
    }

    #[test]
    fn the_gate_closes_on_throttling_and_grows() {
        let gate = ThrottleGate::default();
        let now = Instant::now();
        assert_eq!(gate.wait_time(now), Duration::ZERO);
        let first = gate.throttled(now);
        assert!(first >= THROTTLE_BASE && first <= THROTTLE_BASE.mul_f64(1.2));
        let second = gate.throttled(now);
        assert!(second >= THROTTLE_BASE * 2, "{second:?}");
        assert!(gate.wait_time(now) >= second);
        gate.succeeded();
        let again = gate.throttled(now);
        assert!(again <= THROTTLE_BASE.mul_f64(1.2), "reset after success");
    }
}
