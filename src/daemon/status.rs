//! What the daemon tells operators about itself: a status file for `codedeploy-agent status`,
//! and an opt-in loopback HTTP endpoint with `/healthz`, `/metrics` (Prometheus text format)
//! and `/status` (the same JSON as the status file).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::deploy::layout::write_atomic;

/// How many finished commands the status keeps.
pub const RECENT: usize = 20;

/// Upper bounds (seconds) of the hook and command duration histograms.
pub const BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A command being worked on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub host_command_id: String,
    pub command: String,
    pub deployment_id: String,
    pub deployment_group_id: String,
    /// Unix seconds.
    pub started_at: u64,
}

/// A command whose result was reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub host_command_id: String,
    pub command: String,
    pub deployment_id: String,
    pub status: String,
    pub error_code: Option<u64>,
    pub message: String,
    /// Unix seconds.
    pub finished_at: u64,
    pub duration_ms: u64,
}

/// The status file (`<pid_dir>/<program>.status.json`) and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    pub version: String,
    pub host_identifier: String,
    pub started_at: u64,
    pub updated_at: u64,
    pub last_poll_ok: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_errors: u32,
    pub healthy: bool,
    pub in_flight: Vec<InFlight>,
    pub recent: Vec<Finished>,
}

/// A Prometheus histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: Mutex<([u64; BUCKETS.len()], u64, f64)>,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let v = value.as_secs_f64();
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                c.0[i] += 1;
            }
        }
        c.1 += 1;
        c.2 += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", c.0[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", c.1);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", c.2);
        let _ = writeln!(out, "{name}_count{braces} {}", c.1);
    }
}

/// Counters the daemon keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    pub polls_ok: AtomicU64,
    pub poll_errors: Mutex<BTreeMap<String, u64>>,
    pub throttles: AtomicU64,
    pub commands: Mutex<BTreeMap<(String, String), u64>>,
    pub bytes_downloaded: AtomicU64,
    pub files_installed: AtomicU64,
    pub hook_seconds: Histogram,
    pub command_seconds: Histogram,
}

impl Metrics {
    pub fn poll_error(&self, kind: &str) {
        *self
            .poll_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub fn command(&self, name: &str, result: &str) {
        *self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.to_owned(), result.to_owned()))
            .or_default() += 1;
    }
}

/// Everything observable about the daemon, shared with the status writer and the endpoint.
#[derive(Debug)]
pub struct Observed {
    pub host_identifier: String,
    pub started: SystemTime,
    /// A poll loop that has not succeeded for this long is unhealthy.
    pub healthy_within: Duration,
    pub metrics: Metrics,
    pub last_poll_ok: Mutex<Option<(Instant, u64)>>,
    pub last_error: Mutex<Option<String>>,
    pub consecutive_errors: AtomicU64,
    pub in_flight: Mutex<BTreeMap<String, InFlight>>,
    pub recent: Mutex<VecDeque<Finished>>,
}

