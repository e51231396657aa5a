//! Where hook entries go: `<deployment dir>/logs/scripts.log`, the optional deployments log and
//! the in-memory diagnostic tail (agent-behaviour.md §5.8, §8.3). Also the byte-level helpers
//! that turn a script's output into entries: line splitting with a cap, ANSI stripping.

use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::HookError;
use super::tail::Tail;
use crate::logging::{RotatingFile, Rotation};

/// The longest output line written as one entry. Longer lines are split into pieces of this
/// size, each ending with a newline, so memory stays bounded whatever the script prints.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "STDOUT",
            Stream::Stderr => "STDERR",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Stream::Stdout => "[stdout]",
            Stream::Stderr => "[stderr]",
        }
    }
}

/// A piece of output handed out by [`LineSplitter`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A whole line, ending with `\n`.
    Line(&'a [u8]),
    /// The first [`MAX_LINE`] bytes of a longer line; more of it follows.
    Split(&'a [u8]),
    /// The stream ended with this, without a newline.
    Final(&'a [u8]),
}

/// Splits a byte stream into lines, holding at most [`MAX_LINE`] bytes of an unfinished line.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Piece<'_>)) {
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &data[..data.len().min(room)];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                if self.pending.is_empty() {
                    emit(Piece::Line(&data[..=i]));
                } else {
                    self.pending.extend_from_slice(&data[..=i]);
                    emit(Piece::Line(&self.pending));
                    self.pending.clear();
                }
                data = &data[i + 1..];
            } else if data.len() < room {
                self.pending.extend_from_slice(data);
                return;
            } else {
                self.pending.extend_from_slice(window);
                emit(Piece::Split(&self.pending));
                self.pending.clear();
                data = &data[room..];
            }
        }
    }

    /// Hands out what is left of an unfinished last line.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(Piece<'_>)) {
        if !self.pending.is_empty() {
            emit(Piece::Final(&self.pending));
            self.pending.clear();
        }
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, OSC/DCS/SOS/PM/APC strings ended by BEL
/// or `ESC \`, and two-byte `ESC x` sequences). A newline always survives, so an unterminated
/// sequence cannot swallow the line break that keeps scripts.log one entry per line.
pub(crate) fn strip_ansi(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&0x1b) {
        return Cow::Borrowed(input);
    }
    #[derive(Clone, Copy)]
    enum State {
        Text,
        Esc,
        EscIntermediate,
        Csi,
        Str,
        StrEsc,
    }
    let mut out = Vec::with_capacity(input.len());
    let mut state = State::Text;
    for &b in input {
        state = match (state, b) {
            (_, b'\n') => {
                out.push(b);
                State::Text
            }
            (State::Text, 0x1b) => State::Esc,
            (State::Text, _) => {
                out.push(b);
                State::Text
            }
            (State::Esc, b'[') => State::Csi,
            (State::Esc, b']' | b'P' | b'X' | b'^' | b'_') => State::Str,
            (State::Esc | State::EscIntermediate, 0x20..=0x2f) => State::EscIntermediate,
            (State::Esc | State::EscIntermediate, _) => State::Text,
            (State::Csi, 0x20..=0x3f) => State::Csi,
            (State::Csi, _) => State::Text,
            (State::Str, 0x07) => State::Text,
            (State::Str, 0x1b) => State::StrEsc,
            (State::Str, _) => State::Str,
            (State::StrEsc, b'\\') => State::Text,
            (State::StrEsc, _) => State::Str,
        };
    }
    Cow::Owned(out)
}

/// Local time as `YYYY-MM-DD HH:MM:SS` and the milliseconds, via `localtime_r`.
#[cfg_attr(
    target_env = "musl",
    expect(
        deprecated,
        reason = "the libc crate marks musl's time_t deprecated ahead of its 64-bit change; \
                  it is 64-bit on every target we build"
    )
)]
pub(crate) fn local_timestamp() -> (String, u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(libc::time_t::MAX);
    // SAFETY: `tm` is plain data; zeroed is a valid value and localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and keeps no reference to them.
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        // Only for dates the C library cannot represent; fall back to UTC.
        // SAFETY: as above.
        unsafe { libc::gmtime_r(&secs, &mut tm) };
    }
    (
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        now.subsec_millis(),
    )
}

/// Ruby's `String#strip`: ASCII whitespace and NUL at both ends.
fn ruby_strip(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\0'))
}

/// One event's log sinks. Write failures do not interrupt a running script: the first one is
/// kept and reported once the script has finished.
pub(crate) struct EventLog {
    scripts_log: RotatingFile,
    scripts_log_path: PathBuf,
    deployments_log: Option<(RotatingFile, PathBuf)>,
    deployment_id: String,
    tail: Tail,
    write_error: Option<HookError>,
}

