//! Crash consistency (issue 8, item 4): a deployment is cut by SIGKILL at each distinct step,
//! the agent is started again, and the service must see the right result (agent-behaviour.md
//! §4.3: a command cut off while it ran is failed with code 7, exactly once; a result recorded
//! before the kill is sent as recorded), the deployment root's tracking files and the group's
//! cleanup file must be consistent, and the next deployment of the group must succeed.
//!
//! Kill points are made deterministic without timing: the fake service holds the answer to an
//! ack or a complete (after or before applying it), the fake S3 trickles the bundle, hooks wait
//! on a file, and inside unpack and Install the agent's test-only checkpoint
//! (`src/test_pause.rs`, `CODEDEPLOY_AGENT_TEST_PAUSE_AT`) parks the thread and drops a marker.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codedeploy_agent::control::Envelope;
use nix::sys::signal::Signal;
use serde_json::json;
use support::Sandbox;
use support::daemon::{Daemon, HOST, run_commands, signed, spec_json, wait_quiet};
use support::fake_s3::{FakeS3, S3Faults};
use support::fake_service::{Complete, FakeService, Fault, TestCredentials, command};

const T: Duration = Duration::from_secs(60);
const CODE_7: &str = r#"{"error_code":7,"script_name":"","message":"Failed: Failing in-progress lifecycle event after an agent restart.","log":""}"#;
const SUCCESS: &str = r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#;
const DEPLOY: [&str; 4] = [
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "ApplicationStart",
];

fn skip() -> bool {
    !support::require::openssl()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A revision: `files` files `<prefix>NN` under `app/`, installed to `<dest>/app`; hooks log to
/// `<sandbox>/runs`; BeforeInstall waits for `<sandbox>/release` while `<sandbox>/hold` exists.
fn revision(s: &Sandbox, name: &str, prefix: &str, files: usize) -> PathBuf {
    let dir = s.path().display().to_string();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}/app\nhooks:\n  BeforeInstall:\n    - location: scripts/before.sh\n      timeout: 120\n  ApplicationStart:\n    - location: scripts/start.sh\n",
        s.dest().display()
    );
    let before = format!(
        "#!/bin/sh\necho \"BeforeInstall $DEPLOYMENT_ID\" >> {dir}/runs\nif [ -e {dir}/hold ]; then\n  touch {dir}/holding\n  while [ ! -e {dir}/release ]; do sleep 0.1; done\nfi\n"
    );
    let start = format!("#!/bin/sh\necho \"ApplicationStart $DEPLOYMENT_ID\" >> {dir}/runs\n");
    let mut entries: Vec<(String, String)> = vec![
        ("appspec.yml".into(), spec),
        ("scripts/before.sh".into(), before),
        ("scripts/start.sh".into(), start),
    ];
    for i in 0..files {
        entries.push((format!("app/{prefix}{i:02}"), format!("{name} {i}\n")));
    }
    let refs: Vec<(&str, &str)> = entries
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    s.bundle(name, &refs)
}

fn local_file_spec(deployment: &str, bundle: &Path) -> Envelope {
    let mut spec = spec_json(deployment, "dg", bundle);
    spec["Revision"] = json!({"RevisionType": "Local File", "LocalRevision": {
        "Location": bundle.display().to_string(), "BundleType": "tgz"}});
    signed(&spec)
}

