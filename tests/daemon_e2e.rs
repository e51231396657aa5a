//! The real daemon (`codedeploy-agent run`) against the fake host-commands service: full
//! deployments, the service-facing items of agent-behaviour.md §10.2, faults, kills and
//! shutdowns. Specs are PKCS7-signed at test time with a throw-away CA (openssl).

mod support;

use std::fs;
use std::time::{Duration, Instant};

use codedeploy_agent::control::Envelope;
use nix::sys::signal::Signal;
use serde_json::Value;
use support::Sandbox;
use support::daemon::{Daemon, HOST, run_commands, signed, spec_json, wait_quiet};
use support::fake_service::{Complete, FakeService, Fault, command};

const T: Duration = Duration::from_secs(60);
const SUCCESS: &str = r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#;
const IN_PLACE: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

fn payload(c: &Complete) -> Value {
    serde_json::from_str(&c.diagnostics.as_ref().expect("diagnostics").payload).expect("json")
}

fn skip() -> bool {
    !support::require::openssl()
}

/// A bundle whose hooks log what ran, from which revision.
fn bundle(s: &Sandbox, name: &str, rev: &str, start: &str) -> std::path::PathBuf {
    let dest = s.dest().display().to_string();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n  BeforeInstall:\n    - location: scripts/hook.sh\n  AfterInstall:\n    - location: scripts/hook.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n      timeout: 30\n  ValidateService:\n    - location: scripts/hook.sh\n"
    );
    let stop = format!("#!/bin/sh\necho \"stop from {rev}\"\n");
    let hook = format!(
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT of {rev} in $DEPLOYMENT_ID ($DEPLOYMENT_GROUP_NAME)\"\n"
    );
    s.bundle(
        name,
        &[
            ("appspec.yml", &spec),
            ("app/version.txt", rev),
            ("scripts/stop.sh", &stop),
            ("scripts/hook.sh", &hook),
            ("scripts/start.sh", start),
        ],
    )
}

