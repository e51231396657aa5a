//! One update run, as the daemon (for `UpdateDeploymentAgent`) and `codedeploy-agent update`
//! drive it: policy, target version, staging, and the switch.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::install::{self, Staged};
use super::source::Source;
use super::state::{self, Phase, Restart, UpdateState};
use super::{Target, UpdateError, UpdatePolicy, UpdateSettings, Version, decide};
use crate::config::Config;

/// Everything an update needs to know about this agent.
#[derive(Debug, Clone)]
pub struct Updater {
    pub settings: UpdateSettings,
    /// The configuration file, for messages.
    pub config_file: String,
    pub proxy: Option<String>,
    /// The binary that is replaced (the running one).
    pub binary: PathBuf,
    pub state: PathBuf,
    pub tracking_dir: PathBuf,
    /// Where the watcher writes (v2's updater log name).
    pub log_file: PathBuf,
    /// The daemon's arguments after argv[0], for the `exec` restart.
    pub run_args: Vec<OsString>,
}

/// What [`Updater::prepare`] found.
#[derive(Debug)]
pub enum Prepared {
    /// Nothing to install; why.
    Current(String),
    Staged(Staged),
}

impl Updater {
    pub fn from_config(config: &Config, binary: PathBuf, run_args: Vec<OsString>) -> Self {
        Self {
            settings: config.update.clone(),
            config_file: config.path.as_deref().map_or_else(
                || "the built-in configuration".to_owned(),
                |p| p.display().to_string(),
            ),
            proxy: config.proxy_uri.clone(),
            binary,
            state: state::state_path(&config.pid_dir, &config.program_name),
            tracking_dir: config.root_dir.join(&config.ongoing_deployment_tracking),
            log_file: config
                .log_dir
                .join(format!("{}-updater.log", config.program_name)),
            run_args,
        }
    }

    /// Refuses when the policy is off or no source is named.
    pub fn check_allowed(&self) -> Result<&str, UpdateError> {
        if self.settings.policy == UpdatePolicy::Off {
            return Err(UpdateError::Off {
                config: self.config_file.clone(),
            });
        }
        self.settings
            .source
            .as_deref()
            .ok_or_else(|| UpdateError::NoSource {
                config: self.config_file.clone(),
            })
    }

    /// The target version for the policy (reading `latest` only for `auto`).
    pub async fn target(&self) -> Result<(Source, Target), UpdateError> {
        let base = self.check_allowed()?;
        let source = Source::new(base, self.proxy.as_deref())?;
        let latest = match self.settings.policy {
            UpdatePolicy::Auto => Some(source.latest().await?),
            _ => None,
        };
        let target = decide(self.settings.policy, Version::current(), latest);
        Ok((source, target))
    }

    /// Decides, then downloads and verifies the release beside the binary.
    pub async fn prepare(&self) -> Result<Prepared, UpdateError> {
        let (source, target) = self.target().await?;
        match target {
            Target::Current { why, .. } => Ok(Prepared::Current(why)),
            Target::Install(v) => {
                tracing::info!(from = crate::VERSION, to = %v, source = %source.url(""), "updating the agent");
                Ok(Prepared::Staged(
                    install::stage(&source, &self.binary, v).await?,
                ))
            }
        }
    }