impl EventLog {
    /// Opens `<deployment_dir>/logs/scripts.log` for appending (creating it and its parents)
    /// and, if given, the deployments log, both rotated by size as `rotation` says. A
    /// deployments log that cannot be opened is only warned about: it is a secondary copy.
    pub(crate) fn open(
        deployment_dir: &Path,
        deployments_log: Option<&Path>,
        deployment_id: &str,
        rotation: Rotation,
    ) -> Result<Self, HookError> {
        let logs = deployment_dir.join("logs");
        fs::create_dir_all(&logs).map_err(|source| HookError::Io {
            action: "create the log directory",
            path: logs.clone(),
            source,
        })?;
        let scripts_log_path = logs.join("scripts.log");
        let scripts_log =
            RotatingFile::open(&scripts_log_path, rotation).map_err(|source| HookError::Io {
                action: "open",
                path: scripts_log_path.clone(),
                source,
            })?;
        let deployments_log = deployments_log.and_then(|path| match open_rotating(path, rotation) {
            Ok(file) => Some((file, path.to_owned())),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot open the deployments log; hook output goes to scripts.log only");
                None
            }
        });
        Ok(Self {
            scripts_log,
            scripts_log_path,
            deployments_log,
            deployment_id: deployment_id.to_owned(),
            tail: Tail::default(),
            write_error: None,
        })
    }

    /// Records one entry: timestamped in scripts.log (flushed), in the deployments log, and in
    /// the tail.
    pub(crate) fn entry(&mut self, entry: String) {
        let (stamp, millis) = local_timestamp();
        let result = self
            .scripts_log
            .write_record(format!("{stamp} {entry}").as_bytes());
        if let Err(source) = result {
            self.note_error("write to", self.scripts_log_path.clone(), source);
        }
        if let Some((file, path)) = &mut self.deployments_log {
            let line = format!(
                "[{stamp}.{millis:03}] [{}]{}\n",
                self.deployment_id,
                ruby_strip(&entry)
            );
            if let Err(source) = file.write_record(line.as_bytes()) {
                let path = path.clone();
                self.note_error("write to", path, source);
            }
        }
        self.tail.push(entry);
    }

    /// Records a piece of script output as a `[stdout]`/`[stderr]` entry, ANSI stripped.
    pub(crate) fn output(&mut self, stream: Stream, piece: Piece<'_>) {
        let (bytes, newline) = match piece {
            Piece::Line(b) | Piece::Final(b) => (b, false),
            Piece::Split(b) => (b, true),
        };
        let text = strip_ansi(bytes);
        let mut entry = String::with_capacity(text.len() + 9);
        entry.push_str(stream.prefix());
        let text = String::from_utf8_lossy(&text);
        crate::logging::hook_output(stream.name(), &text);
        entry.push_str(&text);
        if newline {
            entry.push('\n');
        }
        self.entry(entry);
    }

    fn note_error(&mut self, action: &'static str, path: PathBuf, source: io::Error) {
        if self.write_error.is_none() {
            tracing::error!(path = %path.display(), error = %source, "cannot write hook log");
            self.write_error = Some(HookError::Io {
                action,
                path,
                source,
            });
        }
    }

    /// The first write failure since the last call, if any.
    pub(crate) fn take_error(&mut self) -> Option<HookError> {
        self.write_error.take()
    }

    /// The diagnostic tail as AWS would send it.
    pub(crate) fn tail(&self) -> String {
        self.tail.joined()
    }
}

fn open_rotating(path: &Path, rotation: Rotation) -> io::Result<RotatingFile> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    RotatingFile::open(path, rotation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        let mut emit = |p: Piece<'_>| {
            out.push(match p {
                Piece::Line(b) => ("line".to_owned(), b.to_vec()),
                Piece::Split(b) => ("split".to_owned(), b.to_vec()),
                Piece::Final(b) => ("final".to_owned(), b.to_vec()),
            })
        };
        for c in chunks {
            s.feed(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_are_split_across_chunks_and_keep_newlines() {
        let got = split(&[b"ab", b"c\nd\n", b"ef"]);
        assert_eq!(
            got,
            vec![
                ("line".to_owned(), b"abc\n".to_vec()),
                ("line".to_owned(), b"d\n".to_vec()),
                ("final".to_owned(), b"ef".to_vec()),
            ]
        );
    }

    #[test]
    fn a_long_line_is_cut_into_bounded_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut data = long.clone();
        data.push(b'\n');
        let got = split(&[&data[..100], &data[100..]]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "split");
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert_eq!(got[1].0, "split");
        assert_eq!(got[2], ("line".to_owned(), b"xxxxxxxxxx\n".to_vec()));
    }

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(
            &*strip_ansi(b"\x1b[1;31mred\x1b[0m plain\n"),
            b"red plain\n"
        );
        assert_eq!(
            &*strip_ansi(b"\x1b]0;title\x07a\x1b]8;;http://x\x1b\\b\x1b(Bc"),
            b"abc"
        );
        assert_eq!(&*strip_ansi(b"\x1b[31\n"), b"\n");
        assert_eq!(&*strip_ansi(b"no escapes"), b"no escapes");
    }

    #[test]
    fn ruby_strip_matches_ruby() {
        assert_eq!(ruby_strip("\t Script - a b \n\0"), "Script - a b");
    }

    #[test]
    fn timestamps_have_the_scripts_log_shape() {
        let (stamp, millis) = local_timestamp();
        assert_eq!(stamp.len(), 19, "{stamp}");
        assert_eq!(&stamp[4..5], "-");
        assert_eq!(&stamp[10..11], " ");
        assert!(millis < 1000);
    }
}