#[test]
fn a_full_in_place_deployment_then_a_second_one() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let b1 = bundle(&s, "v1", "v1", "#!/bin/sh\necho started v1\n");
    let completes = run_commands(
        &fake,
        "d1",
        &IN_PLACE,
        &signed(&spec_json("d-ONE", "dg", &b1)),
        T,
    );
    for c in &completes {
        assert_eq!(c.command_status, "Succeeded", "{c:?}");
        let d = c.diagnostics.as_ref().expect("diagnostics");
        assert_eq!((d.format.as_str(), d.payload.as_str()), ("JSON", SUCCESS));
    }
    assert_eq!(
        fs::read_to_string(s.dest().join("app/version.txt")).expect("installed"),
        "v1"
    );
    // First deployment: ApplicationStop has no previous revision and is acked as a noop.
    let acks = fake.acks();
    let stop_ack = acks
        .iter()
        .find(|a| a.host_command_identifier.contains("ApplicationStop"))
        .expect("ack");
    assert_eq!(
        stop_ack.diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(r#"{"IsCommandNoop":true}"#)
    );
    let install_ack = acks
        .iter()
        .find(|a| a.host_command_identifier.ends_with("-Install"))
        .expect("ack");
    assert_eq!(
        install_ack.diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(r#"{"IsCommandNoop":false}"#)
    );

    // The second deployment runs the first revision's ApplicationStop, logged in its own dir.
    let b2 = bundle(&s, "v2", "v2", "#!/bin/sh\necho started v2\n");
    let completes = run_commands(
        &fake,
        "d2",
        &IN_PLACE,
        &signed(&spec_json("d-TWO", "dg", &b2)),
        T,
    );
    assert!(
        completes.iter().all(|c| c.command_status == "Succeeded"),
        "{completes:?}"
    );
    assert_eq!(
        fs::read_to_string(s.dest().join("app/version.txt")).expect("installed"),
        "v2"
    );
    let log = fs::read_to_string(s.root().join("dg/d-TWO/logs/scripts.log")).expect("scripts.log");
    assert!(log.contains("[stdout]stop from v1"), "{log}");
    assert!(
        log.contains("[stdout]BeforeInstall of v2 in d-TWO (dg-name)"),
        "{log}"
    );

    // Every request carried the agent version header and the default target prefix (item 28).
    for r in fake.requests() {
        assert!(
            r.header("x-amz-codedeploy-agent-version").is_some(),
            "{}",
            r.operation
        );
        assert!(
            r.target.starts_with("CodeDeployCommandService_v20141006."),
            "{}",
            r.target
        );
        assert!(
            r.credential_scope()
                .is_some_and(|s| s.ends_with("/us-east-1/codedeploy-commands/aws4_request"))
        );
    }
    // Nothing is left in flight once the last report was accepted.
    let in_flight = || {
        fs::read_dir(s.root().join("ongoing-deployment"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(in_flight(), 0);
}

#[test]
fn script_failures_spec_errors_and_ack_answers() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let b = bundle(&s, "bad", "bad", "#!/bin/sh\necho about to fail\nexit 3\n");
    let spec = signed(&spec_json("d-BAD", "dg", &b));
    let completes = run_commands(
        &fake,
        "f",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &spec,
        T,
    );
    let failed = &completes[2];
    assert_eq!(failed.command_status, "Failed");
    let p = payload(failed);
    assert_eq!(p["error_code"], 4);
    assert_eq!(p["script_name"], "scripts/start.sh");
    assert_eq!(
        p["message"],
        "Script at specified location: scripts/start.sh failed with exit code 3"
    );
    let log = p["log"].as_str().expect("log");
    assert!(
        log.contains(
            "LifecycleEvent - ApplicationStart\nScript - scripts/start.sh\n[stdout]about to fail\n"
        ),
        "{log}"
    );
    // Exactly one report for the failed command (never the v1 double report).
    assert_eq!(
        fake.completes()
            .iter()
            .filter(|c| c.host_command_identifier == failed.host_command_identifier)
            .count(),
        1
    );

    // Item 20: wrong deployment system; item 21: TEXT/JSON in the daemon; tampered spec.
    let cases: Vec<(&str, &str, Envelope, &str)> = vec![
        (
            "sys",
            "Foo",
            spec.clone(),
            "Deployment System mismatch: CodeDeploy != Foo",
        ),
        (
            "text",
            "CodeDeploy",
            Envelope {
                format: "TEXT/JSON".into(),
                payload: spec_json("d-X", "dg", &b).to_string(),
            },
            "Unsupported DeploymentSpecification format: TEXT/JSON",
        ),
        (
            "tampered",
            "CodeDeploy",
            Envelope {
                format: "PKCS7/JSON".into(),
                payload: support::signing::tamper(&spec.payload),
            },
            "PKCS7 signature verification failed",
        ),
    ];
    for (id, system, envelope, message) in cases {
        let execution = format!("x/y/z/{id}");
        fake.set_spec(&execution, system, envelope);
        fake.enqueue(HOST, command(id, "Install", HOST, &execution));
        let n = fake.completes().len();
        let all = fake.wait_for_completes(n + 1, T);
        let c = all
            .iter()
            .find(|c| c.host_command_identifier == id)
            .expect("complete");
        assert_eq!(c.command_status, "Failed");
        let p = payload(c);
        assert_eq!(p["error_code"], 5);
        assert!(
            p["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message)),
            "{p}"
        );
        assert!(
            !fake.acks().iter().any(|a| a.host_command_identifier == id),
            "no ack before a spec failure"
        );
    }

    // Item 18: the ack says Succeeded → no Complete; the ack says Failed on a noop → Succeeded.
    fake.set_ack_status("acked-done", Some("Succeeded"));
    fake.set_spec("a/b/c/done", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("acked-done", "AfterInstall", HOST, "a/b/c/done"),
    );
    fake.set_ack_status("acked-failed", Some("Failed"));
    fake.set_spec("a/b/c/failed", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("acked-failed", "BeforeAllowTraffic", HOST, "a/b/c/failed"),
    );
    assert!(wait_complete(&fake, "acked-failed"));
    let c = fake
        .completes()
        .into_iter()
        .find(|c| c.host_command_identifier == "acked-failed")
        .expect("complete");
    assert_eq!(c.command_status, "Succeeded");
    assert_eq!(payload(&c)["message"], "Succeeded: CompletedNoopCommand");
    // Quiet for longer than the whole report retry schedule: no report for acked-done ever.
    wait_quiet(&fake, T);
    assert!(!fake_has_complete(&fake, "acked-done"));
}

fn fake_has_complete(fake: &FakeService, id: &str) -> bool {
    fake.completes()
        .iter()
        .any(|c| c.host_command_identifier == id)
}

/// Waits until the fake accepted a final report for `id` (the predicate runs under the fake's
/// lock, so it reads the records it is given).
fn wait_complete(fake: &FakeService, id: &str) -> bool {
    let needle = format!("\"HostCommandIdentifier\":\"{id}\"");
    fake.wait_until(T, |records| {
        records.iter().any(|r| {
            r.operation == "PutHostCommandComplete"
                && r.status == 200
                && r.raw_body.contains(&needle)
        })
    })
}

#[test]
fn throttling_and_server_errors_lose_nothing_and_run_nothing_twice() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    fake.inject(Some("PollHostCommand"), Fault::Throttle, 2);
    fake.inject(Some("PutHostCommandComplete"), Fault::ServerError, 2);
    fake.inject(Some("GetDeploymentSpecification"), Fault::Drop, 1);
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let counter = s.path().join("runs");
    let start = format!("#!/bin/sh\necho x >> {}\n", counter.display());
    let b = bundle(&s, "b", "b", &start);
    let spec = signed(&spec_json("d-T", "dg", &b));
    let started = Instant::now();
    let completes = run_commands(
        &fake,
        "t",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &spec,
        Duration::from_secs(120),
    );
    assert!(
        completes.iter().all(|c| c.command_status == "Succeeded"),
        "{completes:?}"
    );
    assert_eq!(
        fs::read_to_string(&counter).expect("ran").lines().count(),
        1,
        "ApplicationStart ran exactly once"
    );
    for c in &completes {
        assert_eq!(
            fake.completes()
                .iter()
                .filter(|x| x.host_command_identifier == c.host_command_identifier)
                .count(),
            1
        );
    }
    // The throttled polls were backed off (the AWS schedule starts at 10 s; the gate at 5 s).
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sigkill_during_a_hook_is_reported_once_with_code_7_after_restart() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let marker = s.path().join("hook-started");
    let start = format!("#!/bin/sh\ntouch {}\nsleep 30\n", marker.display());
    let b = bundle(&s, "slow", "slow", &start);
    let spec = signed(&spec_json("d-KILL", "dg", &b));
    run_commands(&fake, "k", &["DownloadBundle", "Install"], &spec, T);
    fake.set_spec("k/exec/start", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("k-start", "ApplicationStart", HOST, "k/exec/start"),
    );
    let deadline = Instant::now() + T;
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(marker.exists(), "the hook started");
    agent.signal(Signal::SIGKILL);
    agent.wait(T).expect("killed");
    assert!(!fake_has_complete(&fake, "k-start"));

    let _again = Daemon::start(&s, &fake, "", &[]);
    assert!(wait_complete(&fake, "k-start"));
    let c = fake
        .completes()
        .into_iter()
        .find(|c| c.host_command_identifier == "k-start")
        .expect("complete");
    assert_eq!(c.command_status, "Failed");
    assert_eq!(
        c.diagnostics.as_ref().map(|d| d.payload.as_str()),
        Some(
            r#"{"error_code":7,"script_name":"","message":"Failed: Failing in-progress lifecycle event after an agent restart.","log":""}"#
        )
    );
    assert_eq!(
        wait_quiet(&fake, T)
            .iter()
            .filter(|c| c.host_command_identifier == "k-start")
            .count(),
        1
    );
    // The next deployment of the group works.
    let b2 = bundle(&s, "ok", "ok", "#!/bin/sh\necho fine\n");
    let completes = run_commands(
        &fake,
        "after",
        &IN_PLACE,
        &signed(&spec_json("d-AFTER", "dg", &b2)),
        T,
    );
    assert!(
        completes.iter().all(|c| c.command_status == "Succeeded"),
        "{completes:?}"
    );
}

#[test]
fn sigterm_lets_a_running_hook_finish_and_report() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let marker = s.path().join("hook-started");
    let start = format!(
        "#!/bin/sh\ntouch {}\nsleep 2\necho finished\n",
        marker.display()
    );
    let b = bundle(&s, "term", "term", &start);
    let spec = signed(&spec_json("d-TERM", "dg", &b));
    run_commands(&fake, "s", &["DownloadBundle", "Install"], &spec, T);
    fake.set_spec("s/exec/start", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("s-start", "ApplicationStart", HOST, "s/exec/start"),
    );
    let deadline = Instant::now() + T;
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.signal(Signal::SIGTERM);
    let status = agent.wait(T).expect("exits");
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    let c = fake
        .completes()
        .into_iter()
        .find(|c| c.host_command_identifier == "s-start")
        .expect("reported before exit");
    assert_eq!(c.command_status, "Succeeded");
}

#[test]
fn host_mismatch_and_empty_hooks() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    // Item 19: not our host: no spec request, no ack, no complete.
    fake.enqueue(
        HOST,
        command(
            "other",
            "Install",
            "arn:aws:ec2:us-east-1:1:instance/i-someoneelse",
            "o/t/h/er",
        ),
    );
    // Item 6: a null hook entry is ignored: acked as a noop, completed Succeeded.
    let dest = s.dest().display().to_string();
    let spec_text = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: a.txt\n    destination: {dest}\nhooks:\n  ApplicationStart:\n"
    );
    let b = s.bundle("empty", &[("appspec.yml", &spec_text), ("a.txt", "a")]);
    let spec = signed(&spec_json("d-EMPTY", "dg", &b));
    let completes = run_commands(
        &fake,
        "e",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &spec,
        T,
    );
    assert!(completes.iter().all(|c| c.command_status == "Succeeded"));
    let ack = fake
        .acks()
        .into_iter()
        .find(|a| a.host_command_identifier.ends_with("ApplicationStart"))
        .expect("ack");
    assert_eq!(
        ack.diagnostics.map(|d| d.payload),
        Some(r#"{"IsCommandNoop":true}"#.to_owned())
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.raw_body.contains("o/t/h/er"))
    );
    assert!(
        !fake
            .acks()
            .iter()
            .any(|a| a.host_command_identifier == "other")
    );
}

