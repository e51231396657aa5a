//! `codedeploy-agent run`: the daemon in the foreground, as systemd runs it. Loads the
//! configuration, sets up logging, takes the pid lock, finds the host's identity and
//! credentials, builds the host-commands client and the revision fetchers, recovers what a
//! previous run still owes, and polls until SIGTERM/SIGINT (a second signal escalates).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::agent::{Agent, DaemonOptions, Engine, Shutdown};
use super::tracking::Tracker;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::control::client::{
    ClientConfig, HttpHostCommands, agent_version_header, write_version_file,
};
use crate::control::endpoint::{self, EndpointInputs, ImdsLocation};
use crate::control::identity::{self, Imds};
use crate::deploy::executor::{EngineSettings, HookMapping};
use crate::deploy::hooks::RunningHooks;
use crate::deploy::layout::DeploymentRoot;
use crate::revision::Fetcher;
use crate::revision::github::GitHubFetcher;
use crate::revision::s3::{S3Fetcher, S3Settings};

/// The packaged fallback when `/etc/...` does not exist (§8.1).
pub const FALLBACK_CONFIG_PATH: &str = "/opt/codedeploy-agent/conf/codedeployagent.yml";

/// Options of `codedeploy-agent run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also log to stderr (systemd's journal picks it up).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub log_to_stderr: bool,
    /// The format of what is logged to stderr: the agent log's text lines, or one JSON object
    /// per line.
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// `-c/--config FILE`, as `run`, `status` and `prepare-image` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The agent configuration file (default: /etc/codedeploy-agent/conf/codedeployagent.yml,
    /// else /opt/codedeploy-agent/conf/codedeployagent.yml).
    #[arg(
        short = 'c',
        long = "config",
        visible_aliases = ["config_file", "config-file"],
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file given, else the default one that exists.
    pub fn path(&self) -> PathBuf {
        config_path(self.config.as_deref())
    }
}

pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => PathBuf::from(FALLBACK_CONFIG_PATH),
    }
}

/// Holds `<pid_dir>/<program>.pid.lock` for the life of the daemon, so two agents never
/// share a deployment root.
struct PidLock {
    _lock: File,
    pid_file: PathBuf,
}

impl PidLock {
    fn acquire(config: &Config) -> Result<Self, String> {
        let dir = &config.pid_dir;
        fs::create_dir_all(dir).map_err(|e| {
            format!("Please make sure the path of the PID directory exists and is writable: \"{}\" ({e})", dir.display())
        })?;
        let lock_path = dir.join(format!("{}.pid.lock", config.program_name));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("Could not open {}: {e}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(format!(
                "Could not acquire lock on {} - aborting start!",
                lock_path.display()
            ));
        }
        let pid_file = dir.join(format!("{}.pid", config.program_name));
        let mut f = File::create(&pid_file)
            .map_err(|e| format!("Could not write {}: {e}", pid_file.display()))?;
        let _ = write!(f, "{}", std::process::id());
        Ok(Self {
            _lock: lock,
            pid_file,
        })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// Runs the daemon until it is told to stop. Exit 0 after a clean shutdown, 1 when it cannot
