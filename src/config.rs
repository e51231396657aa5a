//! `codedeployagent.yml`: the agent configuration, read the way operators already write it
//! (`:key: value` Ruby-symbol keys or plain `key: value`), parsed into raw values and then
//! validated into [`Config`]. Unknown or retired keys are logged once and ignored. Every error
//! names the file and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle};

use crate::deploy::layout::DEFAULT_MAX_REVISIONS;

/// The agent log's rotation unless `log_max_size` / `log_max_files` say otherwise.
pub const DEFAULT_LOG_ROTATION: crate::logging::Rotation = crate::logging::Rotation {
    max_bytes: 16 * 1024 * 1024,
    keep: 8,
};

/// scripts.log's rotation (and the cap of each hook's captured output) unless
/// `scripts_log_max_size` / `scripts_log_max_files` say otherwise: 64 MiB x 8, as v2 does.
pub const DEFAULT_SCRIPTS_LOG_ROTATION: crate::logging::Rotation = crate::logging::Rotation {
    max_bytes: 64 * 1024 * 1024,
    keep: 8,
};

/// The smallest size a log may be capped at (0 turns rotation off).
const MIN_LOG_SIZE: u64 = 4096;

/// Reads a size: a whole number of bytes, or a number with `K`, `M` or `G` (binary units;
/// `KB`, `KiB`, `MB`, `MiB`, ... are accepted the same).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// What the daemon runs when a hook asks for a reboot (`hook_reboot_command`).
pub const DEFAULT_HOOK_REBOOT_COMMAND: &str = "systemctl reboot";

/// The default configuration file, as the AWS agent packages it.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/codedeploy-agent/conf/codedeployagent.yml";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("The config file {} does not exist or is not readable", .0.display())]
    Unreadable(PathBuf),
    #[error(
        "An error occurred loading the CodeDeploy agent config file at {}. Error message: {message}",
        path.display()
    )]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A scalar value from the file, resolved like Ruby's YAML reader does for the types the agent
/// uses.
#[derive(Debug, Clone, PartialEq)]
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
    /// A list or mapping: only `plugins` takes one.
    Complex,
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Null => Ok(()),
            RawValue::Bool(b) => write!(f, "{b}"),
            RawValue::Int(i) => write!(f, "{i}"),
            RawValue::Text(s) => f.write_str(s),
            RawValue::Complex => f.write_str("<list or mapping>"),
        }
    }
}

fn resolve(text: &str, style: ScalarStyle) -> RawValue {
    if style != ScalarStyle::Plain {
        return RawValue::Text(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => RawValue::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            RawValue::Bool(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            RawValue::Bool(false)
        }
        _ => text
            .replace('_', "")
            .parse::<i64>()
            .map(RawValue::Int)
            .unwrap_or_else(|_| RawValue::Text(text.to_owned())),
    }
}

/// Reads a flat YAML mapping of scalar keys. A key given twice: the last one wins.
fn read_flat_mapping(text: &str) -> Result<BTreeMap<String, RawValue>, String> {
    let mut out = BTreeMap::new();
    let mut depth = 0usize;
    let mut key: Option<String> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            format!(
                "{} at line {} column {}",
                e.info(),
                e.marker().line(),
                e.marker().col() + 1
            )
        })?;
        let at = || format!("line {} column {}", span.start.line(), span.start.col() + 1);
        match event {
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
            Event::Nothing => {}
            Event::Alias(_) => return Err(format!("aliases are not supported ({})", at())),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth == 1 {
                    if !matches!(event, Event::MappingStart(..)) {
                        return Err(format!(
                            "the file must be a mapping of keys to values ({})",
                            at()
                        ));
                    }
                } else if depth == 2 {
                    match key.take() {
                        Some(k) => {
                            out.insert(k, RawValue::Complex);
                        }
                        None => return Err(format!("keys must be plain names ({})", at())),
                    }
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Scalar(value, style, ..) => match depth {
                0 if value.trim().is_empty() => {}
                0 => {
                    return Err(format!(
                        "the file must be a mapping of keys to values ({})",
                        at()
                    ));
                }
                1 => match key.take() {
                    None => key = Some(value.trim_start_matches(':').to_owned()),
                    Some(k) => {
                        out.insert(k, resolve(&value, style));
                    }
                },
                _ => {}
            },
        }
    }
    Ok(out)
}

/// Whether `name` (a user name or a numeric uid) is the effective user of this process.
fn names_current_user(name: &str) -> bool {
    let uid = nix::unistd::geteuid();
    if let Ok(n) = name.parse::<u32>() {
        return n == uid.as_raw();
    }
    matches!(nix::unistd::User::from_name(name), Ok(Some(u)) if u.uid == uid)
}