/// A bundle whose every hook says which revision it came from.
fn traffic_bundle(s: &Sandbox, rev: &str) -> std::path::PathBuf {
    let dest = s.dest().display().to_string();
    let events = [
        "BeforeBlockTraffic",
        "AfterBlockTraffic",
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    ];
    let mut spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/bg\nhooks:\n"
    );
    for e in events {
        spec.push_str(&format!("  {e}:\n    - location: scripts/say.sh\n"));
    }
    let say = format!("#!/bin/sh\necho \"$LIFECYCLE_EVENT from {rev}\"\n");
    s.bundle(
        &format!("bg-{rev}"),
        &[
            ("appspec.yml", &spec),
            ("app/rev.txt", rev),
            ("scripts/say.sh", &say),
        ],
    )
}

#[test]
fn blue_green_and_rollback_use_the_right_revisions() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let bg = |id: &str, rev: &str, creator: &str| {
        let mut spec = spec_json(id, "bg", &traffic_bundle(&s, rev));
        spec["DeploymentType"] = "BLUE_GREEN".into();
        spec["DeploymentCreator"] = creator.into();
        signed(&spec)
    };
    // v1 on a replacement instance: the in-place sequence, then the allow-traffic hooks.
    let replacement = [
        "DownloadBundle",
        "BeforeInstall",
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    ];
    let c = run_commands(&fake, "v1", &replacement, &bg("d-BG1", "v1", "user"), T);
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    // v2 downloaded (most recent) but never installed (v1 stays last successful).
    let c = run_commands(
        &fake,
        "v2",
        &["DownloadBundle"],
        &bg("d-BG2", "v2", "user"),
        T,
    );
    assert_eq!(c[0].command_status, "Succeeded");
    // An automatic rollback on this (original) instance: block-traffic hooks come from the
    // most recent revision, allow-traffic hooks from the last successful one (§2.2).
    let rollback = bg("d-RB", "rb", "codeDeployRollback");
    let c = run_commands(
        &fake,
        "rb",
        &[
            "BeforeBlockTraffic",
            "AfterBlockTraffic",
            "ApplicationStop",
            "BeforeAllowTraffic",
            "AfterAllowTraffic",
        ],
        &rollback,
        T,
    );
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    let log = fs::read_to_string(s.root().join("bg/d-RB/logs/scripts.log")).expect("scripts.log");
    for line in [
        "[stdout]BeforeBlockTraffic from v2",
        "[stdout]AfterBlockTraffic from v2",
        "[stdout]ApplicationStop from v1",
        "[stdout]BeforeAllowTraffic from v1",
        "[stdout]AfterAllowTraffic from v1",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}