/// start (configuration, identity, lock).
pub fn run(args: &RunArgs) -> ExitCode {
    let path = args.config.path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(refusal) = config.process_identity_refusal() {
        crate::errln!("{refusal}");
        return ExitCode::from(1);
    }
    let log_file = format!("{}.log", config.program_name);
    if let Err(e) = crate::logging::init_with(&crate::logging::LogOptions {
        log_dir: &config.log_dir,
        file_name: &log_file,
        program: &config.program_name,
        verbose: config.verbose,
        console: args.log_to_stderr.then_some(args.log_format),
        rotation: config.log_rotation,
        journal: config.log_to_journal,
        hook_output_to_journal: config.hook_output_to_journal,
    }) {
        crate::errln!("{e}");
        return ExitCode::from(1);
    }
    let mut config = config;
    if config.disable_core_dumps {
        config
            .warnings
            .extend(crate::hardening::disable_core_dumps());
    }
    if config.restrict_log_dir_permissions
        && let Err(e) = crate::hardening::restrict_log_dir(&config.log_dir)
    {
        config.warnings.push(format!(
            "restrict_log_dir_permissions: cannot tighten {}: {e}",
            config.log_dir.display()
        ));
    }
    config.report_warnings(args.log_to_stderr);
    let _lock = match PidLock::acquire(&config) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .thread_name("codedeploy-agent")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let served = runtime.block_on(serve(config));
    // Blocking engine threads stop at their next cancellation check; never wait for them
    // without limit (dropping the runtime would).
    runtime.shutdown_timeout(Duration::from_secs(5));
    match served {
        Ok(()) => {
            tracing::info!("agent exiting now");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    identity::install_crypto_provider();
    let config_file = config.path.as_deref().map_or_else(
        || "(built-in defaults)".to_owned(),
        |p| p.display().to_string(),
    );
    tracing::info!(version = crate::VERSION, config = %config_file, "starting codedeploy-agent");
    let imds = Imds::from_config(&config).map_err(|e| e.to_string())?;
    let identity = resolve_identity(&config, &imds).await?;
    // identity::resolve has logged "host identity resolved" with these fields.
    let (credentials, refresh) =
        identity::credentials_with_refresh(&config, &identity, imds.endpoint()).await;

    let domain = identity.endpoint_domain();
    let url = endpoint::resolve(&EndpointInputs {
        deploy_control_endpoint: config.deploy_control_endpoint.as_deref(),
        enable_auth_policy: config.enable_auth_policy,
        use_fips_mode: config.use_fips_mode,
        region: identity.endpoint_region(),
        imds: identity.imds_location.as_ref().map(|l| ImdsLocation {
            region: l.region.as_deref(),
            domain: l.domain.as_deref(),
        }),
        on_premises: identity.on_prem,
    })
    .map_err(|e| e.to_string())?;
    // endpoint::resolve has logged the AWS agent's "CodeDeploy endpoint: <url>".
    tracing::debug!("CodeDeploy endpoint domain {domain}");
    // `<root_dir>/..` (`/opt/codedeploy-agent` with the packaged file), where the AWS agents
    // keep `.version`.
    let opt_root = config
        .root_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| config.root_dir.join(".."), Path::to_path_buf);
    match write_version_file(&opt_root) {
        Ok(path) => tracing::debug!(path = %path.display(), "version file written"),
        Err(e) => tracing::warn!(
            "cannot write the version file {}/.version: {e}; the version header falls back to what can be read",
            opt_root.display()
        ),
    }
    let agent_version = agent_version_header(&opt_root);
    let client = HttpHostCommands::new(
        ClientConfig::from_config(&config, url, identity.region.clone(), agent_version),
        credentials.clone(),
    )
    .map_err(|e| e.to_string())?
    .with_credentials_refresh(refresh);

    let handle = tokio::runtime::Handle::current();
    let s3 = S3Fetcher::new(
        S3Settings::from_config(&config, identity.region.clone()),
        credentials,
        handle.clone(),
    )
    .map_err(|e| e.to_string())?
    .with_throughput_floor(config.download_floor);
    let github = GitHubFetcher::new(config.proxy_uri.as_deref(), handle)
        .map_err(|e| e.to_string())?
        .with_throughput_floor(config.download_floor);

    let root = DeploymentRoot::new(&config.root_dir, &config.program_name);
    if config.restrict_agent_dir_permissions
        && let Err(e) = crate::hardening::restrict_agent_dirs(
            &root,
            &config.ongoing_deployment_tracking,
            None,
            Some(&config.pid_dir),
        )
    {
        tracing::warn!(
            "restrict_agent_dir_permissions: cannot tighten the agent's directories: {e}"
        );
    }
    let mut settings = EngineSettings::from_config(&config, &root);
    settings.hooks.running = Some(Arc::new(RunningHooks::default()));
    tracing::info!("Archives to retain is: {}}}", config.max_revisions);
    let engine = Engine {
        root: root.clone(),
        settings,
        fetcher: Arc::new(Fetcher::new(Some(s3), Some(github))),
        mapping: HookMapping::default_mapping(),
    };
    let options = DaemonOptions {
        wait_between_runs: Duration::from_secs(config.wait_between_runs),
        shutdown_wait: Duration::from_secs(config.kill_agent_max_wait_time_seconds),
        kill_grace: Duration::from_secs(config.hook_kill_grace_seconds),
        startup_jitter: Duration::from_millis(config.startup_jitter_ms),
        report_retry_max: Duration::from_millis(config.report_retry_max_ms),
        ..DaemonOptions::default()
    };
    let tracker = Tracker::new(root.ongoing_dir(&config.ongoing_deployment_tracking));
    // A pending self-update to this binary is confirmed here, where the first poll is
    // possible; recovery then reports the update command's result (src/update/state.rs).
    let update_state = crate::update::state::state_path(&config.pid_dir, &config.program_name);
    crate::update::state::confirm_at_start(&update_state);
    let mut agent = Agent::new(
        client,
        identity.host_identifier.clone(),
        engine,
        tracker,
        options,
    );
    match std::env::current_exe() {
        Ok(binary) => {
            agent.updater = Some(Arc::new(crate::update::command::Updater::from_config(
                &config,
                binary,
                std::env::args_os().skip(1).collect(),
            )));
        }
        Err(e) => tracing::warn!("cannot find this binary's path ({e}); self-update is off"),
    }
    let agent = Arc::new(agent);

    let status_path = super::status::status_file(&config.pid_dir, &config.program_name);
    let writer = tokio::spawn(super::status::write_periodically(
        Arc::clone(&agent.observed),
        status_path.clone(),
        // `status` is at most a second behind what the agent is doing.
        Duration::from_secs(1),
    ));
    let endpoint = match config.health_endpoint {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on health_endpoint {addr}: {e}"))?;
            tracing::info!("serving /healthz, /metrics and /status on http://{addr}");
            Some(tokio::spawn(super::status::serve(
                Arc::clone(&agent.observed),
                listener,
            )))
        }
        None => None,
    };

    let (tx, rx) = watch::channel(Shutdown::Running);
    tokio::spawn(signals(tx));
    agent.run(rx).await;
    writer.abort();
    if let Some(e) = endpoint {
        e.abort();
    }
    let _ = fs::remove_file(&status_path);
    Ok(())
}

