//! Agent logs: the AWS agent's line format (agent-behaviour.md §8.3),
//! `YYYY-MM-DD HH:MM:SS LEVEL [program(pid)]: message`, with tracing's structured fields
//! appended as `key=value`.
//!
//! One tracing layer ([`AgentLayer`]) feeds three sinks:
//! - the agent log file, rotated by size ([`RotatingFile`]: rename-based, so a crash at any
//!   point loses no line that was written);
//! - stderr, as text (default) or one JSON object per line (`--log-format json`);
//! - journald, through its native protocol (one datagram of `KEY=VALUE` fields per record to
//!   `/run/systemd/journal/socket`), when the agent runs under systemd. Records carry
//!   `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER` and the command context as `DEPLOYMENT_ID`,
//!   `LIFECYCLE_EVENT` and `HOST_COMMAND_ID`.
//!
//! Every message and field value goes through [`redact`] first, so a presigned URL or a token
//! that ends up in a message reaches no sink.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::deploy::hooks::local_timestamp;

/// The journald socket systemd provides.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Hidden override of the journald socket path (tests; `off` disables journald).
pub const JOURNAL_SOCKET_ENV: &str = "CODEDEPLOY_JOURNAL_SOCKET";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("Please make sure the path of the log directory exists and is writable: \"{}\" ({source})", dir.display())]
pub struct LoggingError {
    dir: PathBuf,
    #[source]
    source: io::Error,
}

/// What goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The agent log's line format.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, message, target and the fields.
    Json,
}

/// Size-based rotation: when the next record would take a file past `max_bytes`, the file is
/// renamed to `<name>.1` (`.1` to `.2`, ..., dropping the oldest beyond `keep`) and a new
/// one is started. `max_bytes == 0` never rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

/// How the daemon (or a local run) logs.
#[derive(Debug, Clone)]
pub struct LogOptions<'a> {
    pub log_dir: &'a Path,
    pub file_name: &'a str,
    pub program: &'a str,
    pub verbose: bool,
    /// Also log to stderr, in this format.
    pub console: Option<LogFormat>,
    pub rotation: Rotation,
    /// Send records to journald when running under systemd (or when
    /// `CODEDEPLOY_JOURNAL_SOCKET` names a socket).
    pub journal: bool,
    /// Also send hook output lines to journald.
    pub hook_output_to_journal: bool,
}

/// `CODEDEPLOY_LOG` (`debug`, or per target: `info,codedeploy_agent::daemon=trace`), else
/// `debug` when verbose and `info` otherwise. A `Targets` filter rather than `EnvFilter`: the
/// same directives minus span-field matching, without a regex engine in the binary (~250 KiB).
fn filter(verbose: bool) -> Targets {
    std::env::var("CODEDEPLOY_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            let level = if verbose {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            };
            Targets::new().with_default(level)
        })
}

/// Logs to `<log_dir>/<file_name>` (default rotation) and, when `also_stderr`, to stderr as
/// text. Safe to call more than once (later calls do nothing).
pub fn init(
    log_dir: &Path,
    file_name: &str,
    program: &str,
    verbose: bool,
    also_stderr: bool,
) -> Result<PathBuf, LoggingError> {
    init_with(&LogOptions {
        log_dir,
        file_name,
        program,
        verbose,
        console: also_stderr.then_some(LogFormat::Text),
        rotation: crate::config::DEFAULT_LOG_ROTATION,
        journal: false,
        hook_output_to_journal: false,
    })
}