#[test]
fn a_command_delivered_twice_while_running_runs_once() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let counter = s.path().join("runs");
    let start = format!("#!/bin/sh\necho x >> {}\nsleep 2\n", counter.display());
    let b = bundle(&s, "twice", "twice", &start);
    let spec = signed(&spec_json("d-TWICE", "dg", &b));
    run_commands(&fake, "w", &["DownloadBundle", "Install"], &spec, T);
    fake.set_spec("w/exec/again", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("w-start", "ApplicationStart", HOST, "w/exec/again"),
    );
    let deadline = Instant::now() + T;
    while !counter.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The service hands out the same command again while it runs.
    fake.enqueue(
        HOST,
        command("w-start", "ApplicationStart", HOST, "w/exec/again"),
    );
    assert!(wait_complete(&fake, "w-start"));
    let completes = wait_quiet(&fake, T);
    assert_eq!(
        fs::read_to_string(&counter).expect("ran").lines().count(),
        1
    );
    assert_eq!(
        completes
            .iter()
            .filter(|c| c.host_command_identifier == "w-start")
            .count(),
        1
    );
}

#[test]
fn a_second_sigterm_stops_hooks_and_the_next_start_reports_exactly_once() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let marker = s.path().join("hook-started");
    let start = format!(
        "#!/bin/sh\ntrap '' TERM\ntouch {}\nwhile true; do sleep 1; done\n",
        marker.display()
    );
    let b = bundle(&s, "stubborn", "stubborn", &start);
    let spec = signed(&spec_json("d-ESC", "dg", &b));
    run_commands(&fake, "x", &["DownloadBundle", "Install"], &spec, T);
    fake.set_spec("x/exec/start", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("x-start", "ApplicationStart", HOST, "x/exec/start"),
    );
    let deadline = Instant::now() + T;
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.signal(Signal::SIGTERM);
    // The second TERM only after the agent has taken the first (tokio merges deliveries not
    // yet polled, so a second TERM sent too early is swallowed and the stop stays graceful).
    let deadline = Instant::now() + T;
    while !agent.log_text().contains("shutdown requested") {
        assert!(
            Instant::now() < deadline,
            "no shutdown log line:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.signal(Signal::SIGTERM);
    let started = Instant::now();
    agent
        .wait(Duration::from_secs(30))
        .expect("the agent exits after the escalation");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // The hook's process group is gone.
    let out = std::process::Command::new("pgrep")
        .args(["-f", &marker.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        out.stdout.is_empty(),
        "hook still running: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Whatever was not reported before the exit is reported by the next start; once in all.
    let _again = Daemon::start(&s, &fake, "", &[]);
    assert!(wait_complete(&fake, "x-start"));
    let all: Vec<_> = wait_quiet(&fake, T)
        .into_iter()
        .filter(|c| c.host_command_identifier == "x-start")
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].command_status, "Failed");
}

#[test]
fn rotated_instance_credentials_are_used_without_a_restart() {
    if skip() {
        return;
    }
    use support::fake_imds::FakeImds;
    use support::fake_service::TestCredentials;
    let s = Sandbox::new();
    let fake = FakeService::start();
    let imds = FakeImds::start();
    // Instance-profile credentials inside the agent's 5-minute refresh window.
    imds.rotate_credentials("ASIAONE", Duration::from_secs(240));
    fake.add_credentials(
        TestCredentials::new("ASIAONE", "secret-ASIAONE").with_session_token("session-ASIAONE"),
    );
    let url = imds.url();
    let _agent = Daemon::start(
        &s,
        &fake,
        ":codedeploy_test_profile: prod\n",
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "false"),
        ],
    );
    let b = bundle(&s, "rot", "rot", "#!/bin/sh\necho hi\n");
    let spec = signed(&spec_json("d-ROT", "dg", &b));
    let c = run_commands(&fake, "r1", &["DownloadBundle"], &spec, T);
    assert_eq!(c[0].command_status, "Succeeded");
    // Rotate: the old key stops working at the service.
    imds.rotate_credentials("ASIATWO", Duration::from_secs(3600));
    fake.add_credentials(
        TestCredentials::new("ASIATWO", "secret-ASIATWO").with_session_token("session-ASIATWO"),
    );
    fake.revoke_credentials("ASIAONE");
    let c = run_commands(&fake, "r2", &["Install", "ApplicationStart"], &spec, T);
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    let keys: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.access_key.clone())
        .collect();
    assert!(
        keys.contains(&"ASIAONE".to_owned()) && keys.contains(&"ASIATWO".to_owned()),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k == support::fake_service::ACCESS_KEY),
        "environment credentials are not used in prod"
    );
}

