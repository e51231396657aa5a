//! `codedeploy-agent prepare-image`: removes what ties an installed agent to this one machine
//! before an image (AMI) is taken, so instances launched from the image start clean.
//!
//! Removed: what the agent created in the deployment root (deployment group directories with
//! bundles, deployment archives and scripts.log files, deployment instructions, the
//! deployments log, in-flight tracking files and owed `.result` files; anything else there is
//! left and listed as kept), the pid, lock and status files, and the agent's own logs (rotated ones
//! included). The agent keeps no identity or credentials on disk (IMDS tokens and
//! credentials live in memory only), so there is nothing of that kind to remove. Never
//! removed: the agent configuration file, the on-premises configuration and the credentials
//! file it names (operator-owned), the binary and the systemd unit. The unit is left enabled.
//!
//! Refused while the daemon runs (its pid lock is held; ours is held for the whole cleanup so
//! the daemon cannot start half-way) and while the tracking directory shows a command that
//! has not finished or a result the service has not accepted (`--force` discards those).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::config::Config;
use crate::daemon::tracking::STALE_AFTER;
use crate::deploy::layout::DeploymentRoot;

/// Options of `codedeploy-agent prepare-image`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub config: crate::daemon::start::ConfigArg,
    /// List what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also discard an unfinished command's tracking file or a result the service has not
    /// accepted yet (the service will time that command out).
    #[arg(long)]
    pub force: bool,
}

/// Why the image cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "The CodeDeploy agent is running{pid} (it holds {lock}). Stop it first with \
         `systemctl stop codedeploy-agent` (it stays enabled and starts on instances launched \
         from the image), then run prepare-image again."
    )]
    DaemonRunning { pid: String, lock: String },
    #[error(
        "A command is in flight: {what}. Wait until the agent has finished and reported it \
         (`codedeploy-agent status` shows what it is doing), stop the agent, then run \
         prepare-image again; or pass --force to discard it (the deployment will time out on \
         the service side)."
    )]
    InFlight { what: String },
    #[error(
        "Refusing to empty the deployment root {}: it is not a dedicated directory. Set \
         :root_dir: in {} to the agent's own directory (default \
         /opt/codedeploy-agent/deployment-root).",
        root.display(), config.display()
    )]
    UnsafeRoot { root: PathBuf, config: PathBuf },
    #[error("Could not {action} {}: {source}. Fix the permissions (run as root) and run prepare-image again.", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PrepareError + use<> {
    let path = path.to_owned();
    move |source| PrepareError::Io {
        action,
        path,
        source,
    }
}

/// What prepare-image did (or would do).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Paths removed (or to remove), in order.
    pub removed: Vec<PathBuf>,
    /// Operator-owned files that were left alone, with why.
    pub kept: Vec<(PathBuf, &'static str)>,
    /// Things the operator should know.
    pub notes: Vec<String>,
}

/// The pid lock, held while we clean up.
struct Held {
    _file: fs::File,
    /// The lock file when we created it (removed again at the end, not reported).
    created: Option<PathBuf>,
}

/// Takes the daemon's pid lock, so a daemon starting while we work stops at once ("Could not
/// acquire lock"). The lock file is created when missing (a daemon that never ran on this
/// machine left none, and one starting now would otherwise run beside the cleanup), except
/// in a dry run, which changes nothing.
fn take_pid_lock(config: &Config, dry_run: bool) -> Result<Option<Held>, PrepareError> {
    let lock_path = config
        .pid_dir
        .join(format!("{}.pid.lock", config.program_name));
    let open = || OpenOptions::new().write(true).open(&lock_path);
    let (file, created) = match open() {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound && dry_run => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&config.pid_dir)
                .map_err(io_err("create the pid directory", &config.pid_dir))?;
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_path)
            {
                Ok(f) => (f, true),
                // A daemon starting right now made it first.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                    open().map_err(io_err("open the pid lock", &lock_path))?,
                    false,
                ),
                Err(e) => return Err(io_err("create the pid lock", &lock_path)(e)),
            }
        }
        Err(e) => return Err(io_err("open the pid lock", &lock_path)(e)),
    };
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let pid = fs::read_to_string(config.pid_dir.join(format!("{}.pid", config.program_name)))
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .map(|p| format!(" as PID {p}"))
            .unwrap_or_default();
        return Err(PrepareError::DaemonRunning {
            pid,
            lock: lock_path.display().to_string(),
        });
    }
    Ok(Some(Held {
        _file: file,
        created: created.then_some(lock_path),
    }))
}