fn runs(s: &Sandbox) -> Vec<String> {
    fs::read_to_string(s.path().join("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn completes_for(fake: &FakeService, id: &str) -> Vec<Complete> {
    fake.completes()
        .into_iter()
        .filter(|c| c.host_command_identifier == id)
        .collect()
}

fn tracking_files(s: &Sandbox) -> Vec<String> {
    fs::read_dir(s.root().join("ongoing-deployment"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One kill scenario: the agent runs `DEPLOY[..=at]` of d-1 (commands before `at` normally),
/// `arm` prepares the kill point before command `at` is queued, `reached` says when to kill.
/// Returns the fake, the sandbox and the id of the command that was cut.
struct Scenario {
    s: Sandbox,
    fake: FakeService,
    s3: Option<FakeS3>,
    cut: String,
    extra: String,
    env: Vec<(String, String)>,
}

impl Scenario {
    fn new(with_s3: bool) -> Self {
        let s = Sandbox::new();
        let fake = FakeService::start();
        let s3 = with_s3.then(FakeS3::start);
        let mut extra = String::new();
        let mut env = Vec::new();
        if let Some(s3) = &s3 {
            extra = format!(":s3_endpoint_override: {}\n", s3.url());
            fake.add_credentials(TestCredentials::new("testing", "testing"));
            env.push(("AWS_ACCESS_KEY_ID".into(), "testing".into()));
            env.push(("AWS_SECRET_ACCESS_KEY".into(), "testing".into()));
        }
        Self {
            s,
            fake,
            s3,
            cut: String::new(),
            extra,
            env,
        }
    }

    fn start(&self, more_env: &[(&str, &str)]) -> Daemon {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        env.extend_from_slice(more_env);
        Daemon::start(&self.s, &self.fake, &self.extra, &env)
    }

    /// Runs `DEPLOY[..at]` of `deployment` to success, then queues `DEPLOY[at]` (not waiting).
    fn run_until(&mut self, spec: &Envelope, at: usize) {
        self.run_until_armed(spec, at, |_| {});
    }

    /// [`Scenario::run_until`], calling `arm` on the fake just before the cut command is queued.
    fn run_until_armed(&mut self, spec: &Envelope, at: usize, arm: impl FnOnce(&FakeService)) {
        let done = run_commands(&self.fake, "d1", &DEPLOY[..at], spec, T);
        assert!(
            done.iter().all(|c| c.command_status == "Succeeded"),
            "{done:?}"
        );
        arm(&self.fake);
        let name = DEPLOY[at];
        self.cut = format!("d1-cut-{name}");
        let exec = format!("d1/exec/cut/{name}");
        self.fake.set_spec(&exec, "CodeDeploy", spec.clone());
        self.fake
            .enqueue(HOST, command(&self.cut, name, HOST, &exec));
    }

    fn kill(&self, agent: &mut Daemon) {
        agent.signal(Signal::SIGKILL);
        agent.wait(T).expect("killed");
    }

    /// After the restart: the tracking directory empties (what was owed is delivered).
    fn assert_recovered(&self) {
        wait_for("the tracking files to go", T, || {
            tracking_files(&self.s).is_empty()
        });
    }

    /// The next deployment of the group (a new revision, other file names) succeeds, leaves
    /// exactly its own files in the destination, and a cleanup file listing exactly them.
    fn assert_next_deployment_succeeds(&self, old_prefix: &str) {
        let b = revision(&self.s, "next", "n", 4);
        let next_tgz = self.s.path().join("next.tgz");
        support::tgz(&b, &next_tgz);
        let done = run_commands(
            &self.fake,
            "d2",
            &DEPLOY,
            &local_file_spec("d-2", &next_tgz),
            T,
        );
        assert!(
            done.iter().all(|c| c.command_status == "Succeeded"),
            "{done:?}"
        );
        let mut installed: Vec<String> = fs::read_dir(self.s.dest().join("app"))
            .expect("dest")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        installed.sort();
        assert_eq!(
            installed,
            ["n00", "n01", "n02", "n03"],
            "no {old_prefix}* left"
        );
        let cleanup = fs::read_to_string(self.s.root().join("deployment-instructions/dg-cleanup"))
            .expect("cleanup file");
        let app = self.s.dest().join("app");
        let mut expected: Vec<String> = vec![app.display().to_string()];
        expected.extend(installed.iter().map(|f| app.join(f).display().to_string()));
        let mut recorded: Vec<String> = cleanup.lines().map(str::to_owned).collect();
        recorded.sort();
        expected.sort();
        assert_eq!(
            recorded, expected,
            "the cleanup file lists exactly the install"
        );
        // The agent removes the tracking files once it has heard the service accept.
        self.assert_recovered();
        assert!(runs(&self.s).contains(&"ApplicationStart d-2".to_owned()));
    }

    /// Exactly one final report for the cut command, code 7, once the agent has gone quiet
    /// for longer than its whole report retry schedule.
    fn assert_one_code_7(&self) {
        wait_for("the code-7 report", T, || {
            !completes_for(&self.fake, &self.cut).is_empty()
        });
        wait_quiet(&self.fake, T);
        let c = completes_for(&self.fake, &self.cut);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].command_status, "Failed");
        assert_eq!(
            c[0].diagnostics.as_ref().map(|d| d.payload.as_str()),
            Some(CODE_7)
        );
    }
}

fn local_bundle(sc: &Scenario, files: usize) -> Envelope {
    let b = revision(&sc.s, "first", "f", files);
    let path = sc.s.path().join("first.tgz");
    support::tgz(&b, &path);
    local_file_spec("d-1", &path)
}

#[test]
fn kill_after_the_ack_was_accepted() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 3);
    let mut agent = sc.start(&[]);
    // The service records the ack of the DownloadBundle, then holds its answer.
    sc.run_until_armed(&spec, 0, |fake| {
        fake.inject(
            Some("PutHostCommandAcknowledgement"),
            Fault::AnswerLate(Duration::from_secs(120)),
            1,
        );
    });
    let cut = sc.cut.clone();
    wait_for("the ack", T, || {
        sc.fake
            .acks()
            .iter()
            .any(|a| a.host_command_identifier == cut)
    });
    sc.kill(&mut agent);
    assert!(tracking_files(&sc.s).is_empty(), "nothing started");
    sc.fake.clear_faults();
    let _agent = sc.start(&[]);
    // Nothing ran, so nothing is owed: no report until the service hands the command out
    // again (as it does for a command acknowledged by an agent that went away); then it
    // runs once and is reported once.
    wait_quiet(&sc.fake, T);
    assert!(completes_for(&sc.fake, &cut).is_empty());
    sc.fake.enqueue(
        HOST,
        command(&cut, "DownloadBundle", HOST, "d1/exec/cut/DownloadBundle"),
    );
    wait_for("the redelivered command's report", T, || {
        !completes_for(&sc.fake, &cut).is_empty()
    });
    wait_quiet(&sc.fake, T);
    let c = completes_for(&sc.fake, &cut);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].command_status, "Succeeded");
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_during_the_download() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(true);
    let b = revision(&sc.s, "first", "f", 3);
    // 256 KiB of incompressible bytes trickling at 8 KiB per 100 ms: a 3 s download.
    let mut x: u32 = 0x9e37_79b9;
    let noise: Vec<u8> = (0..256 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    fs::write(b.join("app/f99"), noise).expect("noise");
    let path = sc.s.path().join("first.tgz");
    support::tgz(&b, &path);
    let s3 = sc.s3.take().expect("s3");
    let etag = s3.put("releases", "first.tgz", fs::read(&path).expect("tgz"));
    s3.set_faults(S3Faults {
        trickle: Some((8192, Duration::from_millis(100))),
        ..S3Faults::default()
    });
    let mut spec = spec_json("d-1", "dg", &b);
    spec["Revision"] = json!({"RevisionType": "S3", "S3Revision": {
        "Bucket": "releases", "Key": "first.tgz", "BundleType": "tgz", "ETag": etag}});
    let spec = signed(&spec);
    let mut agent = sc.start(&[]);
    sc.run_until(&spec, 0);
    wait_for("some bytes", T, || s3.bytes_out() >= 32 << 10);
    sc.kill(&mut agent);
    assert_eq!(tracking_files(&sc.s), ["d-1"], "the command was running");
    s3.set_faults(S3Faults::default());
    let _agent = sc.start(&[]);
    sc.assert_one_code_7();
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_in_the_middle_of_unpacking() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 12);
    let marker = sc.s.path().join("paused");
    let marker_s = marker.display().to_string();
    let mut agent = sc.start(&[
        ("CODEDEPLOY_AGENT_TEST_PAUSE_AT", "unpack-entry:8"),
        ("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER", marker_s.as_str()),
    ]);
    sc.run_until(&spec, 0);
    wait_for("the pause in unpack", T, || marker.exists());
    let archive = sc.s.root().join("dg/d-1/deployment-archive");
    assert!(archive.exists(), "unpacking had begun");
    sc.kill(&mut agent);
    let _agent = sc.start(&[]);
    sc.assert_one_code_7();
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_in_the_middle_of_install() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 12);
    let marker = sc.s.path().join("paused");
    let marker_s = marker.display().to_string();
    let mut agent = sc.start(&[
        ("CODEDEPLOY_AGENT_TEST_PAUSE_AT", "install-file:6"),
        ("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER", marker_s.as_str()),
    ]);
    sc.run_until(&spec, 2);
    wait_for("the pause in Install", T, || marker.exists());
    sc.kill(&mut agent);
    // Half an install: every file that exists is in the cleanup file (write-ahead).
    let app = sc.s.dest().join("app");
    let present: Vec<PathBuf> = fs::read_dir(&app)
        .expect("app")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !present.is_empty() && present.len() < 12,
        "{} files",
        present.len()
    );
    let cleanup = fs::read_to_string(sc.s.root().join("deployment-instructions/dg-cleanup"))
        .expect("cleanup file");
    for p in &present {
        assert!(
            cleanup.lines().any(|l| Path::new(l) == p),
            "{} not in the cleanup file",
            p.display()
        );
    }
    let _agent = sc.start(&[]);
    sc.assert_one_code_7();
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_during_a_hook() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 3);
    fs::write(sc.s.path().join("hold"), "").expect("hold");
    let mut agent = sc.start(&[]);
    sc.run_until(&spec, 1);
    let holding = sc.s.path().join("holding");
    wait_for("the hook", T, || holding.exists());
    sc.kill(&mut agent);
    fs::remove_file(sc.s.path().join("hold")).expect("unhold");
    let _agent = sc.start(&[]);
    sc.assert_one_code_7();
    sc.assert_recovered();
    assert_eq!(runs(&sc.s), ["BeforeInstall d-1"], "not run again");
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_before_the_complete_is_accepted() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 3);
    let mut agent = sc.start(&[]);
    // The result is recorded; the complete hangs and is not applied.
    sc.run_until_armed(&spec, 3, |fake| {
        fake.time_out_completes(1, Duration::from_secs(120));
    });
    let result = sc.s.root().join("ongoing-deployment/d-1.result");
    wait_for("the recorded result", T, || result.exists());
    // Wait until the complete reached the fake, so the kill is really in the middle of the call.
    wait_for("the complete to arrive", T, || {
        sc.fake.has_arrived("PutHostCommandComplete", &sc.cut)
    });
    sc.kill(&mut agent);
    assert!(completes_for(&sc.fake, &sc.cut).is_empty());
    sc.fake.clear_faults();
    let _agent = sc.start(&[]);
    // The recorded result is sent, not a code 7, and the hook did not run again.
    wait_for("the report", T, || {
        !completes_for(&sc.fake, &sc.cut).is_empty()
    });
    wait_quiet(&sc.fake, T);
    let c = completes_for(&sc.fake, &sc.cut);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].command_status, "Succeeded");
    assert_eq!(
        c[0].diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(SUCCESS)
    );
    assert_eq!(
        runs(&sc.s)
            .iter()
            .filter(|l| *l == "ApplicationStart d-1")
            .count(),
        1
    );
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn kill_after_the_complete_was_accepted() {
    if skip() {
        return;
    }
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 3);
    let mut agent = sc.start(&[]);
    // The service applies the complete, then holds its answer: the agent never hears.
    sc.run_until_armed(&spec, 3, |fake| {
        fake.inject(
            Some("PutHostCommandComplete"),
            Fault::AnswerLate(Duration::from_secs(120)),
            1,
        );
    });
    let cut = sc.cut.clone();
    wait_for("the accepted complete", T, || {
        !completes_for(&sc.fake, &cut).is_empty()
    });
    sc.kill(&mut agent);
    assert_eq!(
        tracking_files(&sc.s).len(),
        2,
        "the tracking file and the recorded result stay until the agent hears back"
    );
    sc.fake.clear_faults();
    let _agent = sc.start(&[]);
    // The one window the agent cannot close alone: it re-sends the recorded result. The
    // service sees the same result twice, never a different one or a code 7.
    sc.assert_recovered();
    let c = completes_for(&sc.fake, &cut);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[0], c[1]);
    assert_eq!(c[0].command_status, "Succeeded");
    assert_eq!(
        runs(&sc.s)
            .iter()
            .filter(|l| *l == "ApplicationStart d-1")
            .count(),
        1
    );
    sc.assert_next_deployment_succeeds("f");
}