#[test]
fn an_s3_revision_deploys_through_the_daemon() {
    if skip() {
        return;
    }
    let Some(moto) = support::moto::Moto::start() else {
        return;
    };
    let s = Sandbox::new();
    let fake = FakeService::start();
    // The bundle as a tgz in S3, with its top directory (stripped at unpack).
    let b = bundle(
        &s,
        "s3app",
        "s3",
        "#!/bin/sh\necho \"from $BUNDLE_BUCKET/$BUNDLE_KEY\"\n",
    );
    let tgz = s.path().join("bundle.tgz");
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(b.parent().expect("parent"))
        .arg("s3app")
        .status()
        .expect("tar");
    assert!(ok.success());
    moto.create_bucket("releases");
    let (etag, _) = moto.put_file("releases", "app/bundle.tgz", &tgz);
    let moto_url = moto.url();
    let _agent = Daemon::start(
        &s,
        &fake,
        &format!(":s3_endpoint_override: {moto_url}\n"),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    // The fake service must accept the same (environment) credentials the S3 client uses.
    fake.add_credentials(support::fake_service::TestCredentials::new(
        "testing", "testing",
    ));
    let mut spec = spec_json("d-S3", "dg", &b);
    spec["Revision"] = serde_json::json!({"RevisionType": "S3", "S3Revision": {
        "Bucket": "releases", "Key": "app/bundle.tgz", "BundleType": "tgz", "ETag": etag}});
    let c = run_commands(
        &fake,
        "s3",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &signed(&spec),
        T,
    );
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    assert_eq!(
        fs::read_to_string(s.dest().join("app/version.txt")).expect("installed"),
        "s3"
    );
    let log = fs::read_to_string(s.root().join("dg/d-S3/logs/scripts.log")).expect("log");
    assert!(
        log.contains("[stdout]from releases/app/bundle.tgz"),
        "{log}"
    );
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .expect("send");
    let mut text = String::new();
    sock.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn status_healthz_and_metrics() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut agent = Daemon::start(
        &s,
        &fake,
        &format!(":health_endpoint: 127.0.0.1:{port}\n"),
        &[],
    );
    let b = bundle(&s, "st", "st", "#!/bin/sh\necho hi\n");
    let c = run_commands(
        &fake,
        "st",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &signed(&spec_json("d-ST", "dg", &b)),
        T,
    );
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");

    let (code, body) = http_get(port, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // The last report is counted once the agent has the service's answer: poll briefly.
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (code, body) = http_get(port, "/metrics");
        assert_eq!(code, 200);
        metrics = body;
        if metrics.contains("command=\"ApplicationStart\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for needle in [
        "codedeploy_agent_commands_total{command=\"Install\",result=\"Succeeded\"} 1",
        "codedeploy_agent_commands_total{command=\"ApplicationStart\",result=\"Succeeded\"} 1",
        "codedeploy_agent_files_installed_total 1",
        "codedeploy_agent_hook_event_duration_seconds_count 1",
        "codedeploy_agent_healthy 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (_, status) = http_get(port, "/status");
    let v: Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v["recent"][0]["command"], "ApplicationStart");
    assert_eq!(v["recent"][0]["deployment_id"], "d-ST");

    let status_cmd = |json: bool| {
        let mut cmd = std::process::Command::new(support::bin());
        cmd.arg("status").arg("-c").arg(s.config());
        if json {
            cmd.arg("--json");
        }
        support::Run::from(cmd.output().expect("status"))
    };
    let out = status_cmd(false);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "The AWS CodeDeploy agent is running as PID {}",
            agent.pid()
        )),
        "{}",
        out.stdout
    );
    let out = status_cmd(true);
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["running"], true);

    agent.signal(Signal::SIGTERM);
    assert!(agent.wait(T).expect("exits").success());
    let out = status_cmd(false);
    assert_eq!(out.code, 3);
    assert!(out.stdout.contains("No AWS CodeDeploy agent running"));
}