/// The host's identity. While the instance metadata service cannot be reached (it can come
/// up after the agent at boot, or answer 5xx), asks again with growing pauses (2 s doubling to
/// 60 s) instead of exiting, telling systemd to extend its start timeout meanwhile; any other
/// identity error (a 404: not on EC2; an invalid document) stops the start.
async fn resolve_identity(config: &Config, imds: &Imds) -> Result<identity::Identity, String> {
    let notifier = super::notify::Notifier::from_env();
    let mut pause = Duration::from_secs(2);
    loop {
        match identity::resolve(config, imds).await {
            Ok(identity) => return Ok(identity),
            Err(identity::IdentityError::Imds(e)) if imds_unreachable(&e) => {
                tracing::error!(
                    "cannot read the instance identity from the instance metadata service at {}: {e}; next try in {} s. {}",
                    imds.endpoint(),
                    pause.as_secs(),
                    identity_hint(config)
                );
                notifier.notify(&format!(
                    "EXTEND_TIMEOUT_USEC={}\nSTATUS=waiting for the instance metadata service",
                    (pause + Duration::from_secs(90)).as_micros()
                ));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            Err(e @ identity::IdentityError::Imds(_)) => {
                return Err(format!(
                    "cannot read the instance identity from the instance metadata service at {}: {e}. {}",
                    imds.endpoint(),
                    identity_hint(config)
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What to do when no identity could be found: the on-premises file is what an off-EC2 host
/// is missing; on EC2 the metadata service must answer.
fn identity_hint(config: &Config) -> String {
    format!(
        "There is no on-premises configuration at {} (on_premises_config_file). Off EC2, register \
         this host with CodeDeploy and write that file (docs/operations.md, \"Troubleshooting\"); \
         on EC2, check that the instance metadata service is enabled (and, in a container, its \
         hop limit)",
        config.on_premises_config_file.display()
    )
}

/// No answer, a 5xx or throttling (possibly while getting the token): worth asking again.
fn imds_unreachable(e: &identity::ImdsError) -> bool {
    match e {
        identity::ImdsError::Transport { .. } => true,
        identity::ImdsError::Status { code, .. } => *code >= 500 || *code == 429,
        identity::ImdsError::TokenUnavailable { source } => imds_unreachable(source),
        _ => false,
    }
}

/// First SIGTERM/SIGINT/SIGQUIT: graceful; a second one: immediate.
async fn signals(tx: watch::Sender<Shutdown>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    let mut level = Shutdown::Running;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = quit.recv() => {}
        }
        level = match level {
            Shutdown::Running => {
                tracing::info!("shutdown requested: no new commands; waiting for running ones");
                Shutdown::Graceful
            }
            _ => {
                tracing::warn!("second shutdown signal: stopping running hooks now");
                Shutdown::Immediate
            }
        };
        if tx.send(level).is_err() {
            return;
        }
    }
}
