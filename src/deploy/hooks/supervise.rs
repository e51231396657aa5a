//! One script process from spawn to reaping: output capture (files by default, pipes in the
//! AWS-compatible mode), the deadline, TERM then KILL of the process group.
//!
//! Everything after a successful spawn is infallible from the caller's point of view: whatever
//! happens to the output, the child is always waited for, so no zombie is left behind.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::scripts_log::{EventLog, LineSplitter, Stream};

/// Read buffer size; also the most read from one stream per loop turn, so the loop keeps
/// checking the child and the deadline while a script floods its output.
const CHUNK: usize = 64 * 1024;
/// The longest idle wait between two looks at the output files and the child.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);
const MIN_IDLE_WAIT: Duration = Duration::from_millis(1);

/// One output file of a script: the handle the script writes through (it becomes its stdout or
/// stderr) and a handle we read new bytes from, positioned where this run's output starts.
#[derive(Debug)]
pub(crate) struct OutputFile {
    pub(crate) writer: File,
    pub(crate) reader: File,
    pub(crate) start: u64,
    /// Keep at most about this many bytes of the file on disk (0: no cap): older output is
    /// punched out (the file keeps its length; the punched range reads as zeros).
    pub(crate) keep: u64,
}

/// How the script's output is captured.
#[derive(Debug)]
pub(crate) enum Capture {
    /// Files that we tail. A background child keeping them open does not hold the event.
    Files {
        stdout: OutputFile,
        stderr: OutputFile,
    },
    /// Pipes, as AWS does: the event waits for both to close (up to the deadline).
    Pipes,
}

/// How a supervised script ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(ExitStatus),
    /// The deadline passed before the script exited. `killed` is true when the group had to be
    /// KILLed after the grace period.
    TimedOut {
        killed: bool,
    },
    /// The script exited but this stream was still open at the deadline (pipes only).
    OutputsLeftOpen(Stream),
}

/// Spawns `cmd` (which must already be set up with its own process group) and supervises it.
/// Returns `Err` only when the spawn itself fails.
pub(crate) fn run(
    mut cmd: Command,
    capture: Capture,
    deadline: Option<Instant>,
    kill_grace: Duration,
    log: &mut EventLog,
    location: &str,
    running: Option<&super::RunningHooks>,
) -> io::Result<Outcome> {
    let mut readers = match capture {
        Capture::Files { stdout, stderr } => {
            cmd.stdout(Stdio::from(stdout.writer))
                .stderr(Stdio::from(stderr.writer));
            Readers::Files([
                FileTail::new(stdout.reader, stdout.start, stdout.keep, Stream::Stdout),
                FileTail::new(stderr.reader, stderr.start, stderr.keep, Stream::Stderr),
            ])
        }
        Capture::Pipes => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            Readers::Pipes(None, None)
        }
    };
    let mut child = cmd.spawn()?;
    // The parent's copies of the output files' write ends are not needed any more.
    drop(cmd);
    if let Readers::Pipes(out, err) = &mut readers {
        *out = child
            .stdout
            .take()
            .map(|p| PipeReader::new(Pipe::Out(p), Stream::Stdout));
        *err = child
            .stderr
            .take()
            .map(|p| PipeReader::new(Pipe::Err(p), Stream::Stderr));
    }
    let pid = i32::try_from(child.id()).expect("Linux pids fit in pid_t (PID_MAX_LIMIT is 2^22)");
    if let Some(running) = running {
        running.add(pid);
    }
    let mut sup = Supervisor {
        child,
        pgid: Pid::from_raw(pid),
        exit: None,
        readers,
        buf: vec![0; CHUNK],
    };
    let outcome = sup.supervise(deadline, kill_grace, log, location);
    if let Some(running) = running {
        running.remove(pid);
    }
    Ok(outcome)
}

struct Supervisor {
    child: Child,
    /// The script's process group (its own pid: it was spawned with `process_group(0)`).
    pgid: Pid,
    exit: Option<ExitStatus>,
    readers: Readers,
    buf: Vec<u8>,
}

