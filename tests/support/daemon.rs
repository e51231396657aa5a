//! Runs the real `codedeploy-agent run` against the fake host-commands service, and builds
//! signed specifications for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use codedeploy_agent::control::Envelope;
use serde_json::json;

use super::Sandbox;
use super::fake_service::{Complete, FakeService};

/// The host identifier every test agent uses.
pub const HOST: &str = "arn:aws:ec2:us-east-1:111122223333:instance/i-0e2e";

/// A running agent daemon; killed (and reaped) on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `run` with a config pointing at `fake` and the sandbox's root. `extra` is
    /// appended to the config; `env` added to the process environment.
    pub fn start(s: &Sandbox, fake: &FakeService, extra: &str, env: &[(&str, &str)]) -> Self {
        Self::start_as(s, fake, HOST, extra, env)
    }

    /// [`Daemon::start`] with another host identifier (a fleet of agents on one fake).
    pub fn start_as(
        s: &Sandbox,
        fake: &FakeService,
        host: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_bin(s, fake, &super::bin(), host, extra, env)
    }

    /// [`Daemon::start_as`] with another agent binary (the release build).
    pub fn start_bin(
        s: &Sandbox,
        fake: &FakeService,
        bin: &Path,
        host: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let creds = fake.credentials();
        write_config(s, fake, &format!(":codedeploy_test_profile: beta\n{extra}"));
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("-c")
            .arg(s.config())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_HOST_IDENTIFIER", host)
            .env("AWS_ACCESS_KEY_ID", &creds.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &creds.secret_key)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", s.path())
            .env("CODEDEPLOY_LOG", "debug")
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(s, cmd)
    }

    /// Spawns `cmd` (an agent command line) with no stdin and its stderr in
    /// `<sandbox>/daemon.stderr` ([`Daemon::log_text`]), killed if the test process dies.
    pub fn spawn(s: &Sandbox, mut cmd: Command) -> Self {
        let log = s.path().join("daemon.stderr");
        cmd.stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        // If the test process dies without dropping us (killed by a timeout), take the agent
        // with it rather than leave a daemon polling a dead fake service.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn().expect("spawn the agent");
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal);
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The release build of the agent named by `CODEDEPLOY_AGENT_RELEASE_BIN` (scripts/test builds
/// it with packaging/build and exports it). Unset: under `CI=true` the test fails; elsewhere it
/// prints a skip line and returns `None`.
pub fn release_bin(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CODEDEPLOY_AGENT_RELEASE_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "CODEDEPLOY_AGENT_RELEASE_BIN={} is not a file",
                p.display()
            );
            Some(p)
        }
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{test}: CODEDEPLOY_AGENT_RELEASE_BIN is not set under CI=true; scripts/test must build the release binary (packaging/build) and export its path"
        ),
        None => {
            eprintln!(
                "skipped {test}: set CODEDEPLOY_AGENT_RELEASE_BIN to a release build (cargo build --release --bin codedeploy-agent)"
            );
            None
        }
    }
}

/// The longest wait between two attempts at a final report in the tests' agents
/// (`report_retry_max_ms`; 60 s by default).
pub const REPORT_RETRY_MAX: Duration = Duration::from_millis(200);

/// How long the agent must send no final report before a test calls it quiet: longer than any
/// wait between two report attempts ([`REPORT_RETRY_MAX`] plus 20% jitter) with room for the
/// call itself, so a late second report cannot hide behind it.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Waits until the agent has gone quiet ([`FakeService::wait_quiet`] with [`QUIET`]), then
/// returns the accepted completes; panics after `timeout`.
pub fn wait_quiet(fake: &FakeService, timeout: Duration) -> Vec<Complete> {
    fake.wait_quiet(QUIET, timeout)
}

/// The daemon config the tests use: the fake's endpoint, `<sandbox>/pid`, no waits or jitter,
/// a 1 s hook kill grace, report retries at most [`REPORT_RETRY_MAX`] apart, no on-premises
/// config, then `extra`.
pub fn write_config(s: &Sandbox, fake: &FakeService, extra: &str) {
    s.write_config(&format!(
        ":deploy_control_endpoint: {url}\n:pid_dir: {pid}\n:wait_between_runs: 0\n:startup_jitter_ms: 0\n:hook_kill_grace_seconds: 1\n:report_retry_max_ms: {retry}\n:on_premises_config_file: {none}\n{extra}",
        retry = REPORT_RETRY_MAX.as_millis(),
        url = fake.url(),
        pid = s.path().join("pid").display(),
        none = s.path().join("no-onprem.yml").display(),
    ));
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployment spec (JSON) for a local directory revision.
pub fn spec_json(deployment_id: &str, group: &str, bundle: &Path) -> serde_json::Value {
    json!({
        "DeploymentId": deployment_id,
        "DeploymentGroupId": group,
        "DeploymentGroupName": format!("{group}-name"),
        "ApplicationName": "app",
        "DeploymentCreator": "user",
        "DeploymentType": "IN_PLACE",
        "AppSpecFilename": "appspec.yml",
        "Revision": {"RevisionType": "Local Directory", "LocalRevision": {"Location": bundle.display().to_string(), "BundleType": "directory"}},
        "AgentActionOverrides": {"AgentOverrides": {"FileExistsBehavior": "DISALLOW"}}
    })
}

/// The PKCS7/JSON envelope the service would send for `spec`.
pub fn signed(spec: &serde_json::Value) -> Envelope {
    Envelope {
        format: "PKCS7/JSON".into(),
        payload: super::signing::sign_spec_pem(&spec.to_string()),
    }
}

/// Hands out `names` one after the other, as the service does: each is queued only after the
/// previous one's final report arrived. Returns the completes, in order.
pub fn run_commands(
    fake: &FakeService,
    prefix: &str,
    names: &[&str],
    spec: &Envelope,
    timeout: Duration,
) -> Vec<Complete> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let id = format!("{prefix}-{i}-{name}");
        let execution = format!("{prefix}/exec/{i}/{name}");
        fake.set_spec(&execution, "CodeDeploy", spec.clone());
        let before = fake.completes().len();
        fake.enqueue(
            HOST,
            super::fake_service::command(&id, name, HOST, &execution),
        );
        let all = fake.wait_for_completes(before + 1, timeout);
        let Some(c) = all.into_iter().find(|c| c.host_command_identifier == id) else {
            panic!("no final report for {id} within {timeout:?}");
        };
        out.push(c);
    }
    out
}