/// Sets up logging as `options` say. Safe to call more than once (later calls do nothing).
pub fn init_with(options: &LogOptions<'_>) -> Result<PathBuf, LoggingError> {
    let err = |source| LoggingError {
        dir: options.log_dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(options.log_dir).map_err(err)?;
    let path = options.log_dir.join(options.file_name);
    let file = RotatingFile::open(&path, options.rotation).map_err(err)?;
    let journal = if options.journal {
        journal_socket().and_then(|socket| Journal::new(socket, options.program))
    } else {
        None
    };
    let mut console = options.console;
    if journal.is_some() && console == Some(LogFormat::Text) && stderr_is_journal() {
        // The same records would reach the journal twice: natively and as stderr lines.
        console = None;
    }
    if options.hook_output_to_journal
        && let Some(j) = &journal
    {
        let _ = HOOK_JOURNAL.set(j.clone());
    }
    let layer = AgentLayer {
        program: options.program.to_owned(),
        pid: std::process::id(),
        file: Some(Mutex::new(file)),
        console,
        journal,
    };
    let _ = tracing_subscriber::registry()
        .with(filter(options.verbose))
        .with(layer)
        .try_init();
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Redaction

/// Query parameters and header-like names whose values are secrets.
const SECRET_NAMES: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "awsaccesskeyid",
    "access_token",
    "token",
    "sig",
    "password",
    "secret",
    "client_secret",
];

/// Replaces the values of secret query parameters (`X-Amz-Signature=...`, `X-Amz-Credential`,
/// `X-Amz-Security-Token`, `Signature`, `access_token`, ...) and URL user-info passwords with
/// `REDACTED`. Text without them is returned as is.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    // Most records have neither a parameter nor a URL with user info: no allocation for them.
    if !text.contains('=') && !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let lower = text.to_ascii_lowercase();
    let has_param = SECRET_NAMES.iter().any(|n| {
        lower
            .match_indices(n)
            .any(|(at, _)| lower.as_bytes().get(at + n.len()) == Some(&b'='))
    });
    let has_userinfo = lower.contains("://") && text.contains('@');
    if !has_param && !has_userinfo {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // A parameter starts after `?`, `&`, `;`, whitespace, a quote or at the start.
        let at_boundary = i == 0
            || matches!(
                bytes[i - 1],
                b'?' | b'&' | b';' | b' ' | b'\t' | b'\n' | b'"' | b'\'' | b','
            );
        if at_boundary
            && let Some(name) = SECRET_NAMES.iter().find(|n| {
                lower[i..].starts_with(*n) && lower.as_bytes().get(i + n.len()) == Some(&b'=')
            })
        {
            let value_start = i + name.len() + 1;
            let value_end = text[value_start..]
                .find(|c: char| {
                    matches!(
                        c,
                        '&' | ' ' | '\t' | '\n' | '"' | '\'' | '#' | ',' | ')' | '>'
                    )
                })
                .map_or(text.len(), |e| value_start + e);
            out.push_str(&text[i..value_start]);
            out.push_str("REDACTED");
            i = value_end;
            continue;
        }
        // scheme://user:password@host: keep the user, hide the password.
        if text[i..].starts_with("://") {
            let rest = &text[i + 3..];
            let end = rest
                .find(['/', ' ', '\'', '"', '\n', '?', '#'])
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            if let Some(at) = authority.rfind('@') {
                let userinfo = &authority[..at];
                out.push_str("://");
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":REDACTED");
                    }
                    None => out.push_str("REDACTED"),
                }
                i += 3 + at;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    std::borrow::Cow::Owned(out)
}

// ---------------------------------------------------------------------------------------------
// Rotation

/// An append-only log file rotated by size. Cheap: the size is tracked in memory, and a
/// rotation is a few renames. Crash-safe: each rename is atomic and the live file is only
/// replaced by a new empty one after it was renamed, so no written line is ever lost.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    rotation: Rotation,
}