fn reject(status: u16, code: &str, message: &str) -> Fault {
    Fault::Reject {
        status,
        code: code.into(),
        message: message.into(),
    }
}

/// Issue 13 item 2: a final report meets a proxy's HTML page, a 408, an expired and a rotated
/// credential (retried until accepted, reported once), then a definitive `ClientException`
/// (given up at once, logged with its code, tracking files removed); the next command still
/// works.
#[test]
fn report_errors_are_retried_unless_the_service_definitively_rejects_them() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let agent = Daemon::start(&s, &fake, "", &[]);
    let b = bundle(&s, "b", "b", "#!/bin/sh\necho started\n");
    let spec = signed(&spec_json("d-E", "dg", &b));
    for fault in [
        Fault::Html(502),
        reject(408, "RequestTimeout", "request timed out"),
        reject(
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        reject(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
    ] {
        fake.inject(Some("PutHostCommandComplete"), fault, 1);
    }
    let done = run_commands(&fake, "e", &["DownloadBundle"], &spec, T);
    assert_eq!(done[0].command_status, "Succeeded", "{done:?}");
    let refused = fake.requests_for("PutHostCommandComplete");
    assert_eq!(
        refused.iter().map(|r| r.status).collect::<Vec<_>>(),
        [502, 408, 400, 400, 200],
        "every transient refusal was retried"
    );
    let tracking = s.root().join("ongoing-deployment");
    let empty = || {
        fs::read_dir(&tracking)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    };
    assert!(fake.wait_until(T, |_| empty()), "tracking files removed");

    // Definitive: the service no longer knows the command.
    fake.inject(
        Some("PutHostCommandComplete"),
        reject(400, "ClientException", "The host command does not exist"),
        1,
    );
    let id = "e-1-Install";
    fake.set_spec("e/exec/1/Install", "CodeDeploy", spec.clone());
    fake.enqueue(HOST, command(id, "Install", HOST, "e/exec/1/Install"));
    let needle = format!("\"HostCommandIdentifier\":\"{id}\"");
    assert!(fake.wait_until(T, |records| {
        records
            .iter()
            .any(|r| r.operation == "PutHostCommandComplete" && r.raw_body.contains(&needle))
    }));
    assert!(
        fake.wait_until(T, |_| empty()),
        "a rejected report's files go too"
    );
    assert!(fake.wait_until(T, |_| agent.log_text().contains(
        "the service definitively rejected the final report (ClientException)"
    )));
    // Not retried: the agent polls on, and the rejected report was sent exactly once.
    let polls = fake.requests_for("PollHostCommand").len();
    assert!(fake.wait_until(T, |r| {
        r.iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls + 3
    }));
    assert_eq!(
        fake.requests_for("PutHostCommandComplete")
            .iter()
            .filter(|r| r.raw_body.contains(&needle))
            .count(),
        1
    );
}

/// Issue 13 item 2: the service's clock is 15 minutes ahead. The first signed request is
/// refused as expired; the agent takes the offset from the answer's `Date` header and every
/// later request (poll, spec, ack, report) is accepted.
#[test]
fn a_clock_skew_refusal_corrects_the_signing_clock() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    fake.set_clock_offset(900);
    let agent = Daemon::start(&s, &fake, "", &[]);
    let b = bundle(&s, "b", "b", "#!/bin/sh\necho started\n");
    let spec = signed(&spec_json("d-C", "dg", &b));
    let done = run_commands(&fake, "c", &["DownloadBundle"], &spec, T);
    assert_eq!(done[0].command_status, "Succeeded", "{done:?}");
    let errors: Vec<_> = fake
        .requests()
        .into_iter()
        .filter_map(|r| r.error)
        .collect();
    assert_eq!(
        errors,
        ["InvalidSignatureException"],
        "refused once, then corrected"
    );
    assert!(
        agent
            .log_text()
            .contains("this host's clock differs from the service's")
    );
}

