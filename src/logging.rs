//! Agent logs: the AWS agent's line format (agent-behaviour.md §8.3),
//! `YYYY-MM-DD HH:MM:SS LEVEL [program(pid)]: message`, with tracing's structured fields
//! appended as `key=value`, to the agent log file and to stderr.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::deploy::hooks::local_timestamp;

/// The AWS line layout `'%d %-5l [%c(%p)]: %m\n'`.
#[derive(Debug, Clone)]
pub struct AwsFormat {
    pub program: String,
    pub pid: u32,
}

impl<S, N> FormatEvent<S, N> for AwsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (stamp, _) = local_timestamp();
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN ",
            Level::INFO => "INFO ",
            Level::DEBUG | Level::TRACE => "DEBUG",
        };
        write!(writer, "{stamp} {level} [{}({})]: ", self.program, self.pid)?;
        // Span context (deployment id, command) first, then the event's own fields.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span
                    .extensions()
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{}: ", fields)?;
                }
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("Please make sure the path of the log directory exists and is writable: \"{}\" ({source})", dir.display())]
pub struct LoggingError {
    dir: PathBuf,
    #[source]
    source: io::Error,
}

fn filter(verbose: bool) -> EnvFilter {
    EnvFilter::try_from_env("CODEDEPLOY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if verbose { "debug" } else { "info" }))
}

/// Logs to `<log_dir>/<file_name>` and, when `also_stderr`, to stderr. Safe to call more than
/// once (later calls do nothing).
pub fn init(
    log_dir: &Path,
    file_name: &str,
    program: &str,
    verbose: bool,
    also_stderr: bool,
) -> Result<PathBuf, LoggingError> {
    let err = |source| LoggingError {
        dir: log_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(log_dir).map_err(err)?;
    let path = log_dir.join(file_name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(err)?;
    let format = AwsFormat {
        program: program.to_owned(),
        pid: std::process::id(),
    };
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(format.clone())
        .with_writer(Mutex::new(file));
    let stderr_layer = also_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(format)
            .with_writer(io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter(verbose))
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(path)
}