impl RotatingFile {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            written,
            rotation,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>.<n>`.
    pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Appends one record (whole: a record is never split across files). A rotation that
    /// fails (a rename refused) does not lose the record: it goes to the current file, and
    /// rotation is tried again once another `max_bytes` have been written.
    pub fn write_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = bytes.len() as u64;
        if self.rotation.max_bytes > 0
            && self.written > 0
            && self.written.saturating_add(len) > self.rotation.max_bytes
            && self.rotate().is_err()
        {
            self.written = 0;
        }
        self.file.write_all(bytes)?;
        self.written = self.written.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        // Another writer (a second process appending to the same log) may have rotated it
        // already: then only reopen.
        let same =
            fs::metadata(&self.path).is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev());
        if same {
            if self.rotation.keep == 0 {
                remove_if_present(&self.path)?;
            } else {
                for n in (1..self.rotation.keep).rev() {
                    rename_if_present(
                        &Self::rotated_path(&self.path, n),
                        &Self::rotated_path(&self.path, n + 1),
                    )?;
                }
                rename_if_present(&self.path, &Self::rotated_path(&self.path, 1))?;
            }
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = self.file.metadata()?.len();
        Ok(())
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// journald

/// Where journald listens, if the agent should use it: the `CODEDEPLOY_JOURNAL_SOCKET`
/// override (`off` disables), else the systemd socket when the process runs under systemd
/// (`JOURNAL_STREAM` or `INVOCATION_ID` set) and the socket exists.
pub fn journal_socket() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(JOURNAL_SOCKET_ENV).filter(|v| !v.is_empty()) {
        return (v != "off").then(|| PathBuf::from(v));
    }
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let socket = Path::new(JOURNAL_SOCKET);
    (under_systemd && socket.exists()).then(|| socket.to_path_buf())
}

/// True when stderr is the journal stream systemd connected (`JOURNAL_STREAM=<dev>:<ino>`).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let fd = std::os::fd::AsFd::as_fd(&io::stderr()).try_clone_to_owned();
    fd.ok()
        .map(File::from)
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.dev() == dev && m.ino() == ino)
}

/// A journald client speaking the native protocol.
#[derive(Debug, Clone)]
struct Journal {
    socket: std::sync::Arc<UnixDatagram>,
    path: PathBuf,
    identifier: String,
    /// Unix seconds until which nothing is sent, after a send timed out.
    suspended_until: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How long one send may wait for room in journald's queue. A journald that stops reading
/// must not stall the agent (every record, hook supervision and polling included).
const JOURNAL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// After a send timed out, records go to the file log only for this long.
const JOURNAL_SUSPEND_SECS: u64 = 30;

/// The largest MESSAGE sent; longer ones are cut (journald's datagram limit is larger, but a
/// log record this long is never useful whole).
const JOURNAL_MAX_MESSAGE: usize = 48 * 1024;

/// The hook-output forwarder, when `hook_output_to_journal` is on.
static HOOK_JOURNAL: OnceLock<Journal> = OnceLock::new();

impl Journal {
    /// `None` when no datagram socket can be made (then the file log is all there is).
    fn new(path: PathBuf, identifier: &str) -> Option<Self> {
        let socket = UnixDatagram::unbound().ok()?;
        socket.set_write_timeout(Some(JOURNAL_SEND_TIMEOUT)).ok()?;
        Some(Self {
            socket: std::sync::Arc::new(socket),
            path,
            identifier: identifier.to_owned(),
            suspended_until: std::sync::Arc::default(),
        })
    }

    /// Sends one record; failures are ignored (the file log still has it). A send that times
    /// out suspends sending for [`JOURNAL_SUSPEND_SECS`].
    fn send(&self, priority: u8, message: &str, fields: &[(String, String)]) {
        use std::sync::atomic::Ordering;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now < self.suspended_until.load(Ordering::Relaxed) {
            return;
        }
        let mut buf = Vec::with_capacity(message.len() + 256);
        let message = if message.len() > JOURNAL_MAX_MESSAGE {
            let mut end = JOURNAL_MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            &message[..end]
        } else {
            message
        };
        push_journal_field(&mut buf, "MESSAGE", message);
        push_journal_field(&mut buf, "PRIORITY", &priority.to_string());
        push_journal_field(&mut buf, "SYSLOG_IDENTIFIER", &self.identifier);
        for (key, value) in fields {
            push_journal_field(&mut buf, key, value);
        }
        if let Err(e) = self.socket.send_to(&buf, &self.path)
            && matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        {
            self.suspended_until
                .store(now + JOURNAL_SUSPEND_SECS, Ordering::Relaxed);
        }
    }
}

/// Appends `KEY=value\n`, or the binary form (`KEY\n<u64 LE length><value>\n`) when the value
/// has a newline.
fn push_journal_field(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// A journald field name for a tracing field: the three context fields get their documented
/// names, others are upper-cased with anything but `A-Z0-9_` turned into `_`.
fn journal_key(name: &str) -> Option<String> {
    let key = match name {
        "deployment_id" => "DEPLOYMENT_ID".to_owned(),
        "host_command_id" => "HOST_COMMAND_ID".to_owned(),
        "event" | "lifecycle_event" => "LIFECYCLE_EVENT".to_owned(),
        other => other
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect(),
    };
    // Names journald rejects or reserves.
    let trusted_or_ours = matches!(
        key.as_str(),
        "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "SYSLOG_PID"
    );
    (!key.is_empty()
        && !key.starts_with('_')
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.len() <= 64
        && !trusted_or_ours)
        .then_some(key)
}

/// The journald fields for a record's context: every field once (the innermost value wins),
/// and `LIFECYCLE_EVENT` from the command name when no hook event is set (the daemon's
/// commands are named after lifecycle events).
fn journal_fields(fields: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in fields {
        if let Some(key) = journal_key(name) {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value.clone(),
                None => out.push((key, value.clone())),
            }
        }
    }
    if !out.iter().any(|(k, _)| k == "LIFECYCLE_EVENT")
        && let Some((_, command)) = out.iter().find(|(k, _)| k == "COMMAND")
    {
        let command = command.clone();
        out.push(("LIFECYCLE_EVENT".into(), command));
    }
    out
}

/// Sends one hook output line to journald when `hook_output_to_journal` is on, with the
/// current span's context (deployment, lifecycle event, host command).
pub fn hook_output(stream: &str, line: &str) {
    let Some(journal) = HOOK_JOURNAL.get() else {
        return;
    };
    let mut fields = current_span_fields();
    fields.push(("hook_stream", stream.to_ascii_lowercase()));
    let fields = journal_fields(&fields);
    let line = redact(line.trim_end_matches('\n'));
    let priority = if stream.eq_ignore_ascii_case("stderr") {
        5
    } else {
        6
    };
    journal.send(priority, &line, &fields);
}

/// The fields of the current span and its parents, outermost first.
fn current_span_fields() -> Vec<(&'static str, String)> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let mut out = Vec::new();
            for s in span.scope().from_root() {
                if let Some(f) = s.extensions().get::<SpanFields>() {
                    out.extend(f.0.iter().cloned());
                }
            }
            Some(out)
        })
        .flatten()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The layer

/// A span's fields, rendered.
#[derive(Debug, Default)]
struct SpanFields(Vec<(&'static str, String)>);

struct Collect<'a> {
    message: Option<&'a mut String>,
    fields: &'a mut Vec<(&'static str, String)>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message"
            && let Some(m) = self.message.as_deref_mut()
        {
            *m = value;
            return;
        }
        match self.fields.iter_mut().find(|(n, _)| *n == field.name()) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field.name(), value)),
        }
    }
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

struct AgentLayer {
    program: String,
    pid: u32,
    file: Option<Mutex<RotatingFile>>,
    console: Option<LogFormat>,
    journal: Option<Journal>,
}

impl<S> Layer<S> for AgentLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Vec::new();
        attrs.record(&mut Collect {
            message: None,
            fields: &mut fields,
        });
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(f) = ext.get_mut::<SpanFields>() {
            values.record(&mut Collect {
                message: None,
                fields: &mut f.0,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut message = String::new();
        let mut own = Vec::new();
        event.record(&mut Collect {
            message: Some(&mut message),
            fields: &mut own,
        });
        let mut spans: Vec<Vec<(&'static str, String)>> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>()
                    && !f.0.is_empty()
                {
                    spans.push(f.0.clone());
                }
            }
        }
        let message = redact(&message).into_owned();
        let redact_all = |v: &mut Vec<(&'static str, String)>| {
            for (_, value) in v.iter_mut() {
                if let std::borrow::Cow::Owned(r) = redact(value) {
                    *value = r;
                }
            }
        };
        redact_all(&mut own);
        for s in &mut spans {
            redact_all(s);
        }
        let level = *event.metadata().level();

        if self.file.is_some() || self.console == Some(LogFormat::Text) {
            let line = self.text_line(level, &spans, &message, &own);
            if let Some(file) = &self.file {
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_record(line.as_bytes());
            }
            if self.console == Some(LogFormat::Text) {
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
        }
        if self.console != Some(LogFormat::Json) && self.journal.is_none() {
            return;
        }
        let all: Vec<(&'static str, String)> =
            spans.iter().flatten().chain(own.iter()).cloned().collect();
        if self.console == Some(LogFormat::Json) {
            let line = json_line(level, event.metadata().target(), &message, &all);
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(journal) = &self.journal {
            let priority = match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            journal.send(priority, &message, &journal_fields(&all));
        }
    }
}

impl AgentLayer {
    /// `'%d %-5l [%c(%p)]: %m\n'`, span context (`k=v ...: `) before the message, the event's
    /// own fields after it.
    fn text_line(
        &self,
        level: Level,
        spans: &[Vec<(&'static str, String)>],
        message: &str,
        own: &[(&'static str, String)],
    ) -> String {
        use fmt::Write as _;
        let (stamp, _) = local_timestamp();
        let level = match level {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN ",
            Level::INFO => "INFO ",
            Level::DEBUG | Level::TRACE => "DEBUG",
        };
        let mut line = format!("{stamp} {level} [{}({})]: ", self.program, self.pid);
        // A field an outer span already showed with the same value is not repeated (the
        // command's span and the executor's both carry the deployment id).
        let mut shown: Vec<(&str, &str)> = Vec::new();
        for span in spans {
            let rendered: Vec<String> = span
                .iter()
                .filter(|(k, v)| !shown.contains(&(*k, v.as_str())))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            shown.extend(span.iter().map(|(k, v)| (*k, v.as_str())));
            if !rendered.is_empty() {
                let _ = write!(line, "{}: ", rendered.join(" "));
            }
        }
        line.push_str(message);
        for (k, v) in own {
            let _ = write!(line, " {k}={v}");
        }
        line.push('\n');
        line
    }
}

/// One JSON object: `timestamp` (RFC 3339, UTC), `level`, `message`, `target`, then the
/// fields (span context first; the event's own fields win on a clash).
fn json_line(
    level: Level,
    target: &str,
    message: &str,
    fields: &[(&'static str, String)],
) -> String {
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), utc_timestamp(SystemTime::now()).into());
    object.insert("level".into(), level.as_str().into());
    object.insert("message".into(), message.into());
    object.insert("target".into(), target.into());
    for (k, v) in fields {
        if !matches!(*k, "timestamp" | "level" | "message" | "target") {
            object.insert((*k).to_owned(), v.clone().into());
        }
    }
    let mut line = serde_json::Value::Object(object).to_string();
    line.push('\n');
    line
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_query_values_and_passwords_are_redacted() {
        let url = "https://b.s3.amazonaws.com/k.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAXXX%2F20260101%2Fus-east-1&X-Amz-Signature=abcdef0123&X-Amz-Security-Token=FwoGZX&versionId=3";
        let r = redact(url);
        assert_eq!(
            r,
            "https://b.s3.amazonaws.com/k.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Security-Token=REDACTED&versionId=3"
        );
        assert_eq!(
            redact("location 'http://u:hunter2@proxy:3128/x' and access_token=ghp_1 end"),
            "location 'http://u:REDACTED@proxy:3128/x' and access_token=REDACTED end"
        );
        assert_eq!(redact("nothing to hide ü"), "nothing to hide ü");
        // Names that merely end like a secret name are left alone.
        assert_eq!(redact("mytoken=1 token=2"), "mytoken=1 token=REDACTED");
    }

    #[test]
    fn rotation_renames_and_keeps_the_configured_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 100,
                keep: 2,
            },
        )
        .expect("open");
        for i in 0..40 {
            f.write_record(format!("line {i:04} ..........\n").as_bytes())
                .expect("write");
        }
        let names: Vec<String> = {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["agent.log", "agent.log.1", "agent.log.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).expect("stat").len();
            assert!(len <= 100, "{name}: {len}");
        }
        let live = fs::read_to_string(&path).expect("read");
        assert!(live.ends_with("line 0039 ..........\n"), "{live}");
        let older = fs::read_to_string(dir.path().join("agent.log.1")).expect("read");
        // Whole records, in order, continuing into the live file.
        let last_old: u32 = older
            .lines()
            .last()
            .and_then(|l| l[5..9].parse().ok())
            .expect("number");
        let first_live: u32 = live
            .lines()
            .next()
            .and_then(|l| l[5..9].parse().ok())
            .expect("number");
        assert_eq!(last_old + 1, first_live);
    }

    #[test]
    fn keep_zero_truncates_and_max_zero_never_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 10,
                keep: 0,
            },
        )
        .expect("open");
        for _ in 0..5 {
            f.write_record(b"12345678\n").expect("write");
        }
        assert_eq!(fs::read_to_string(&path).expect("read"), "12345678\n");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);

        let path = dir.path().join("y.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 0,
                keep: 3,
            },
        )
        .expect("open");
        for _ in 0..5 {
            f.write_record(b"12345678\n").expect("write");
        }
        assert_eq!(fs::metadata(&path).expect("stat").len(), 45);
    }

    #[test]
    fn a_failed_rotation_does_not_lose_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("z.log");
        // `z.log.1` is a non-empty directory: renaming the live file onto it fails.
        fs::create_dir_all(dir.path().join("z.log.1/in-the-way")).expect("dir");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                max_bytes: 10,
                keep: 1,
            },
        )
        .expect("open");
        for n in 0..3 {
            f.write_record(format!("record {n}\n").as_bytes())
                .expect("written although rotation failed");
        }
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "record 0\nrecord 1\nrecord 2\n"
        );
    }

    #[test]
    fn journal_fields_are_named_and_binary_safe() {
        let fields = journal_fields(&[
            ("host_command_id", "hc-1".into()),
            ("command", "BeforeInstall".into()),
            ("deployment_id", "d-1".into()),
            ("_hidden", "x".into()),
            ("message", "no".into()),
        ]);
        assert_eq!(
            fields,
            vec![
                ("HOST_COMMAND_ID".to_owned(), "hc-1".to_owned()),
                ("COMMAND".into(), "BeforeInstall".into()),
                ("DEPLOYMENT_ID".into(), "d-1".into()),
                ("LIFECYCLE_EVENT".into(), "BeforeInstall".into()),
            ]
        );
        let mut buf = Vec::new();
        push_journal_field(&mut buf, "MESSAGE", "a\nb");
        assert_eq!(buf, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
    }

    #[test]
    fn text_lines_show_each_context_field_once() {
        let layer = AgentLayer {
            program: "codedeploy-agent".into(),
            pid: 7,
            file: None,
            console: None,
            journal: None,
        };
        let spans = vec![
            vec![
                ("host_command_id", "hc-1".to_owned()),
                ("command", "BeforeInstall".to_owned()),
                ("deployment_id", "d-1".to_owned()),
            ],
            vec![
                ("deployment_id", "d-1".to_owned()),
                ("command", "BeforeInstall".to_owned()),
            ],
            vec![
                ("event", "BeforeInstall".to_owned()),
                ("deployment_id", "d-1".to_owned()),
            ],
        ];
        let line = layer.text_line(Level::WARN, &spans, "hello", &[("error_code", "4".into())]);
        let (_, rest) = line.split_at(20);
        assert_eq!(
            rest,
            "WARN  [codedeploy-agent(7)]: host_command_id=hc-1 command=BeforeInstall deployment_id=d-1: event=BeforeInstall: hello error_code=4\n"
        );
    }

    #[test]
    fn utc_timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(utc_timestamp(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