impl Observed {
    pub fn new(host_identifier: String, healthy_within: Duration) -> Self {
        Self {
            host_identifier,
            started: SystemTime::now(),
            healthy_within,
            metrics: Metrics::default(),
            last_poll_ok: Mutex::new(None),
            last_error: Mutex::new(None),
            consecutive_errors: AtomicU64::new(0),
            in_flight: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn poll_ok(&self) {
        *self.last_poll_ok.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), unix_now()));
        self.consecutive_errors.store(0, Ordering::Relaxed);
        self.metrics.polls_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn poll_failed(&self, kind: &str, message: &str, consecutive: u32) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_owned());
        self.consecutive_errors
            .store(u64::from(consecutive), Ordering::Relaxed);
        self.metrics.poll_error(kind);
    }

    pub fn started(&self, c: InFlight) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.host_command_id.clone(), c);
    }

    /// Records a command's start (deployment fields may be filled in later).
    pub fn begin(&self, host_command_id: &str, command: &str) {
        self.started(InFlight {
            host_command_id: host_command_id.into(),
            command: command.into(),
            deployment_id: String::new(),
            deployment_group_id: String::new(),
            started_at: unix_now(),
        });
    }

    /// Fills in the deployment of an in-flight command once its spec is known.
    pub fn deployment(&self, host_command_id: &str, deployment_id: &str, group: &str) {
        if let Some(c) = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(host_command_id)
        {
            c.deployment_id = deployment_id.into();
            c.deployment_group_id = group.into();
        }
    }

    /// Records an accepted final report, from its status and diagnostics payload.
    pub fn reported(&self, host_command_id: &str, status: &str, payload: &str) {
        let entry = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host_command_id)
            .cloned();
        let parsed: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        let now = unix_now();
        let (command, deployment_id, started_at) = entry
            .map(|e| (e.command, e.deployment_id, e.started_at))
            .unwrap_or_else(|| (String::new(), String::new(), now));
        self.finished(Finished {
            host_command_id: host_command_id.into(),
            command,
            deployment_id,
            status: status.into(),
            error_code: parsed["error_code"].as_u64(),
            message: parsed["message"].as_str().unwrap_or_default().to_owned(),
            finished_at: now,
            duration_ms: now.saturating_sub(started_at) * 1000,
        });
    }

    /// Forgets an in-flight command that ended without a report of ours (acked as done).
    pub fn dropped(&self, host_command_id: &str) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host_command_id);
    }

    pub fn finished(&self, f: Finished) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&f.host_command_id);
        self.metrics.command(&f.command, &f.status);
        self.metrics
            .command_seconds
            .observe(Duration::from_millis(f.duration_ms));
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_front(f);
        recent.truncate(RECENT);
    }

    /// Healthy: the last successful poll is recent enough.
    pub fn healthy(&self) -> bool {
        self.last_poll_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(at, _)| at.elapsed() <= self.healthy_within)
    }

    pub fn report(&self) -> StatusReport {
        // One lock at a time, each released before the next (a guard kept alive across a
        // second lock of the same mutex would deadlock the poll loop).
        let last_poll_ok = self
            .last_poll_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, t)| t);
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let in_flight: Vec<InFlight> = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let recent: Vec<Finished> = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let healthy = self.healthy();
        StatusReport {
            pid: std::process::id(),
            version: crate::VERSION.to_owned(),
            host_identifier: self.host_identifier.clone(),
            started_at: self
                .started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            updated_at: unix_now(),
            last_poll_ok,
            last_error,
            consecutive_errors: u32::try_from(self.consecutive_errors.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
            healthy,
            in_flight,
            recent,
        }
    }

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut out,
            "codedeploy_agent_polls_total",
            "Successful PollHostCommand calls.",
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_polls_total {}",
            m.polls_ok.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "codedeploy_agent_poll_errors_total",
            "Failed polls by kind.",
        );
        for (kind, n) in m
            .poll_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "codedeploy_agent_poll_errors_total{{kind=\"{kind}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "codedeploy_agent_throttles_total",
            "Calls the service throttled.",
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_throttles_total {}",
            m.throttles.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "codedeploy_agent_commands_total",
            "Commands reported, by name and result.",
        );
        for ((name, result), n) in m.commands.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "codedeploy_agent_commands_total{{command=\"{name}\",result=\"{result}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "codedeploy_agent_bytes_downloaded_total",
            "Revision bytes fetched and unpacked.",
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_bytes_downloaded_total {}",
            m.bytes_downloaded.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "codedeploy_agent_files_installed_total",
            "Files copied by Install.",
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_files_installed_total {}",
            m.files_installed.load(Ordering::Relaxed)
        );
        m.hook_seconds.render(
            &mut out,
            "codedeploy_agent_hook_event_duration_seconds",
            "Lifecycle event hook run times.",
            "",
        );
        m.command_seconds.render(
            &mut out,
            "codedeploy_agent_command_duration_seconds",
            "Command run times.",
            "",
        );
        let _ = writeln!(
            out,
            "# HELP codedeploy_agent_commands_in_flight Commands being worked on.\n# TYPE codedeploy_agent_commands_in_flight gauge"
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_commands_in_flight {}",
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
        );
        let _ = writeln!(
            out,
            "# HELP codedeploy_agent_healthy 1 when polling is healthy.\n# TYPE codedeploy_agent_healthy gauge"
        );
        let _ = writeln!(out, "codedeploy_agent_healthy {}", u8::from(self.healthy()));
        let _ = writeln!(
            out,
            "# HELP codedeploy_agent_resident_memory_bytes Resident set size.\n# TYPE codedeploy_agent_resident_memory_bytes gauge"
        );
        let _ = writeln!(
            out,
            "codedeploy_agent_resident_memory_bytes {}",
            resident_bytes()
        );
        out
    }
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Where the status file lives.
pub fn status_file(pid_dir: &Path, program: &str) -> PathBuf {
    pid_dir.join(format!("{program}.status.json"))
}

/// Rewrites the status file every `every` until the task is dropped.
pub async fn write_periodically(observed: Arc<Observed>, path: PathBuf, every: Duration) {
    loop {
        if let Ok(json) = serde_json::to_vec_pretty(&observed.report())
            && let Err(e) = write_atomic(&path, &json)
        {
            tracing::debug!(error = %e, file = %path.display(), "cannot write the status file");
        }
        tokio::time::sleep(every).await;
    }
}