impl Supervisor {
    fn supervise(
        &mut self,
        deadline: Option<Instant>,
        kill_grace: Duration,
        log: &mut EventLog,
        location: &str,
    ) -> Outcome {
        let mut idle = MIN_IDLE_WAIT;
        loop {
            let wait = match deadline {
                Some(d) => idle.min(d.saturating_duration_since(Instant::now())),
                None => idle,
            };
            let progressed = self.readers.pump(&mut self.buf, log, wait);
            self.poll_exit();
            if let Some(status) = self.exit {
                match &self.readers {
                    Readers::Files(_) => {
                        // Done as soon as the script exits: whatever a background child writes
                        // later stays in the output files.
                        self.readers.drain(&mut self.buf, log);
                        return Outcome::Exited(status);
                    }
                    Readers::Pipes(None, None) => return Outcome::Exited(status),
                    Readers::Pipes(..) => {}
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return match self.exit {
                    None => self.time_out(kill_grace, log, location),
                    Some(_) => {
                        let stream = self.readers.first_open().unwrap_or(Stream::Stdout);
                        self.readers.drain(&mut self.buf, log);
                        Outcome::OutputsLeftOpen(stream)
                    }
                };
            }
            idle = if progressed {
                MIN_IDLE_WAIT
            } else {
                (idle * 2).min(MAX_IDLE_WAIT)
            };
        }
    }

    /// Reaps the script if it has exited.
    fn poll_exit(&mut self) {
        if self.exit.is_some() {
            return;
        }
        match self.child.try_wait() {
            Ok(status) => self.exit = status,
            Err(error) => {
                // waitpid on our own child cannot fail short of a kernel bug; make sure it is
                // gone and stop waiting for it.
                tracing::error!(%error, pid = self.child.id(), "cannot poll the hook script's status; killing it");
                let _ = self.child.kill();
                if let Ok(status) = self.child.wait() {
                    self.exit = Some(status);
                }
            }
        }
    }

    /// TERM the group, give it `kill_grace` to go away, then KILL what remains.
    fn time_out(&mut self, kill_grace: Duration, log: &mut EventLog, location: &str) -> Outcome {
        tracing::info!("Script at specified location: {location} timed out");
        self.signal(Signal::SIGTERM);
        let grace_end = Instant::now().checked_add(kill_grace);
        let mut killed = false;
        loop {
            self.readers.pump(&mut self.buf, log, MIN_IDLE_WAIT * 10);
            self.poll_exit();
            if self.exit.is_some() && !group_alive(self.pgid) {
                break;
            }
            if grace_end.is_some_and(|end| Instant::now() >= end) {
                tracing::warn!(
                    pgid = self.pgid.as_raw(),
                    grace = ?kill_grace,
                    "Script at specified location: {location} still running after TERM; sending KILL"
                );
                self.signal(Signal::SIGKILL);
                killed = true;
                break;
            }
        }
        if self.exit.is_none() {
            match self.child.wait() {
                Ok(status) => self.exit = Some(status),
                Err(error) => tracing::error!(%error, "cannot reap the hook script"),
            }
        }
        self.readers.drain(&mut self.buf, log);
        Outcome::TimedOut { killed }
    }

    /// Sends `signal` to the script's process group, and to the script itself if it is not
    /// reaped yet (it may have left the group).
    fn signal(&self, signal: Signal) {
        if let Err(error) = killpg(self.pgid, signal)
            && error != Errno::ESRCH
        {
            tracing::warn!(%error, pgid = self.pgid.as_raw(), ?signal, "cannot signal the hook's process group");
        }
        if self.exit.is_none() {
            let _ = kill(self.pgid, signal);
        }
    }
}

/// True while any process is left in the group.
fn group_alive(pgid: Pid) -> bool {
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

enum Readers {
    Files([FileTail; 2]),
    /// Each `None` once its pipe has reached end of file.
    Pipes(Option<PipeReader>, Option<PipeReader>),
}

impl Readers {
    /// Moves new output into the log, waiting up to `wait` when there is none. Returns true
    /// if anything was read.
    fn pump(&mut self, buf: &mut [u8], log: &mut EventLog, wait: Duration) -> bool {
        match self {
            Readers::Files(tails) => {
                let mut progressed = false;
                for tail in tails.iter_mut() {
                    progressed |= tail.read_new(buf, log, None);
                }
                if !progressed && !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                progressed
            }
            Readers::Pipes(out, err) => {
                if out.is_none() && err.is_none() {
                    std::thread::sleep(wait);
                    return false;
                }
                {
                    let mut fds: Vec<PollFd<'_>> = [out.as_ref(), err.as_ref()]
                        .into_iter()
                        .flatten()
                        .map(|r| PollFd::new(r.pipe.as_fd(), PollFlags::POLLIN))
                        .collect();
                    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
                    if let Err(error) = poll(&mut fds, timeout)
                        && error != Errno::EINTR
                    {
                        tracing::warn!(%error, "poll on hook output failed");
                        std::thread::sleep(wait);
                    }
                }
                let mut progressed = false;
                for slot in [out, err] {
                    if let Some(reader) = slot {
                        let (read, open) = reader.read_available(buf, log);
                        progressed |= read;
                        if !open {
                            *slot = None;
                        }
                    }
                }
                progressed
            }
        }
    }

    /// A last read of what is already there, then the unfinished last lines (after both
    /// streams are read, so an unterminated stdout line does not swallow stderr's lines).
    fn drain(&mut self, buf: &mut [u8], log: &mut EventLog) {
        match self {
            Readers::Files(tails) => {
                for tail in tails.iter_mut() {
                    // Only up to the current end: a background child may keep writing forever.
                    let end = tail.file.metadata().map(|m| m.len()).unwrap_or(0);
                    while tail.pos < end && tail.read_new(buf, log, Some(end)) {}
                }
                for tail in tails.iter_mut() {
                    tail.finish(log);
                }
            }
            Readers::Pipes(out, err) => {
                for reader in [&mut *out, &mut *err].into_iter().flatten() {
                    // Bounded: a writer that never stops cannot keep us here.
                    for _ in 0..16 {
                        let (read, open) = reader.read_available(buf, log);
                        if !read || !open {
                            break;
                        }
                    }
                }
                for reader in [out, err].into_iter().flatten() {
                    reader.finish(log);
                }
            }
        }
    }

    fn first_open(&self) -> Option<Stream> {
        match self {
            Readers::Files(_) => None,
            Readers::Pipes(out, err) => out.as_ref().or(err.as_ref()).map(|r| r.stream),
        }
    }
}

struct FileTail {
    file: File,
    pos: u64,
    stream: Stream,
    splitter: LineSplitter,
    failed: bool,
    /// The disk cap (0: none) and how far the file has been punched out.
    keep: u64,
    punched: u64,
}

/// Holes are punched in whole pages.
const PAGE: u64 = 4096;

impl FileTail {
    fn new(file: File, start: u64, keep: u64, stream: Stream) -> Self {
        Self {
            file,
            pos: start,
            stream,
            splitter: LineSplitter::default(),
            failed: false,
            keep,
            punched: 0,
        }
    }

    /// Keeps the file's disk use near `keep` bytes however fast the script writes: once more
    /// than a quarter over the cap, everything before the last `keep` bytes is punched out
    /// (`FALLOC_FL_PUNCH_HOLE`). Output punched before it was read is skipped in scripts.log
    /// with a note saying how much.
    fn bound(&mut self, log: &mut EventLog) {
        if self.keep == 0 {
            return;
        }
        let Ok(end) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        if end <= self.punched + self.keep + self.keep / 4 {
            return;
        }
        let upto = (end - self.keep) / PAGE * PAGE;
        if upto <= self.punched {
            return;
        }
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(self.punched),
            libc::off_t::try_from(upto - self.punched),
        ) else {
            return;
        };
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc != 0 {
            let error = io::Error::last_os_error();
            tracing::warn!(%error, stream = self.stream.name(), "cannot punch old hook output out of its file; its size is not capped");
            self.keep = 0;
            return;
        }
        self.punched = upto;
        if self.pos < upto {
            let stream = self.stream;
            self.splitter.finish(&mut |piece| log.output(stream, piece));
            log.entry(format!(
                "[{}]... {} bytes of output not kept (over scripts_log_max_size) ...\n",
                stream.name().to_ascii_lowercase(),
                upto - self.pos
            ));
            self.pos = upto;
        }
    }

    /// Reads what was appended since the last call (at most `CHUNK` bytes, and never past
    /// `end`). Returns true if anything was read.
    fn read_new(&mut self, buf: &mut [u8], log: &mut EventLog, end: Option<u64>) -> bool {
        use std::os::unix::fs::FileExt;
        if self.failed {
            return false;
        }
        self.bound(log);
        let want = match end {
            Some(end) => usize::try_from(end.saturating_sub(self.pos))
                .unwrap_or(usize::MAX)
                .min(buf.len()),
            None => buf.len(),
        };
        match self.file.read_at(&mut buf[..want], self.pos) {
            Ok(0) => false,
            Ok(n) => {
                self.pos += n as u64;
                let stream = self.stream;
                self.splitter
                    .feed(&buf[..n], &mut |piece| log.output(stream, piece));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(error) => {
                tracing::warn!(%error, stream = self.stream.name(), "cannot read hook output file; no more of it goes to scripts.log");
                self.failed = true;
                false
            }
        }
    }

    fn finish(&mut self, log: &mut EventLog) {
        let stream = self.stream;
        self.splitter.finish(&mut |piece| log.output(stream, piece));
    }
}

enum Pipe {
    Out(ChildStdout),
    Err(ChildStderr),
}

impl Pipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Pipe::Out(p) => p.as_fd(),
            Pipe::Err(p) => p.as_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Pipe::Out(p) => p.read(buf),
            Pipe::Err(p) => p.read(buf),
        }
    }
}

