//! The terminal output of every command. `println!` panics when stdout is a closed pipe
//! (`codedeploy-agent plan … | head -1`), which aborted the binary with exit 134; every line a
//! command prints goes through [`outln!`]/[`out!`] (stdout) or [`errln!`] (stderr) instead.
//!
//! A closed stream is the end of that stream's output, as for `ls | head`: the first write that
//! fails with `EPIPE` (or any other error) marks the stream closed, later writes are dropped,
//! and the command carries on to its own end and exit code. A local deployment is therefore
//! never cut off halfway by its reader going away, and the daemon never dies because its
//! stderr was closed. Rust ignores `SIGPIPE`, so a closed pipe is an error here, never a signal.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout and flushes; after the first failed write nothing more is written.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|()| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes to stderr; after the first failed write nothing more is written.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    if STDERR_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut err = std::io::stderr().lock();
    if err.write_fmt(args).and_then(|()| err.flush()).is_err() {
        STDERR_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// True once a write to stdout has failed (its reader went away).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `print!` that treats a closed stdout as the end of output instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that treats a closed stdout as the end of output instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that treats a closed stderr as the end of output instead of panicking.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