/// Kills the agent at the `command_state` transition `point` of the last command of d-1
/// (ApplicationStart, the 4th command: the 4th call of each point), restarts it, and returns
/// the scenario with the cut command's id, once the agent has gone quiet about it.
fn kill_at_transition(point: &str) -> (Scenario, Daemon) {
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 3);
    let marker = sc.s.path().join("paused");
    let marker_s = marker.display().to_string();
    let at = format!("{point}:4");
    let mut agent = sc.start(&[
        ("CODEDEPLOY_AGENT_TEST_PAUSE_AT", at.as_str()),
        ("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER", marker_s.as_str()),
    ]);
    sc.run_until(&spec, 3);
    wait_for(&format!("the pause at {at}"), T, || marker.exists());
    sc.kill(&mut agent);
    let agent = sc.start(&[]);
    (sc, agent)
}

/// Waits until the service has `n` completes for the cut command and then stays quiet about it
/// for longer than the agent's whole first retry round.
fn assert_reports(sc: &Scenario, n: usize) -> Vec<Complete> {
    wait_for("the reports", T, || {
        completes_for(&sc.fake, &sc.cut).len() >= n
    });
    sc.assert_recovered();
    std::thread::sleep(Duration::from_secs(2));
    let c = completes_for(&sc.fake, &sc.cut);
    assert_eq!(c.len(), n, "{c:?}");
    c
}