struct PipeReader {
    pipe: Pipe,
    stream: Stream,
    splitter: LineSplitter,
}

impl PipeReader {
    fn new(pipe: Pipe, stream: Stream) -> Self {
        if let Err(error) = fcntl(pipe.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)) {
            // A blocking pipe would still work after poll said it is readable; only the
            // bounded drain could then block. Not expected to happen.
            tracing::warn!(%error, "cannot make the hook output pipe non-blocking");
        }
        Self {
            pipe,
            stream,
            splitter: LineSplitter::default(),
        }
    }

    /// Reads one chunk if available. Returns (read anything, still open).
    fn read_available(&mut self, buf: &mut [u8], log: &mut EventLog) -> (bool, bool) {
        loop {
            return match self.pipe.read(buf) {
                Ok(0) => {
                    self.finish(log);
                    (false, false)
                }
                Ok(n) => {
                    let stream = self.stream;
                    self.splitter
                        .feed(&buf[..n], &mut |piece| log.output(stream, piece));
                    (true, true)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => (false, true),
                Err(error) => {
                    tracing::warn!(%error, stream = self.stream.name(), "cannot read hook output pipe; treating it as closed");
                    self.finish(log);
                    (false, false)
                }
            };
        }
    }

    fn finish(&mut self, log: &mut EventLog) {
        let stream = self.stream;
        self.splitter.finish(&mut |piece| log.output(stream, piece));
    }
}