    /// How the daemon is restarted: through systemd when systemd runs it
    /// (`$NOTIFY_SOCKET`, the unit is `Type=notify`), else by `exec`.
    pub fn restart_mode(&self) -> Restart {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            Restart::Systemd {
                unit: own_unit().unwrap_or_else(|| "codedeploy-agent.service".into()),
            }
        } else {
            Restart::Exec {
                pid: i32::try_from(std::process::id()).unwrap_or(0),
                args: self.run_args.clone(),
            }
        }
    }

    /// Records the pending switch, puts the staged binary in place (old one at `.prev`) and
    /// starts the watcher from the old binary. The caller restarts (exec) when `restart` says.
    pub fn switch(
        &self,
        staged: &Staged,
        host_command_id: Option<&str>,
        restart: Restart,
    ) -> Result<(), UpdateError> {
        let pending = UpdateState {
            phase: Phase::Pending,
            from: crate::VERSION.to_owned(),
            to: staged.version.to_string(),
            sha256: staged.sha256.clone(),
            binary: self.binary.clone(),
            restart: restart.clone(),
            host_command_id: host_command_id.map(str::to_owned),
            tracking_dir: self.tracking_dir.clone(),
            deadline: state::now() + self.settings.health_timeout_seconds,
            message: format!("switching from {} to {}", crate::VERSION, staged.version),
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UpdateError::Install { path, source }
        };
        state::begin(&self.state, &pending).map_err(io(&self.state))?;
        if let Err(e) = install::swap(&self.binary, staged) {
            let _ = std::fs::remove_file(&self.state);
            let _ = std::fs::remove_file(&staged.path);
            return Err(e);
        }
        if restart == Restart::None {
            let _ = std::fs::remove_file(&self.state);
            return Ok(());
        }
        if let Err(message) = self.spawn_watcher() {
            let _ = install::restore(&self.binary);
            let _ = std::fs::remove_file(&self.state);
            return Err(UpdateError::Restart {
                path: self.binary.clone(),
                message: format!(
                    "cannot start the update watcher: {message}; the old binary is back"
                ),
            });
        }
        Ok(())
    }

    /// `<binary>.prev update-watch --state <file>`, output to the updater log; it detaches at
    /// once (its first process exits).
    fn spawn_watcher(&self) -> Result<(), String> {
        if let Some(dir) = self.log_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|e| format!("{}: {e}", self.log_file.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let status = Command::new(install::prev_path(&self.binary))
            .arg("update-watch")
            .arg("--state")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("update-watch exited with {status}"))
        }
    }
}

/// The systemd unit this process runs in, from its cgroup path.
fn own_unit() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .flat_map(|l| l.rsplit('/'))
        .find(|seg| seg.ends_with(".service"))
        .map(str::to_owned)
}

/// Options of `codedeploy-agent update`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub config: crate::daemon::start::ConfigArg,
    /// Only say what would be installed; change nothing.
    #[arg(long)]
    pub check: bool,
    /// The binary to replace (default: this one).
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
}

/// Exit codes of `codedeploy-agent update`.
pub const EXIT_REFUSED: u8 = 2;
/// The daemon is running: the update must go through it.
pub const EXIT_DAEMON_RUNNING: u8 = 75;

/// `codedeploy-agent update`: with the daemon stopped, installs what the policy asks for (the
/// old binary kept as `.prev`); the daemon itself updates through `UpdateDeploymentAgent`, so
/// with the daemon running this refuses (the running binary is never swapped under a command).
pub fn run(args: &UpdateArgs) -> ExitCode {
    let path = args.config.path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("{e}");
            return ExitCode::from(1);
        }
    };
    let binary = match args.binary.clone().map_or_else(std::env::current_exe, Ok) {
        Ok(b) => b,
        Err(e) => {
            crate::errln!("cannot find this binary's path: {e}");
            return ExitCode::from(1);
        }
    };
    let updater = Updater::from_config(&config, binary, Vec::new());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            crate::errln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check {
        return match runtime.block_on(updater.target()) {
            Ok((_, Target::Current { why, .. })) => {
                crate::outln!("up to date: {why}");
                ExitCode::SUCCESS
            }
            Ok((_, Target::Install(v))) => {
                crate::outln!("would install {v} (running {})", crate::VERSION);
                ExitCode::SUCCESS
            }
            Err(e) => refused(&e),
        };
    }
    if let Some(pid) = crate::daemon::status::running_pid(&config) {
        crate::errln!(
            "the agent is running (pid {pid}): it updates itself when CodeDeploy sends \
             UpdateDeploymentAgent, never during a command. To update now, stop it (systemctl \
             stop codedeploy-agent), run codedeploy-agent update, and start it again"
        );
        return ExitCode::from(EXIT_DAEMON_RUNNING);
    }
    match runtime.block_on(updater.prepare()) {
        Ok(Prepared::Current(why)) => {
            crate::outln!("up to date: {why}");
            ExitCode::SUCCESS
        }
        Ok(Prepared::Staged(staged)) => match updater.switch(&staged, None, Restart::None) {
            Ok(()) => {
                crate::outln!(
                    "installed {} at {} (the previous binary is {}); start the agent to run it",
                    staged.version,
                    updater.binary.display(),
                    install::prev_path(&updater.binary).display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => refused(&e),
        },
        Err(e) => refused(&e),
    }
}

fn refused(e: &UpdateError) -> ExitCode {
    crate::errln!("update refused: {e}");
    ExitCode::from(match e {
        UpdateError::Off { .. } | UpdateError::NoSource { .. } => EXIT_REFUSED,
        _ => 1,
    })
}