#[test]
fn kill_at_every_command_state_transition() {
    if skip() {
        return;
    }
    // Running: the tracking file is written, nothing ran -> one code 7 after the restart.
    let (sc, _agent) = kill_at_transition("state-running");
    let c = assert_reports(&sc, 1);
    assert_eq!(
        c[0].diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(CODE_7)
    );
    assert!(!runs(&sc.s).contains(&"ApplicationStart d-1".to_owned()));
    sc.assert_next_deployment_succeeds("f");
    drop(_agent);

    // Finished: the result is recorded, not yet sent -> the recorded result, once.
    let (sc, _agent) = kill_at_transition("state-finished");
    let c = assert_reports(&sc, 1);
    assert_eq!(c[0].command_status, "Succeeded");
    assert_eq!(
        c[0].diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(SUCCESS)
    );
    sc.assert_next_deployment_succeeds("f");
    drop(_agent);

    // Accepting: the service accepted the report, the tracking file is gone, the result not
    // yet -> nothing more is sent (before the fix: a second report, a code 7).
    let (sc, _agent) = kill_at_transition("state-accepting");
    let c = assert_reports(&sc, 1);
    assert_eq!(c[0].command_status, "Succeeded");
    sc.assert_next_deployment_succeeds("f");
    drop(_agent);

    // Idle: both files are gone -> nothing more is sent.
    let (sc, _agent) = kill_at_transition("state-idle");
    let c = assert_reports(&sc, 1);
    assert_eq!(c[0].command_status, "Succeeded");
    sc.assert_next_deployment_succeeds("f");
}