/// Issue 13 item 1, on the release build (`panic = "unwind"`): a command that panics
/// (`CODEDEPLOY_AGENT_TEST_PANIC_AT=execute:d-PANIC`) while a command of another deployment
/// group runs gets exactly one `Failed` report saying so; the other completes, and the agent
/// keeps polling.
#[test]
fn release_build_a_panicking_command_fails_alone_and_the_agent_keeps_polling() {
    let Some(bin) = support::daemon::release_bin(
        "release_build_a_panicking_command_fails_alone_and_the_agent_keeps_polling",
    ) else {
        return;
    };
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start_bin(
        &s,
        &fake,
        &bin,
        HOST,
        "",
        &[("CODEDEPLOY_AGENT_TEST_PANIC_AT", "execute:d-PANIC")],
    );
    // Group B: a BeforeInstall that holds until released.
    let holding = s.path().join("holding");
    let release = s.path().join("release");
    let dest = s.dest().display().to_string();
    let hold = format!(
        "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
        holding.display(),
        release.display()
    );
    let b = s.bundle(
        "held",
        &[
            (
                "appspec.yml",
                &format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/b\nhooks:\n  BeforeInstall:\n    - location: scripts/hold.sh\n      timeout: 60\n"),
            ),
            ("app/x", "x"),
            ("scripts/hold.sh", &hold),
        ],
    );
    let ok = signed(&spec_json("d-OK", "dg-b", &b));
    let done = run_commands(&fake, "ok", &["DownloadBundle"], &ok, T);
    assert_eq!(done[0].command_status, "Succeeded", "{done:?}");
    fake.set_spec("ok/exec/held", "CodeDeploy", ok.clone());
    fake.enqueue(
        HOST,
        command("ok-held", "BeforeInstall", HOST, "ok/exec/held"),
    );
    assert!(
        fake.wait_until(T, |_| holding.exists()),
        "group B's hook runs"
    );

    // Group A panics while B's hook runs.
    let a = bundle(&s, "a", "a", "#!/bin/sh\n");
    let panicking = signed(&spec_json("d-PANIC", "dg-a", &a));
    fake.set_spec("p/exec", "CodeDeploy", panicking);
    fake.enqueue(HOST, command("p-1", "DownloadBundle", HOST, "p/exec"));
    assert!(
        wait_complete(&fake, "p-1"),
        "the panicking command is reported"
    );
    assert_eq!(
        agent.child.try_wait().expect("try_wait"),
        None,
        "the agent is alive"
    );

    fs::write(&release, "").expect("release");
    assert!(
        wait_complete(&fake, "ok-held"),
        "group B's command completes"
    );
    // Still polling: more polls arrive after both reports.
    let polls = fake.requests_for("PollHostCommand").len();
    assert!(fake.wait_until(T, |r| {
        r.iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls + 2
    }));
    // And a later command runs normally.
    let done = run_commands(&fake, "later", &["DownloadBundle"], &ok, T);
    assert_eq!(done[0].command_status, "Succeeded");

    let of = |id: &str| -> Vec<Complete> {
        fake.completes()
            .into_iter()
            .filter(|c| c.host_command_identifier == id)
            .collect()
    };
    let p = of("p-1");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].command_status, "Failed");
    let message = payload(&p[0])["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with("The agent hit an internal error while running the command")
            && message.contains("test panic point execute reached")
            && message.contains("The agent keeps running"),
        "{message}"
    );
    assert_eq!(payload(&p[0])["error_code"], 5);
    let b = of("ok-held");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].command_status, "Succeeded");
    assert_eq!(
        agent.child.try_wait().expect("try_wait"),
        None,
        "the agent is alive"
    );
}