/// Unfinished commands and unreported results in the tracking directory, read-only (stale
/// files, older than a day, and empty ones do not count: the agent itself ignores them).
fn in_flight(tracking: &Path) -> Result<Vec<String>, PrepareError> {
    let entries = match fs::read_dir(tracking) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read the tracking directory", tracking)(e)),
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read the tracking directory", tracking))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".result") {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if modified.is_some_and(|m| now.duration_since(m).unwrap_or_default() > STALE_AFTER) {
            continue;
        }
        let command = fs::read_to_string(entry.path()).unwrap_or_default();
        let command = command.trim();
        if command.is_empty() {
            // The agent drops these too: no command to report on.
            continue;
        }
        if tracking.join(format!("{name}.result")).exists() {
            out.push(format!(
                "deployment {name} (host command {command}) finished but its result was not \
                 yet accepted by the service"
            ));
        } else {
            out.push(format!(
                "deployment {name} (host command {command}) has not finished"
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Files in `dir` named `name` or `name.<n>` (rotated copies), and for `<stem>.log` also the
/// AWS agent's dated rolls `<stem>.<YYYYMMDD>.log`.
fn log_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let dated = |n: &str| {
        name.strip_suffix(".log")
            .and_then(|stem| n.strip_prefix(stem))
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".log"))
            .is_some_and(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n == name
                || dated(&n)
                || n.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|num| !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Whether `entry` (directly in the deployment root) is something the agent creates there:
/// `deployment-instructions/`, `deployment-logs/`, or a deployment group's directory (a real
/// directory holding only deployment directories, `d-...`). An operator who pointed
/// `root_dir` at a shared directory keeps everything else in it.
fn agent_created(root: &DeploymentRoot, entry: &Path) -> bool {
    if *entry == root.instructions_dir() || *entry == root.deployment_logs_dir() {
        return true;
    }
    let is_real_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !is_real_dir(entry) {
        return false;
    }
    let Ok(children) = fs::read_dir(entry) else {
        return false;
    };
    let mut any = false;
    for child in children {
        let Ok(child) = child else { return false };
        let deployment =
            child.file_name().to_string_lossy().starts_with("d-") && is_real_dir(&child.path());
        if !deployment {
            return false;
        }
        any = true;
    }
    any
}

fn unsafe_root(root: &Path) -> bool {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    root.parent().is_none()
        || home.is_some_and(|h| fs::canonicalize(&h).unwrap_or(h) == root)
        || [
            "/usr", "/etc", "/var", "/opt", "/home", "/root", "/tmp", "/bin", "/boot", "/srv",
        ]
        .iter()
        .any(|p| root == Path::new(p))
}

/// Prepares (or, with `dry_run`, lists) the cleanup for `config`.
pub fn prepare(config: &Config, dry_run: bool, force: bool) -> Result<Outcome, PrepareError> {
    let config_path = config.path.clone().unwrap_or_default();
    if unsafe_root(&config.root_dir) {
        return Err(PrepareError::UnsafeRoot {
            root: config.root_dir.clone(),
            config: config_path,
        });
    }
    let lock = take_pid_lock(config, dry_run)?;
    let created_lock = lock.as_ref().and_then(|l| l.created.as_deref());
    crate::test_pause::test_pause_point("prepare-locked");
    let root = DeploymentRoot::new(&config.root_dir, &config.program_name);
    let tracking = root.ongoing_dir(&config.ongoing_deployment_tracking);
    let flying = in_flight(&tracking)?;
    if !flying.is_empty() && !force {
        return Err(PrepareError::InFlight {
            what: flying.join("; "),
        });
    }

    let mut outcome = Outcome::default();
    // What the agent created in the deployment root, the tracking directory last but one, so
    // an interrupted run still refuses next time if a command was in it. Anything else there
    // is not ours and stays.
    let mut targets = Vec::new();
    match fs::read_dir(root.root()) {
        Ok(entries) => {
            let mut entries: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| *p != tracking)
                .collect();
            entries.sort();
            for entry in entries {
                if agent_created(&root, &entry) {
                    targets.push(entry);
                } else {
                    outcome
                        .kept
                        .push((entry, "not created by the agent (left alone)"));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read the deployment root", root.root())(e)),
    }
    if fs::symlink_metadata(&tracking).is_ok() {
        targets.push(tracking.clone());
    }
    // The status and pid files (the lock file last: we hold it until the end), and what a
    // status rewrite cut off by a crash left (`.<program>.status.json.tmp.<pid>`).
    let status_tmp = format!(".{}.status.json.tmp.", config.program_name);
    if let Ok(entries) = fs::read_dir(&config.pid_dir) {
        let mut leftovers: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix(&status_tmp)
                    .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|e| e.path())
            .collect();
        leftovers.sort();
        targets.extend(leftovers);
    }
    for name in [
        format!("{}.status.json", config.program_name),
        format!("{}.pid", config.program_name),
        format!("{}.pid.lock", config.program_name),
    ] {
        let p = config.pid_dir.join(name);
        if Some(p.as_path()) != created_lock && fs::symlink_metadata(&p).is_ok() {
            targets.push(p);
        }
    }
    // The agent's logs and the local runs' log, rotated copies included.
    for name in [
        format!("{}.log", config.program_name),
        "codedeploy-local.log".to_owned(),
    ] {
        targets.extend(log_files(&config.log_dir, &name));
    }

    for target in targets {
        if !dry_run {
            remove(&target)?;
        }
        outcome.removed.push(target);
    }
    if let Some(path) = created_lock {
        remove(path)?;
    }

    if let Some(path) = &config.path {
        outcome
            .kept
            .push((path.clone(), "the agent configuration (operator-owned)"));
    }
    if config.on_premises_config_file.exists() {
        outcome.kept.push((
            config.on_premises_config_file.clone(),
            "the on-premises configuration and the credentials file it names (operator-owned)",
        ));
        outcome.notes.push(format!(
            "{} exists: every instance launched from this image registers with the same \
             on-premises identity. Remove it from the image yourself if that is not what you \
             want.",
            config.on_premises_config_file.display()
        ));
    }
    outcome.notes.push(
        "The agent keeps no identity or credentials on disk (IMDS tokens and credentials stay \
         in memory); none to remove."
            .into(),
    );
    outcome.notes.push(
        "Applications that earlier deployments installed outside the deployment root stay in \
         the image; with the cleanup records gone, the first deployment to a new instance \
         needs --file-exists-behavior OVERWRITE (or RETAIN) for those files."
            .into(),
    );
    Ok(outcome)
}

fn remove(path: &Path) -> Result<(), PrepareError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// `codedeploy-agent prepare-image`: exit 0 when done (or listed), 1 when refused or failed.
pub fn command(args: &PrepareArgs) -> ExitCode {
    let path = args.config.path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("{e}");
            return ExitCode::from(1);
        }
    };
    config.report_warnings(false);
    match prepare(&config, args.dry_run, args.force) {
        Ok(outcome) => {
            let verb = if args.dry_run {
                "Would remove"
            } else {
                "Removed"
            };
            if outcome.removed.is_empty() {
                crate::outln!("Nothing to remove: no instance-specific agent state found.");
            } else {
                crate::outln!("{verb}:");
                for p in &outcome.removed {
                    crate::outln!("  {}", p.display());
                }
            }
            crate::outln!("Kept:");
            for (p, why) in &outcome.kept {
                crate::outln!("  {} ({why})", p.display());
            }
            for note in &outcome.notes {
                crate::outln!("Note: {note}");
            }
            if args.dry_run {
                crate::outln!("Dry run: nothing was changed.");
            } else {
                crate::outln!(
                    "The agent stays enabled and starts on instances launched from this image."
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::errln!("prepare-image: {e}");
            ExitCode::from(1)
        }
    }
}