/// Issue 13 item 4: a second SIGTERM while the engine is in the middle of a long unpack or
/// install (every entry or file slowed to 100 ms by `CODEDEPLOY_AGENT_TEST_SLOW_AT`: a 30 s
/// phase) ends the agent within seconds; the command is left interrupted and the next start
/// reports it exactly once (code 7).
fn second_sigterm_in_the_middle_of(point: &str, at: usize) {
    let mut sc = Scenario::new(false);
    let spec = local_bundle(&sc, 300);
    let marker = sc.s.path().join("slowed");
    let marker_s = marker.display().to_string();
    let slow = format!("{point}:100");
    let mut agent = sc.start(&[
        ("CODEDEPLOY_AGENT_TEST_SLOW_AT", slow.as_str()),
        ("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER", marker_s.as_str()),
    ]);
    sc.run_until(&spec, at);
    wait_for(&format!("the engine in {point}"), T, || marker.exists());
    agent.signal(Signal::SIGTERM);
    wait_for("the graceful stop", T, || {
        agent.log_text().contains("shutdown requested")
    });
    agent.signal(Signal::SIGTERM);
    let escalated = Instant::now();
    agent
        .wait(Duration::from_secs(60))
        .expect("the agent exits after the escalation");
    assert!(
        escalated.elapsed() < Duration::from_secs(6),
        "the escalated stop took {:?}",
        escalated.elapsed()
    );
    assert!(
        agent
            .log_text()
            .contains("the command was interrupted by the agent's stop"),
        "{}",
        agent.log_text()
    );
    assert!(completes_for(&sc.fake, &sc.cut).is_empty());
    let _agent = sc.start(&[]);
    sc.assert_one_code_7();
    sc.assert_recovered();
    sc.assert_next_deployment_succeeds("f");
}

#[test]
fn a_second_sigterm_stops_a_long_unpack_within_seconds() {
    if skip() {
        return;
    }
    second_sigterm_in_the_middle_of("unpack-entry", 0);
}

#[test]
fn a_second_sigterm_stops_a_long_install_within_seconds() {
    if skip() {
        return;
    }
    second_sigterm_in_the_middle_of("install-file", 2);
}