/// A copy worker that panics fails the Install with a clear message instead of leaving the
/// install waiting for it for good (before: the copy stayed counted as busy and the command
/// never ended).
#[test]
fn a_panicking_copy_worker_fails_the_install() {
    let s = Sandbox::new();
    let dest = s.dest().display().to_string();
    let b = s.bundle(
        "copies",
        &[
            (
                "appspec.yml",
                &format!("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\n"),
            ),
            ("app/a", "a"),
            ("app/b", "b"),
            ("app/c", "c"),
        ],
    );
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("local")
        .arg("-c")
        .arg(s.config())
        .arg("-l")
        .arg(&b)
        .arg("-g")
        .arg("dg")
        .env("CODEDEPLOY_AGENT_TEST_PANIC_AT", "install-copy")
        .env("RUST_BACKTRACE", "0");
    let out_path = s.path().join("local.stdout");
    cmd.stdout(fs::File::create(&out_path).expect("stdout file"));
    let mut run = Daemon::spawn(&s, cmd);
    let status = run
        .wait(Duration::from_secs(60))
        .expect("the deployment ends");
    let log = fs::read_to_string(&out_path).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{log}\n{}", run.log_text());
    assert!(
        log.contains("the copy worker panicked") && log.contains("test panic point install-copy"),
        "{log}"
    );
}
