//! A test-only checkpoint for the crash-consistency tests (`tests/crash_consistency.rs`): lets a
//! test stop the agent at an exact point inside a step (in the middle of unpacking, after N
//! installed files) so it can SIGKILL it there.
//!
//! With `CODEDEPLOY_AGENT_TEST_PAUSE_AT=<point>[:<n>]` in the environment, the `n`-th (default
//! first) call of [`test_pause_point`] for `<point>` creates the file named by
//! `CODEDEPLOY_AGENT_TEST_PAUSE_MARKER` (if set) and then sleeps for good, holding the thread
//! where it is. Without the variable (always, outside tests) a call is one check of a cached
//! `None`. The points are `unpack-entry` (before each archive record is unpacked),
//! `install-file` (before each file Install copies) and `prepare-locked` (prepare-image, once
//! it holds the pid lock), and the `command_state` transitions `state-running`,
//! `state-finished`, `state-accepting` and `state-idle`. `CODEDEPLOY_AGENT_TEST_SLOW_AT=
//! <point>:<ms>` instead makes every call of a point take `ms` longer (the cancellation tests).
//!
//! [`test_panic_point`] is its sibling for the panic-isolation tests: with
//! `CODEDEPLOY_AGENT_TEST_PANIC_AT=<point>[:<deployment id>]` it panics at that point.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Target {
    point: String,
    nth: usize,
    calls: AtomicUsize,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var("CODEDEPLOY_AGENT_TEST_PAUSE_AT").ok()?;
            let (point, nth) = match value.split_once(':') {
                Some((p, n)) => (p.to_owned(), n.parse().ok()?),
                None => (value, 1),
            };
            Some(Target {
                point,
                nth,
                calls: AtomicUsize::new(0),
            })
        })
        .as_ref()
}

/// `CODEDEPLOY_AGENT_TEST_SLOW_AT=<point>:<ms>`: every call of that point takes `ms` longer
/// (a large bundle, without the bytes), the first one dropping the marker.
struct Slow {
    point: String,
    delay: Duration,
    marked: std::sync::atomic::AtomicBool,
}

fn slow() -> Option<&'static Slow> {
    static SLOW: OnceLock<Option<Slow>> = OnceLock::new();
    SLOW.get_or_init(|| {
        let value = std::env::var("CODEDEPLOY_AGENT_TEST_SLOW_AT").ok()?;
        let (point, ms) = value.split_once(':')?;
        Some(Slow {
            point: point.to_owned(),
            delay: Duration::from_millis(ms.parse().ok()?),
            marked: std::sync::atomic::AtomicBool::new(false),
        })
    })
    .as_ref()
}

/// Pauses here for good when the test environment variable names this `point` and call
/// (or slows every call down, with `CODEDEPLOY_AGENT_TEST_SLOW_AT`).
pub fn test_pause_point(point: &str) {
    if let Some(s) = slow()
        && s.point == point
    {
        if !s.marked.swap(true, Ordering::SeqCst)
            && let Some(marker) = std::env::var_os("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER")
        {
            let _ = std::fs::write(marker, point);
        }
        std::thread::sleep(s.delay);
    }
    let Some(t) = target() else { return };
    if t.point != point || t.calls.fetch_add(1, Ordering::SeqCst) + 1 != t.nth {
        return;
    }
    tracing::warn!(
        point,
        nth = t.nth,
        "test pause point reached; sleeping until killed"
    );
    if let Some(marker) = std::env::var_os("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER") {
        let _ = std::fs::write(marker, point);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The point named by `CODEDEPLOY_AGENT_TEST_PANIC_AT=<point>[:<deployment id>]`.
struct PanicTarget {
    point: String,
    deployment_id: Option<String>,
}

fn panic_target() -> Option<&'static PanicTarget> {
    static TARGET: OnceLock<Option<PanicTarget>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let value = std::env::var("CODEDEPLOY_AGENT_TEST_PANIC_AT").ok()?;
            Some(match value.split_once(':') {
                Some((p, d)) => PanicTarget {
                    point: p.to_owned(),
                    deployment_id: Some(d.to_owned()),
                },
                None => PanicTarget {
                    point: value,
                    deployment_id: None,
                },
            })
        })
        .as_ref()
}

/// Panics here when `CODEDEPLOY_AGENT_TEST_PANIC_AT` names this `point` (and, if it names one,
/// this `deployment_id`): the release-build test of "a panic becomes a failed command, not a
/// dead agent" (`tests/daemon_e2e.rs`). Inert without the variable. The points are `execute`
/// (the start of a command, with its deployment id) and `install-copy` (a copy worker thread,
/// before it copies a file).
pub fn test_panic_point(point: &str, deployment_id: Option<&str>) {
    let Some(t) = panic_target() else { return };
    if t.point != point {
        return;
    }
    if let Some(want) = &t.deployment_id
        && deployment_id != Some(want.as_str())
    {
        return;
    }
    panic!("test panic point {point} reached (CODEDEPLOY_AGENT_TEST_PANIC_AT)");
}