/// Whether `name` (a group name or a numeric gid) is the effective group of this process.
fn names_current_group(name: &str) -> bool {
    let gid = nix::unistd::getegid();
    if let Ok(n) = name.parse::<u32>() {
        return n == gid.as_raw();
    }
    matches!(nix::unistd::Group::from_name(name), Ok(Some(g)) if g.gid == gid)
}

/// The effective user's name (its uid when it has none).
fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// The most `kill_agent_max_wait_time_seconds` may be (24 hours, as AWS's v2 agent clamps it).
pub const MAX_KILL_AGENT_WAIT_SECONDS: u64 = 86_400;

/// The validated configuration. Field names are the config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from; `None` when built-in defaults were used.
    pub path: Option<PathBuf>,
    pub program_name: String,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
    pub root_dir: PathBuf,
    pub verbose: bool,
    pub wait_between_runs: u64,
    pub proxy_uri: Option<String>,
    pub max_revisions: u32,
    pub disable_imds_v1: bool,
    pub enable_auth_policy: bool,
    pub use_fips_mode: bool,
    pub deploy_control_endpoint: Option<String>,
    pub s3_endpoint_override: Option<String>,
    pub on_premises_config_file: PathBuf,
    pub ongoing_deployment_tracking: String,
    pub kill_agent_max_wait_time_seconds: u64,
    pub enable_deployments_log: bool,
    pub http_read_timeout: u64,
    /// `prod` unless set; `beta`/`gamma` keep environment credentials (agent-behaviour.md §1.4).
    pub codedeploy_test_profile: String,
    /// Ours: refuse bundles that contain symlinks at all.
    pub reject_symlinks_in_bundle: bool,
    /// Ours: keep setuid/setgid bits of bundle files (cleared by default).
    pub allow_setuid_in_bundle: bool,
    /// Ours: the AWS behaviour for hooks whose background children keep stdout/stderr open:
    /// wait for them until the timeout and fail with code 6.
    pub hook_wait_for_inherited_output: bool,
    /// Ours: seconds between TERM and KILL of a timed-out hook's process group.
    pub hook_kill_grace_seconds: u64,
    /// Ours: serve `/healthz`, `/metrics` and `/status` on this loopback address (off when unset).
    pub health_endpoint: Option<std::net::SocketAddr>,
    /// Ours: the daemon waits up to this many milliseconds, at random, before its first poll,
    /// so instances launched together do not poll in lock-step.
    pub startup_jitter_ms: u64,
    /// Ours, for tests: the longest wait, in milliseconds, between two attempts to deliver a
    /// final report (the waits double from 2 s up to this). Tests shorten it so "reported
    /// once" can wait out the whole retry schedule.
    pub report_retry_max_ms: u64,
    /// Ours: how slow an S3 or GitHub download may be before the attempt is given up
    /// (`download_stall_timeout_seconds`, `download_min_bytes_per_second`,
    /// `download_throughput_grace_seconds`).
    pub download_floor: crate::revision::ThroughputFloor,
    /// Ours: the agent log's size cap and rotated files kept (`log_max_size`, `log_max_files`).
    pub log_rotation: crate::logging::Rotation,
    /// Ours: each deployment's scripts.log (and the deployments log) size cap and rotated
    /// files kept; the size is also the most of each hook's captured output kept on disk
    /// (`scripts_log_max_size`, `scripts_log_max_files`).
    pub scripts_log_rotation: crate::logging::Rotation,
    /// Ours: send the agent's records to journald when running under systemd.
    pub log_to_journal: bool,
    /// Ours: also send hook output lines to journald (off by default).
    pub hook_output_to_journal: bool,
    /// v2: hooks start from `PATH`, `HOME` and `USER` plus the deployment variables instead
    /// of the agent's whole environment.
    pub restrict_hook_env_to_allowlist: bool,
    /// v2: remove `LD_PRELOAD`, `LD_LIBRARY_PATH` and `LD_AUDIT` from every hook's environment.
    pub strip_loader_env_in_hooks: bool,
    /// v2 (on by default): `RLIMIT_CORE=0` and `PR_SET_DUMPABLE=0` for the agent process.
    pub disable_core_dumps: bool,
    /// v2: the deployment root's own directories and state files readable by root only.
    pub restrict_agent_dir_permissions: bool,
    /// v2: `log_dir` 0750 and the agent's log files 0640.
    pub restrict_log_dir_permissions: bool,
    /// v2: refuse appspec SELinux types `unconfined_t`, `kernel_t` and `init_t`.
    pub reject_unconfined_selinux_in_bundle: bool,
    /// v2: refuse bundle entries and appspec `mode:` values with setuid or setgid bits.
    pub reject_unsafe_permissions_in_bundle: bool,
    /// v2: the most bytes a bundle may unpack to (declared sizes); `None`: no cap.
    pub archive_max_extraction_size: Option<u64>,
    /// v2 2.1: a restart deployment (`ReuseArchiveFromDeploymentId`) copies the named
    /// deployment's unpacked archive instead of downloading (default on).
    pub enable_archive_reuse: bool,
    /// What the daemon runs (through `/bin/sh -c`) when a hook asks for a reboot; empty: hooks
    /// cannot ask (default `systemctl reboot`).
    pub hook_reboot_command: String,
    /// What the operator must be told about the file (unknown keys, keys without effect):
    /// every command shows these on stderr and in its log once logging is up
    /// ([`Config::report_warnings`]).
    pub warnings: Vec<String>,
    /// The Ruby agent's `:user:` / `:group:` (it switched to them at start), when they name
    /// someone other than the user running this process: `run` refuses to start with them
    /// ([`Config::process_identity_refusal`]).
    pub process_user: Option<String>,
    pub process_group: Option<String>,
    /// Ours: self-update (`update_policy`, `update_pinned_version`, `update_source`,
    /// `update_health_timeout_seconds`; src/update).
    pub update: crate::update::UpdateSettings,
}