/// Serves `/healthz`, `/metrics` and `/status` on `listener` (a loopback address).
pub async fn serve(observed: Arc<Observed>, listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let observed = Arc::clone(&observed);
        tokio::spawn(async move {
            // Read the request head (up to 8 KiB), however it is split into segments.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read_head = async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, kind, body) = match path {
                "/healthz" => {
                    if observed.healthy() {
                        ("200 OK", "text/plain", "ok\n".to_owned())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            "polling is not healthy\n".to_owned(),
                        )
                    }
                }
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", observed.prometheus()),
                "/status" => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string_pretty(&observed.report()).unwrap_or_default(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_metrics_reflect_what_happened() {
        let o = Observed::new("arn:host".into(), Duration::from_secs(60));
        assert!(!o.healthy());
        o.poll_ok();
        assert!(o.healthy());
        o.poll_failed("network", "Network error: refused", 1);
        o.started(InFlight {
            host_command_id: "hc".into(),
            command: "Install".into(),
            deployment_id: "d-1".into(),
            deployment_group_id: "dg".into(),
            started_at: 1,
        });
        assert_eq!(o.report().in_flight.len(), 1);
        o.finished(Finished {
            host_command_id: "hc".into(),
            command: "Install".into(),
            deployment_id: "d-1".into(),
            status: "Succeeded".into(),
            error_code: Some(0),
            message: String::new(),
            finished_at: 2,
            duration_ms: 1500,
        });
        let r = o.report();
        assert!(r.in_flight.is_empty());
        assert_eq!(r.recent.len(), 1);
        assert_eq!(r.last_error.as_deref(), Some("Network error: refused"));
        let m = o.prometheus();
        assert!(m.contains("codedeploy_agent_polls_total 1\n"), "{m}");
        assert!(
            m.contains("codedeploy_agent_poll_errors_total{kind=\"network\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains(
                "codedeploy_agent_commands_total{command=\"Install\",result=\"Succeeded\"} 1\n"
            ),
            "{m}"
        );
        assert!(
            m.contains("codedeploy_agent_command_duration_seconds_bucket{le=\"5\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("codedeploy_agent_resident_memory_bytes "), "{m}");
    }
}

/// Options of `codedeploy-agent status`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes (LSB): 0 the agent is running, 3 it is not running, \
4 the status cannot be known (the configuration cannot be read)."
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: super::start::ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Whether a daemon holds the pid lock, and its pid.
pub fn running_pid(config: &crate::config::Config) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let lock_path = config
        .pid_dir
        .join(format!("{}.pid.lock", config.program_name));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .ok()?;
    // SAFETY: flock on a descriptor we own.
    let free = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if free {
        return None;
    }
    std::fs::read_to_string(config.pid_dir.join(format!("{}.pid", config.program_name)))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .or(Some(0))
}

fn ago(then: u64) -> String {
    let secs = unix_now().saturating_sub(then);
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// `codedeploy-agent status`: LSB exit codes (0 running, 3 not running, 4 unknown).
pub fn command(args: &StatusArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let path = args.config.path();
    let config = match crate::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("{e}");
            return ExitCode::from(4);
        }
    };
    config.report_warnings(false);
    let pid = running_pid(&config);
    let report: Option<StatusReport> =
        std::fs::read(status_file(&config.pid_dir, &config.program_name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|_| pid.is_some());
    if args.json {
        let value = serde_json::json!({"running": pid.is_some(), "pid": pid, "status": report});
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return if pid.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        };
    }
    let Some(pid) = pid else {
        crate::outln!("No AWS CodeDeploy agent running");
        return ExitCode::from(3);
    };
    crate::outln!("The AWS CodeDeploy agent is running as PID {pid}");
    if let Some(r) = report {
        crate::outln!(
            "  version {}, host {}, started {}",
            r.version,
            r.host_identifier,
            ago(r.started_at)
        );
        match r.last_poll_ok {
            Some(t) => crate::outln!(
                "  polling: {}, last successful poll {}",
                if r.healthy { "healthy" } else { "NOT healthy" },
                ago(t)
            ),
            None => crate::outln!("  polling: no successful poll yet"),
        }
        if let Some(e) = &r.last_error {
            crate::outln!("  last error ({} in a row): {e}", r.consecutive_errors);
        }
        for c in &r.in_flight {
            crate::outln!(
                "  in flight: {} of {} (group {}), for {}",
                c.command,
                c.deployment_id,
                c.deployment_group_id,
                ago(c.started_at).trim_end_matches(" ago")
            );
        }
        if !r.recent.is_empty() {
            crate::outln!("  recent commands:");
            for f in &r.recent {
                let detail = if f.status == "Succeeded" {
                    String::new()
                } else {
                    format!(": {}", f.message)
                };
                crate::outln!(
                    "    {} {} {} {}{detail}",
                    ago(f.finished_at),
                    f.command,
                    f.deployment_id,
                    f.status
                );
            }
        }
    }
    ExitCode::SUCCESS
}
