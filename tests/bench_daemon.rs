//! Daemon figures for the benchmarks (benches/run): idle RSS and CPU of `codedeploy-agent run`
//! against the fake host-commands service, then RSS over a series of deployments. Ignored by
//! default; `benches/run` runs it with `--ignored --nocapture` and reads the `BENCH_JSON` line.
//!
//! Environment: `BENCH_AGENT_BIN` (the binary to measure; default the test build's),
//! `BENCH_IDLE_SECONDS` (default 10), `BENCH_DEPLOYS` (default 3).

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Sandbox;
use support::daemon::{HOST, run_commands, signed, spec_json};
use support::fake_service::FakeService;

const IN_PLACE: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of every thread of `pid` so far, in nanoseconds (`/proc/<pid>/task/*/schedstat`),
/// and the thread count. Threads that already exited are not counted, so this is taken over
/// an idle period in which no thread comes or goes.
fn cpu_ns(pid: u32) -> (u64, usize) {
    let mut total = 0;
    let mut threads = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let path = task.expect("task").path().join("schedstat");
        if let Some(ns) = fs::read_to_string(path).ok().and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        }) {
            total += ns;
            threads += 1;
        }
    }
    (total, threads)
}

/// `utime + stime` of the whole process in clock ticks (`/proc/<pid>/stat`), as a cross-check.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the `)`: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(s: &Sandbox, fake: &FakeService, bin: &PathBuf) -> Agent {
    let creds = fake.credentials();
    // The shipped configuration's polling (`wait_between_runs: 1`) and log level; no jitter.
    s.write_config(&format!(
        ":deploy_control_endpoint: {url}\n:pid_dir: {pid}\n:wait_between_runs: 1\n:startup_jitter_ms: 0\n:codedeploy_test_profile: beta\n:on_premises_config_file: {none}\n:max_revisions: 5\n",
        url = fake.url(),
        pid = s.path().join("pid").display(),
        none = s.path().join("no-onprem.yml").display(),
    ));
    let text = fs::read_to_string(s.config())
        .expect("config")
        .replace(":verbose: true", ":verbose: false");
    fs::write(s.config(), text).expect("config");
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("-c")
        .arg(s.config())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_HOST_IDENTIFIER", HOST)
        .env("AWS_ACCESS_KEY_ID", &creds.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("CODEDEPLOY_LOG")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", s.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(s.path().join("daemon.stderr")).expect("log"));
    // The agent dies with this test process.
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
    Agent(cmd.spawn().expect("spawn the agent"))
}

/// A bundle like a small web application: 1,000 files of 0.5 to 4 KiB in 50 directories and
/// a script on each hook.
fn bundle(s: &Sandbox, rev: usize) -> PathBuf {
    let dest = s.dest().display().to_string();
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\npermissions:\n  - object: {dest}/app\n    mode: 640\n    type:\n      - file\nhooks:\n  ApplicationStop:\n    - location: scripts/hook.sh\n  BeforeInstall:\n    - location: scripts/hook.sh\n  AfterInstall:\n    - location: scripts/hook.sh\n  ApplicationStart:\n    - location: scripts/hook.sh\n  ValidateService:\n    - location: scripts/hook.sh\n"
    );
    let mut files: Vec<(String, String)> = vec![
        ("appspec.yml".into(), appspec),
        (
            "scripts/hook.sh".into(),
            "#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID\"\n".into(),
        ),
    ];
    for i in 0..1000 {
        let len = 512 + (i * 3517 + rev * 7) % 3584;
        let body: String = format!("rev {rev} file {i} ").repeat(len / 14 + 1);
        files.push((format!("app/d{:02}/f{i:04}.txt", i % 50), body));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    s.bundle(&format!("rev{rev}"), &refs)
}

#[test]
#[ignore = "benchmark: run by benches/run"]
fn daemon_idle_and_deployments() {
    if !support::require::openssl() {
        return;
    }
    let bin = std::env::var_os("BENCH_AGENT_BIN").map_or_else(support::bin, PathBuf::from);
    let idle = Duration::from_secs(env_u64("BENCH_IDLE_SECONDS", 10));
    let deploys = usize::try_from(env_u64("BENCH_DEPLOYS", 3)).expect("count");
    let s = Sandbox::new();
    let fake = FakeService::start();
    let agent = start_agent(&s, &fake, &bin);
    let pid = agent.0.id();
    let polled = |n: usize| {
        move |r: &[support::fake_service::Recorded]| {
            r.iter()
                .filter(|r| r.operation == "PollHostCommand")
                .count()
                >= n
        }
    };
    assert!(
        fake.wait_until(Duration::from_secs(30), polled(2)),
        "the agent never polled"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (rss_start, _) = rss_kib(pid);

    // Idle: the shipped polling interval against a service that answers at once (no long
    // poll), which is more often than the real service's long poll lets an agent poll.
    let polls_before = fake.requests_for("PollHostCommand").len();
    let (ns0, threads0) = cpu_ns(pid);
    let ticks0 = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let (ns1, threads1) = cpu_ns(pid);
    let ticks1 = cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let polls = fake.requests_for("PollHostCommand").len() - polls_before;
    let (rss_idle, _) = rss_kib(pid);

    // Deployments, one after the other, through every in-place lifecycle event.
    let mut series = Vec::new();
    let started = Instant::now();
    for d in 0..deploys {
        let b = bundle(&s, d);
        let spec = signed(&spec_json(&format!("d-BENCH{d:04}"), "dg", &b));
        let completes = run_commands(
            &fake,
            &format!("b{d}"),
            &IN_PLACE,
            &spec,
            Duration::from_secs(120),
        );
        assert!(
            completes.iter().all(|c| c.command_status == "Succeeded"),
            "{completes:?}"
        );
        fs::remove_dir_all(s.path().join("bundles").join(format!("rev{d}"))).expect("rm bundle");
        series.push(rss_kib(pid).0);
    }
    let deploy_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(3));
    let (rss_after, hwm) = rss_kib(pid);
    let clk_tck = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let figures = json!({
        "binary": bin.display().to_string(),
        "rss_start_kib": rss_start,
        "rss_idle_kib": rss_idle,
        "rss_after_kib": rss_after,
        "rss_series_kib": series,
        "hwm_kib": hwm,
        "deploys": deploys,
        "deploy_seconds": deploy_seconds,
        "idle_seconds": wall,
        "idle_cpu_ns": ns1 - ns0,
        "idle_cpu_ticks": ticks1 - ticks0,
        "clk_tck": clk_tck,
        "threads": [threads0, threads1],
        "idle_polls": polls,
    });
    println!("BENCH_JSON {figures}");
    drop(agent);
}