/// v2 keys that this agent always behaves as if set to true (so setting them changes nothing)
/// or that only mean something on Windows / to v2's process model.
const ALWAYS_ON_V2_KEYS: &[&str] = &[
    // Archive entries, `files.source` and hook locations never resolve outside the bundle.
    "reject_path_traversal_in_bundle",
    // Permissions are applied through descriptors without following a symlink.
    // Archive owners are never applied: the agent's own tree stays the unpacking user's
    // (docs/compatibility.md), so `false` cannot restore them.
    "ignore_ownership_in_bundle",
    "reject_symlink_permission_targets",
    // Windows only.
    "disable_powershell_profile_in_hooks",
    // v2's debugging port: not offered here.
    "enable_command_port",
];

/// Reads `archive_max_extraction_size` as v2 does: bytes, or a whole number with `B`, `KB`,
/// `MB`, `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024).
fn parse_v2_byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Keys the AWS agent reads that this agent accepts without acting on them (process-model
/// details of the Ruby agent).
const IGNORED_KEYS: &[&str] = &[
    "children",
    "use_mock_command_service",
    "plugins",
    "wait_after_throttle_error",
    "wait_after_connection_problem",
    "wait_between_spawning_children",
    "max_runs_per_worker",
    "instance_service_region",
    "instance_service_endpoint",
    "instance_service_port",
    "shared_dir",
    "wait_after_error",
    "log_aws_wire",
];

impl Config {
    /// The defaults the packaged AWS configuration file sets, for a host where the agent runs
    /// as root.
    pub fn system_defaults() -> Self {
        Self {
            path: None,
            program_name: "codedeploy-agent".into(),
            log_dir: "/var/log/aws/codedeploy-agent".into(),
            pid_dir: "/opt/codedeploy-agent/state/.pid".into(),
            root_dir: "/opt/codedeploy-agent/deployment-root".into(),
            verbose: false,
            wait_between_runs: 1,
            proxy_uri: None,
            max_revisions: DEFAULT_MAX_REVISIONS,
            disable_imds_v1: false,
            enable_auth_policy: false,
            use_fips_mode: false,
            deploy_control_endpoint: None,
            s3_endpoint_override: None,
            on_premises_config_file: "/etc/codedeploy-agent/conf/codedeploy.onpremises.yml".into(),
            ongoing_deployment_tracking: "ongoing-deployment".into(),
            kill_agent_max_wait_time_seconds: 7200,
            enable_deployments_log: true,
            http_read_timeout: 80,
            codedeploy_test_profile: "prod".into(),
            reject_symlinks_in_bundle: false,
            allow_setuid_in_bundle: false,
            hook_wait_for_inherited_output: false,
            hook_kill_grace_seconds: 5,
            startup_jitter_ms: 5000,
            report_retry_max_ms: 60_000,
            download_floor: crate::revision::ThroughputFloor::DEFAULT,
            health_endpoint: None,
            log_rotation: DEFAULT_LOG_ROTATION,
            scripts_log_rotation: DEFAULT_SCRIPTS_LOG_ROTATION,
            log_to_journal: true,
            hook_output_to_journal: false,
            restrict_hook_env_to_allowlist: false,
            strip_loader_env_in_hooks: false,
            disable_core_dumps: true,
            restrict_agent_dir_permissions: false,
            restrict_log_dir_permissions: false,
            reject_unconfined_selinux_in_bundle: false,
            reject_unsafe_permissions_in_bundle: false,
            archive_max_extraction_size: None,
            enable_archive_reuse: true,
            hook_reboot_command: DEFAULT_HOOK_REBOOT_COMMAND.into(),
            warnings: Vec::new(),
            process_user: None,
            process_group: None,
            update: crate::update::UpdateSettings::default(),
        }
    }

    /// Why `codedeploy-agent run` must not start with this file: the Ruby agent switched to
    /// its `:user:` / `:group:`; this agent (like AWS's v2) does not, and running on as root
    /// would silently ignore what the operator asked for.
    pub fn process_identity_refusal(&self) -> Option<String> {
        if self.process_user.is_none() && self.process_group.is_none() {
            return None;
        }
        let path = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!("{}: ", p.display()));
        let keys: Vec<String> = [("user", &self.process_user), ("group", &self.process_group)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!(":{k}: {v}")))
            .collect();
        let unit: Vec<String> = [("User", &self.process_user), ("Group", &self.process_group)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        Some(format!(
            "{path}{} is not supported: this agent does not switch users and would run as {}. \
             Remove it from the file and set {} in a systemd unit override instead \
             (systemctl edit codedeploy-agent, under [Service]), then start the agent again",
            keys.join(" and "),
            current_user_name(),
            unit.join(" and "),
        ))
    }

    /// Tells the operator what [`Config::warnings`] holds: each on stderr (prefixed
    /// `warning: `) unless `stderr_is_logged` (the log already goes there), and in the log.
    /// Call it once logging is up.
    pub fn report_warnings(&self, stderr_is_logged: bool) {
        for warning in &self.warnings {
            if !stderr_is_logged {
                crate::errln!("warning: {warning}");
            }
            tracing::warn!("{warning}");
        }
    }

    /// Defaults for a user without a configuration file: root and logs under the user's state
    /// directory (`$XDG_STATE_HOME/codedeploy-agent`, else `~/.local/state/codedeploy-agent`),
    /// or the system paths when running as root.
    pub fn user_defaults() -> Self {
        // Root too: without a configuration file a local run is the same for every user, and
        // never writes into the daemon's /opt and /var/log paths.
        let mut config = Self::system_defaults();
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("codedeploy-agent");
        config.root_dir = state.join("deployment-root");
        config.log_dir = state.join("log");
        config.pid_dir = state.join("pid");
        config
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|_| ConfigError::Unreadable(path.to_path_buf()))?;
        Self::parse(&text, path)
    }

    /// Validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw = read_flat_mapping(text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let mut config = Self::system_defaults();
        config.path = Some(path.to_path_buf());
        let mut update_pin: Option<String> = None;
        // Keys absent from the file take the AWS agent's code defaults, which differ from the
        // packaged file for a few keys.
        config.wait_between_runs = 30;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            message,
        };
        for (key, value) in &raw {
            let text = || -> Option<String> {
                match value {
                    RawValue::Null => None,
                    other => Some(other.to_string()).filter(|s| !s.trim().is_empty()),
                }
            };
            let boolean = || -> Result<bool, ConfigError> {
                match value {
                    RawValue::Bool(b) => Ok(*b),
                    RawValue::Null => Ok(false),
                    other => Err(invalid(
                        key,
                        format!("expected true or false, found {other}"),
                    )),
                }
            };
            let integer = |min: i64| -> Result<u64, ConfigError> {
                match value {
                    RawValue::Int(i) if *i >= min => Ok(*i as u64),
                    other => Err(invalid(
                        key,
                        format!("expected a whole number >= {min}, found {other}"),
                    )),
                }
            };
            match key.as_str() {
                "program_name" => config.program_name = text().unwrap_or(config.program_name),
                "log_dir" => config.log_dir = text().map(PathBuf::from).unwrap_or(config.log_dir),
                "pid_dir" => config.pid_dir = text().map(PathBuf::from).unwrap_or(config.pid_dir),
                "root_dir" => {
                    config.root_dir = text().map(PathBuf::from).unwrap_or(config.root_dir)
                }
                "verbose" => config.verbose = boolean()?,
                "wait_between_runs" => config.wait_between_runs = integer(0)?,
                "proxy_uri" => config.proxy_uri = text(),
                "max_revisions" => {
                    config.max_revisions = match value {
                        RawValue::Null => DEFAULT_MAX_REVISIONS,
                        RawValue::Int(i) if *i >= 1 && *i <= i64::from(u32::MAX) => *i as u32,
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "Invalid configuration :max_revision={other}: expected a whole \
                                     number of at least 1 (the number of deployment directories \
                                     kept per deployment group)"
                                ),
                            ));
                        }
                    }
                }
                "disable_imds_v1" => config.disable_imds_v1 = boolean()?,
                "enable_auth_policy" => config.enable_auth_policy = boolean()?,
                "use_fips_mode" => config.use_fips_mode = boolean()?,
                "deploy_control_endpoint" => config.deploy_control_endpoint = text(),
                "s3_endpoint_override" => config.s3_endpoint_override = text(),
                "on_premises_config_file" => {
                    config.on_premises_config_file = text()
                        .map(PathBuf::from)
                        .unwrap_or(config.on_premises_config_file)
                }
                "ongoing_deployment_tracking" => {
                    let name = text().unwrap_or(config.ongoing_deployment_tracking.clone());
                    if crate::deploy::layout::RESERVED_NAMES.contains(&name.as_str()) {
                        return Err(invalid(
                            key,
                            format!(
                                "{name} is one of the deployment root's own directories; choose \
                                 another name"
                            ),
                        ));
                    }
                    if name.contains('/') || name == "." || name == ".." {
                        return Err(invalid(
                            key,
                            format!("{name} must be a plain directory name"),
                        ));
                    }
                    config.ongoing_deployment_tracking = name;
                }
                "kill_agent_max_wait_time_seconds" => {
                    let seconds = integer(0)?;
                    config.kill_agent_max_wait_time_seconds =
                        seconds.min(MAX_KILL_AGENT_WAIT_SECONDS);
                    if seconds > MAX_KILL_AGENT_WAIT_SECONDS {
                        config.warnings.push(format!(
                            "{}: kill_agent_max_wait_time_seconds {seconds} is more than 24 \
                             hours; using {MAX_KILL_AGENT_WAIT_SECONDS}",
                            path.display()
                        ));
                    }
                }
                "enable_deployments_log" => {
                    config.enable_deployments_log = !matches!(value, RawValue::Bool(false))
                }
                "http_read_timeout" => config.http_read_timeout = integer(1)?,
                "codedeploy_test_profile" => {
                    config.codedeploy_test_profile = text().unwrap_or_else(|| "prod".into())
                }
                "reject_symlinks_in_bundle" => config.reject_symlinks_in_bundle = boolean()?,
                "allow_setuid_in_bundle" => config.allow_setuid_in_bundle = boolean()?,
                "hook_wait_for_inherited_output" => {
                    config.hook_wait_for_inherited_output = boolean()?
                }
                "hook_kill_grace_seconds" => config.hook_kill_grace_seconds = integer(0)?,
                "startup_jitter_ms" => config.startup_jitter_ms = integer(0)?,
                "report_retry_max_ms" => config.report_retry_max_ms = integer(1)?,
                "download_stall_timeout_seconds" => {
                    config.download_floor.stall = std::time::Duration::from_secs(integer(1)?)
                }
                "download_min_bytes_per_second" => {
                    config.download_floor.min_bytes_per_sec = integer(1)?
                }
                "download_throughput_grace_seconds" => {
                    config.download_floor.grace = std::time::Duration::from_secs(integer(0)?)
                }
                "log_max_size" | "scripts_log_max_size" => {
                    let bytes = match value {
                        RawValue::Null => None,
                        RawValue::Int(i) => u64::try_from(*i).ok(),
                        RawValue::Text(t) => parse_size(t),
                        _ => None,
                    }
                    .filter(|b| *b == 0 || *b >= MIN_LOG_SIZE)
                    .ok_or_else(|| {
                        invalid(
                            key,
                            format!(
                                "expected a size such as 16MiB, 512KiB or a number of bytes \
                                 (at least {MIN_LOG_SIZE}, or 0 for no rotation), found {value}"
                            ),
                        )
                    })?;
                    if key == "log_max_size" {
                        config.log_rotation.max_bytes = bytes;
                    } else {
                        config.scripts_log_rotation.max_bytes = bytes;
                    }
                }
                "log_max_files" => {
                    config.log_rotation.keep = u32::try_from(integer(0)?.min(1000)).unwrap_or(1000)
                }
                "scripts_log_max_files" => {
                    config.scripts_log_rotation.keep =
                        u32::try_from(integer(0)?.min(1000)).unwrap_or(1000)
                }
                "log_to_journal" => {
                    // Empty keeps the default (on); anything but true/false is an error, so a
                    // quoted "false" or a typo does not silently leave it on.
                    if !matches!(value, RawValue::Null) {
                        config.log_to_journal = boolean()?;
                    }
                }
                "hook_output_to_journal" => config.hook_output_to_journal = boolean()?,
                "restrict_hook_env_to_allowlist" => {
                    config.restrict_hook_env_to_allowlist = boolean()?
                }
                "strip_loader_env_in_hooks" => config.strip_loader_env_in_hooks = boolean()?,
                "disable_core_dumps" => {
                    // Empty keeps the default (on).
                    if !matches!(value, RawValue::Null) {
                        config.disable_core_dumps = boolean()?;
                    }
                }
                "restrict_agent_dir_permissions" => {
                    config.restrict_agent_dir_permissions = boolean()?
                }
                "restrict_log_dir_permissions" => config.restrict_log_dir_permissions = boolean()?,
                "reject_unconfined_selinux_in_bundle" => {
                    config.reject_unconfined_selinux_in_bundle = boolean()?
                }
                "reject_unsafe_permissions_in_bundle" => {
                    config.reject_unsafe_permissions_in_bundle = boolean()?
                }
                "hook_reboot_command" => {
                    config.hook_reboot_command = match value {
                        RawValue::Null | RawValue::Bool(false) => String::new(),
                        RawValue::Text(t) => t.trim().to_owned(),
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "expected a command such as \"systemctl reboot\", or false \
                                     to let no hook ask for a reboot, found {other}"
                                ),
                            ));
                        }
                    }
                }
                "enable_archive_reuse" => {
                    // Empty keeps the default (on), as in v2 2.1.
                    if !matches!(value, RawValue::Null) {
                        config.enable_archive_reuse = boolean()?;
                    }
                }
                "archive_max_extraction_size" => {
                    config.archive_max_extraction_size = match value {
                        RawValue::Null => None,
                        RawValue::Int(i) if *i >= 0 => Some(*i as u64),
                        RawValue::Text(t) => Some(parse_v2_byte_size(t).ok_or_else(|| {
                            invalid(
                                key,
                                format!(
                                    "expected a size such as 4GB, 500MiB or a number of bytes, \
                                     found {t}"
                                ),
                            )
                        })?),
                        other => {
                            return Err(invalid(
                                key,
                                format!(
                                    "expected a size such as 4GB, 500MiB or a number of bytes, \
                                     found {other}"
                                ),
                            ));
                        }
                    }
                }
                k if ALWAYS_ON_V2_KEYS.contains(&k) => {
                    if matches!(value, RawValue::Bool(false)) {
                        tracing::debug!(
                            key = k,
                            "configuration key cannot be turned off here: this agent always \
                             behaves as if it were true (or it only applies on Windows)"
                        );
                    }
                }
                "health_endpoint" => {
                    config.health_endpoint = match text() {
                        None => None,
                        Some(t) => {
                            let addr: std::net::SocketAddr = t.trim().parse().map_err(|_| {
                                invalid(
                                    key,
                                    format!("{t} is not an address:port such as 127.0.0.1:9180"),
                                )
                            })?;
                            if !addr.ip().is_loopback() {
                                return Err(invalid(
                                    key,
                                    format!(
                                        "{addr} is not a loopback address: the endpoint is for local health checks only"
                                    ),
                                ));
                            }
                            Some(addr)
                        }
                    }
                }
                "user" | "group" => {
                    let Some(name) = text() else { continue };
                    let name = name.trim().to_owned();
                    let is_current = if key == "user" {
                        names_current_user(&name)
                    } else {
                        names_current_group(&name)
                    };
                    if is_current {
                        continue;
                    }
                    config.warnings.push(format!(
                        "{}: :{key}: {name} has no effect on this agent (it runs as the user \
                         that starts it); codedeploy-agent run refuses to start with it: use \
                         {}={name} in a systemd unit override",
                        path.display(),
                        if key == "user" { "User" } else { "Group" }
                    ));
                    if key == "user" {
                        config.process_user = Some(name);
                    } else {
                        config.process_group = Some(name);
                    }
                }
                k if crate::update::KEYS.contains(&k) => {
                    let text = match value {
                        RawValue::Bool(false) => Some("off".to_owned()),
                        other => text().filter(|_| *other != RawValue::Null),
                    };
                    crate::update::apply_key(
                        &mut config.update,
                        &mut update_pin,
                        k,
                        text.as_deref(),
                    )
                    .map_err(|m| invalid(key, m))?;
                }
                "children" if !matches!(value, RawValue::Int(1) | RawValue::Null) => {
                    return Err(invalid(key, "children can only be set to 1".into()));
                }
                k if IGNORED_KEYS.contains(&k) => {
                    tracing::debug!(
                        key = k,
                        "configuration key is accepted but has no effect here"
                    );
                }
                k => config.warnings.push(format!(
                    "{}: unknown configuration key {k} ignored (misspelt, or not supported by \
                     this agent); see docs/configuration.md for the keys it reads",
                    path.display()
                )),
            }
        }
        if raw.get("root_dir").is_none_or(|v| *v == RawValue::Null) {
            return Err(invalid(
                "root_dir",
                "is required: set :root_dir: to the deployment root, for example \
                 /opt/codedeploy-agent/deployment-root"
                    .into(),
            ));
        }
        crate::update::finish_settings(&mut config.update, update_pin.as_deref())
            .map_err(|(k, m)| invalid(k, m))?;
        if config.use_fips_mode {
            tracing::debug!(
                "use_fips_mode is set; the region check happens when the daemon starts"
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/codedeploy-agent/conf/codedeployagent.yml"),
        )
    }

    const SHIPPED: &str = "---\n:log_aws_wire: false\n:log_dir: '/var/log/aws/codedeploy-agent/'\n:pid_dir: '/opt/codedeploy-agent/state/.pid/'\n:program_name: codedeploy-agent\n:root_dir: '/opt/codedeploy-agent/deployment-root'\n:verbose: false\n:wait_between_runs: 1\n:proxy_uri:\n:max_revisions: 5\n";

    #[test]
    fn shipped_file_parses() {
        let c = parse(SHIPPED).expect("valid");
        assert_eq!(
            c.root_dir,
            PathBuf::from("/opt/codedeploy-agent/deployment-root")
        );
        assert_eq!(c.log_dir, PathBuf::from("/var/log/aws/codedeploy-agent/"));
        assert_eq!(c.wait_between_runs, 1);
        assert_eq!(c.max_revisions, 5);
        assert_eq!(c.proxy_uri, None);
        assert!(!c.verbose);
    }

    #[test]
    fn plain_keys_and_last_duplicate_wins() {
        let c = parse("root_dir: /a\nmax_revisions: 2\n:max_revisions: 3\n").expect("valid");
        assert_eq!(c.root_dir, PathBuf::from("/a"));
        assert_eq!(c.max_revisions, 3);
        assert_eq!(c.wait_between_runs, 30, "code default when absent");
    }

    #[test]
    fn invalid_max_revisions_is_a_clear_error_naming_file_and_key() {
        for bad in ["0", "-1", "abc", "1.5"] {
            let err = parse(&format!(":root_dir: /a\n:max_revisions: {bad}\n")).expect_err(bad);
            let msg = err.to_string();
            assert!(
                msg.starts_with("/etc/codedeploy-agent/conf/codedeployagent.yml: max_revisions:"),
                "{msg}"
            );
            assert!(msg.contains(&format!(":max_revision={bad}")), "{msg}");
        }
    }

    #[test]
    fn parse_errors_use_the_aws_message() {
        let err = parse(":root_dir: [unclosed\n").expect_err("bad yaml");
        assert!(
            err.to_string().starts_with(
                "An error occurred loading the CodeDeploy agent config file at /etc/codedeploy-agent/conf/codedeployagent.yml. Error message:"
            ),
            "{err}"
        );
        let err = Config::load(Path::new("/nonexistent/x.yml")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "The config file /nonexistent/x.yml does not exist or is not readable"
        );
    }

    #[test]
    fn children_other_than_one_is_rejected_and_unknown_keys_ignored() {
        assert!(
            parse(":root_dir: /a\n:children: 2\n")
                .expect_err("children")
                .to_string()
                .contains("children can only be set to 1")
        );
        assert!(
            parse(":root_dir: /a\n:children: 1\n:some_future_key: x\n:plugins: [codedeploy]\n")
                .is_ok()
        );
    }

    #[test]
    fn log_rotation_keys() {
        let c = parse(":root_dir: /a\n").expect("valid");
        assert_eq!(c.log_rotation, DEFAULT_LOG_ROTATION);
        assert_eq!(c.scripts_log_rotation, DEFAULT_SCRIPTS_LOG_ROTATION);
        assert!(c.log_to_journal && !c.hook_output_to_journal);
        let c = parse(
            ":root_dir: /a\n:log_max_size: 2MiB\n:log_max_files: 3\nscripts_log_max_size: 65536\nscripts_log_max_files: 0\n:hook_output_to_journal: true\nlog_to_journal: false\n",
        )
        .expect("valid");
        assert_eq!(c.log_rotation.max_bytes, 2 << 20);
        assert_eq!(c.log_rotation.keep, 3);
        assert_eq!(c.scripts_log_rotation.max_bytes, 65536);
        assert_eq!(c.scripts_log_rotation.keep, 0);
        assert!(c.hook_output_to_journal && !c.log_to_journal);
        assert_eq!(
            parse(":root_dir: /a\n:log_max_size: 10 KB\n")
                .expect("ok")
                .log_rotation
                .max_bytes,
            10240
        );
        assert!(
            parse(":root_dir: /a\n:log_to_journal:\n")
                .expect("ok")
                .log_to_journal
        );
        for bad in ["'false'", "flase", "0"] {
            let err = parse(&format!(":root_dir: /a\n:log_to_journal: {bad}\n")).expect_err(bad);
            assert!(
                err.to_string()
                    .contains("log_to_journal: expected true or false"),
                "{err}"
            );
        }
        for bad in ["12", "lots", "-1", "5 parsecs"] {
            let err = parse(&format!(":root_dir: /a\n:log_max_size: {bad}\n")).expect_err(bad);
            assert!(
                err.to_string().contains("log_max_size: expected a size"),
                "{err}"
            );
        }
    }

    #[test]
    fn kill_agent_wait_is_clamped_to_a_day_with_a_warning() {
        let c = parse(":root_dir: /r\n:kill_agent_max_wait_time_seconds: 90000\n").unwrap();
        assert_eq!(c.kill_agent_max_wait_time_seconds, 86_400);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let c = parse(":root_dir: /r\n:kill_agent_max_wait_time_seconds: 86400\n").unwrap();
        assert_eq!(c.kill_agent_max_wait_time_seconds, 86_400);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn download_floor_keys() {
        use std::time::Duration;
        let c = parse(":root_dir: /a\n").expect("valid");
        assert_eq!(c.download_floor, crate::revision::ThroughputFloor::DEFAULT);
        let c = parse(
            ":root_dir: /a\ndownload_stall_timeout_seconds: 5\n\
             download_min_bytes_per_second: 200\ndownload_throughput_grace_seconds: 0\n",
        )
        .expect("valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.download_floor.stall, Duration::from_secs(5));
        assert_eq!(c.download_floor.min_bytes_per_sec, 200);
        assert_eq!(c.download_floor.grace, Duration::ZERO);
        for bad in [
            "download_stall_timeout_seconds: 0",
            "download_min_bytes_per_second: 0",
        ] {
            parse(&format!(":root_dir: /a\n{bad}\n")).expect_err(bad);
        }
    }

    #[test]
    fn v2_hardening_keys_parse_and_unknown_keys_become_warnings() {
        let c = parse(":root_dir: /a\n").expect("valid");
        assert!(c.disable_core_dumps, "on by default");
        assert!(!c.restrict_hook_env_to_allowlist && !c.strip_loader_env_in_hooks);
        assert_eq!(c.archive_max_extraction_size, None);
        assert!(c.warnings.is_empty());
        let c = parse(
            ":root_dir: /a\nrestrict_hook_env_to_allowlist: true\nstrip_loader_env_in_hooks: true\n\
             disable_core_dumps: false\nrestrict_agent_dir_permissions: true\n\
             restrict_log_dir_permissions: true\nignore_ownership_in_bundle: true\n\
             reject_unconfined_selinux_in_bundle: true\nreject_unsafe_permissions_in_bundle: true\n\
             reject_path_traversal_in_bundle: true\nreject_symlink_permission_targets: true\n\
             disable_powershell_profile_in_hooks: true\nenable_command_port: false\n\
             enable_archive_reuse: true\narchive_max_extraction_size: \"4GB\"\n",
        )
        .expect("valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.restrict_hook_env_to_allowlist && c.strip_loader_env_in_hooks);
        assert!(!c.disable_core_dumps);
        assert!(c.restrict_agent_dir_permissions && c.restrict_log_dir_permissions);
        assert!(c.reject_unconfined_selinux_in_bundle && c.reject_unsafe_permissions_in_bundle);
        assert_eq!(c.archive_max_extraction_size, Some(4_000_000_000));
        for (text, bytes) in [
            ("500MiB", 500 << 20),
            ("1GiB", 1 << 30),
            ("2048", 2048),
            ("7 KB", 7000),
        ] {
            let c = parse(&format!(
                ":root_dir: /a\narchive_max_extraction_size: {text}\n"
            ))
            .expect(text);
            assert_eq!(c.archive_max_extraction_size, Some(bytes), "{text}");
        }
        for bad in ["lots", "-1", "1.5GB", "4 parsecs"] {
            let err = parse(&format!(
                ":root_dir: /a\narchive_max_extraction_size: {bad}\n"
            ))
            .expect_err(bad);
            assert!(
                err.to_string()
                    .contains("archive_max_extraction_size: expected a size"),
                "{err}"
            );
        }
        let c = parse(":root_dir: /a\n:restrict_hook_env_to_alowlist: true\n").expect("valid");
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("unknown configuration key restrict_hook_env_to_alowlist"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn root_dir_is_required() {
        assert!(
            parse(":log_dir: /x\n")
                .expect_err("no root")
                .to_string()
                .contains("root_dir")
        );
    }
}
