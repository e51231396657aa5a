//! What a test needs from the machine (a command, moto, root, a tmpfs), and the one place that
//! decides what happens when it is missing.
//!
//! * On a developer's machine the test prints one line, `skipped: <test>: needs <what>
//!   (<how to get it>)`, and passes. The line goes straight to the process's stderr, past the
//!   test harness's capture, so it shows in `cargo test` output even for a passing test.
//! * Under `CI=true` the same missing tool **fails** the test with that message:
//!   `scripts/test` installs everything the tests need, so a skip in CI means an install step
//!   is broken, and a green run must not hide it.
//!
//! Use: `if !require::openssl() { return; }`, `let Some(moto) = Moto::start() else { return };`
//! (which asks here), or [`missing`] after a probe of one's own. tests/support_signing.rs runs a
//! test binary with `PATH` emptied to prove both halves.
//!
//! This file has no dependencies, so test files that do not use the rest of `support` (and
//! the crate's unit tests) include it alone with `#[path = ".../support/require.rs"]`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The line every skip starts with (`scripts/test` greps for it under `CI=true`).
pub const SKIP_PREFIX: &str = "skipped: ";

/// True when the environment says this is CI (`CI=true`, as GitHub Actions, GitLab and most
/// CI systems set it; `CI=1` too).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_owned()
}

/// Records that `what` is missing: under `CI=true` panics (the test fails), otherwise prints
/// the skip line. Always returns false, so a probe can end with `|| missing(..)`.
#[track_caller]
pub fn missing(what: &str, how: &str) -> bool {
    let line = format!("{SKIP_PREFIX}{}: needs {what} ({how})", test_name());
    if ci() {
        panic!(
            "{line}\nCI=true: a test may not skip; scripts/test installs what the tests need, so \
             the install step for this one is broken"
        );
    }
    // Not `eprintln!`: the harness captures that for passing tests.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    false
}

/// True when `program args...` runs and exits 0 (checked each call; cache it if it is slow).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `program args...` runs (see [`runs`]); otherwise [`missing`] with `how`.
#[track_caller]
pub fn tool(program: &str, args: &[&str], how: &str) -> bool {
    runs(program, args) || missing(&format!("the {program} command"), how)
}

/// The `openssl` command (signs deployment specifications at test time).
#[track_caller]
pub fn openssl() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| runs("openssl", &["version"]))
        || missing("the openssl command", "apt-get install -y openssl")
}

/// `python3 -m moto.server` (the S3 tests' server).
#[track_caller]
pub fn moto() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| runs("python3", &["-c", "import moto.server"]))
        || missing(
            "moto (python3 -c 'import moto.server')",
            "python3 -m pip install 'moto[server]'; scripts/test does it",
        )
}

/// Running as root (ownership, tmpfs mounts, `runas` users).
#[track_caller]
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    euid == 0 || missing("root", "run the tests as root, as CI does")
}
