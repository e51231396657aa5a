//! Logs: journald records with structured fields (a fake journal socket), `--log-format json`
//! on stderr, size-based rotation of the agent log, bounded disk use for enormous hook output,
//! and no secrets in any log or state file after real deployments at the most verbose level.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::Sandbox;
use support::daemon::{Daemon, HOST, run_commands, signed, spec_json};
use support::fake_service::{FakeService, TestCredentials};
use support::journal::FakeJournal;

const T: Duration = Duration::from_secs(90);

/// Starts `codedeploy-agent run --log-format <format>` like `Daemon::start`, with the given
/// config lines, environment (added after the defaults; `None` removes) and stdout captured.
fn start_daemon(
    s: &Sandbox,
    fake: &FakeService,
    extra_config: &str,
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> Daemon {
    support::daemon::write_config(s, fake, extra_config);
    let mut cmd = Command::new(support::bin());
    cmd.arg("run")
        .arg("-c")
        .arg(s.config())
        .args(args)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_HOST_IDENTIFIER", HOST)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", s.path())
        .env("CODEDEPLOY_LOG", "trace")
        .stdout(fs::File::create(s.path().join("daemon.stdout")).expect("stdout file"));
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Daemon::spawn(s, cmd)
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Panics naming every file under `dir` (and every extra text) that contains a secret.
fn assert_no_secrets(dir: &Path, extra: &[(&str, String)], secrets: &[&str]) {
    let mut leaks = Vec::new();
    for f in files(dir) {
        let bytes = fs::read(&f).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        for s in secrets {
            if text.contains(s) {
                let line = text.lines().find(|l| l.contains(s)).unwrap_or_default();
                leaks.push(format!("{} has {s}: {line}", f.display()));
            }
        }
    }
    for (name, text) in extra {
        for s in secrets {
            if text.contains(s) {
                let line = text.lines().find(|l| l.contains(s)).unwrap_or_default();
                leaks.push(format!("{name} has {s}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in logs:\n{}", leaks.join("\n"));
}

fn openssl() -> bool {
    support::require::openssl()
}

#[test]
fn daemon_deployment_journal_fields_json_stderr_and_no_secrets() {
    if !openssl() {
        return;
    }
    let Some(moto) = support::moto::Moto::start() else {
        return;
    };
    use support::fake_imds::FakeImds;
    let s = Sandbox::new();
    let fake = FakeService::start();
    let imds = FakeImds::start();
    let journal = FakeJournal::start(s.path());
    imds.rotate_credentials("ASIALOGTESTKEY", Duration::from_secs(3600));
    fake.add_credentials(
        TestCredentials::new("ASIALOGTESTKEY", "secret-ASIALOGTESTKEY")
            .with_session_token("session-ASIALOGTESTKEY"),
    );

    // An S3 bundle whose hooks print their environment (nothing secret may be in it).
    let dest = s.dest().display().to_string();
    let b = s.bundle(
        "s3app",
        &[
            (
                "appspec.yml",
                &format!(
                    "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\nhooks:\n  BeforeInstall:\n    - location: scripts/hook.sh\n  ApplicationStart:\n    - location: scripts/hook.sh\n"
                ),
            ),
            ("app/version.txt", "s3"),
            (
                "scripts/hook.sh",
                "#!/bin/sh\necho \"hello from $LIFECYCLE_EVENT\"\necho \"to stderr in $LIFECYCLE_EVENT\" >&2\nenv | sort\n",
            ),
        ],
    );
    let tgz = s.path().join("bundle.tgz");
    support::tgz(&b, &tgz);
    moto.create_bucket("releases");
    let (etag, _) = moto.put_file("releases", "app/bundle.tgz", &tgz);

    let imds_url = imds.url();
    let socket = journal.path().display().to_string();
    let mut agent = start_daemon(
        &s,
        &fake,
        &format!(
            ":codedeploy_test_profile: prod\n:s3_endpoint_override: {}\n:hook_output_to_journal: true\n",
            moto.url()
        ),
        &["--log-format", "json"],
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", Some(imds_url.as_str())),
            ("AWS_EC2_METADATA_DISABLED", Some("false")),
            ("CODEDEPLOY_JOURNAL_SOCKET", Some(socket.as_str())),
        ],
    );

    let mut spec = spec_json("d-LOGS", "dg", &b);
    spec["Revision"] = serde_json::json!({"RevisionType": "S3", "S3Revision": {
        "Bucket": "releases", "Key": "app/bundle.tgz", "BundleType": "tgz", "ETag": etag}});
    let c = run_commands(
        &fake,
        "logs",
        &[
            "DownloadBundle",
            "BeforeInstall",
            "Install",
            "ApplicationStart",
        ],
        &signed(&spec),
        T,
    );
    assert!(
        c.iter().all(|c| c.command_status == "Succeeded"),
        "{c:?}\n{}",
        agent.log_text()
    );

    // A GitHub revision with an OAuth token: the hooks of a new deployment of it.
    let mut gh = spec_json("d-GITHUB", "dg-gh", &b);
    gh["Revision"] = serde_json::json!({"RevisionType": "GitHub", "GitHubRevision": {
        "Account": "owner", "Repository": "repo", "CommitId": "0123456789abcdef0123456789abcdef01234567",
        "OAuthToken": "gho_LOGTESTSECRETTOKEN", "BundleType": "tar"}});
    gh["GitHubAccessToken"] = "ghp_LOGTESTACCESSTOKEN".into();
    let c = run_commands(&fake, "gh", &["BeforeInstall"], &signed(&gh), T);
    assert_eq!(c.len(), 1, "{c:?}");

    // journald: hook output with the context fields.
    let start_id = "logs-3-ApplicationStart";
    let hook_line = journal
        .wait_for(T, |e| {
            e.get("MESSAGE").map(String::as_str) == Some("hello from ApplicationStart")
        })
        .unwrap_or_else(|| panic!("no hook output in the journal:\n{:#?}", journal.entries()));
    for (k, v) in [
        ("DEPLOYMENT_ID", "d-LOGS"),
        ("LIFECYCLE_EVENT", "ApplicationStart"),
        ("HOST_COMMAND_ID", start_id),
        ("SYSLOG_IDENTIFIER", "codedeploy-agent"),
        ("PRIORITY", "6"),
        ("HOOK_STREAM", "stdout"),
    ] {
        assert_eq!(
            hook_line.get(k).map(String::as_str),
            Some(v),
            "{k} in {hook_line:?}"
        );
    }
    let stderr_line = journal
        .wait_for(T, |e| {
            e.get("MESSAGE").map(String::as_str) == Some("to stderr in ApplicationStart")
        })
        .expect("stderr hook line");
    assert_eq!(stderr_line.get("PRIORITY").map(String::as_str), Some("5"));
    // journald: the agent's own records for the command carry the same fields.
    let agent_record = journal
        .wait_for(T, |e| {
            e.get("HOST_COMMAND_ID").map(String::as_str) == Some(start_id)
                && e.get("HOOK_STREAM").is_none()
                && e.get("MESSAGE")
                    .is_some_and(|m| m.contains("executing command ApplicationStart"))
        })
        .unwrap_or_else(|| panic!("no agent record for {start_id}:\n{:#?}", journal.entries()));
    assert_eq!(
        agent_record.get("DEPLOYMENT_ID").map(String::as_str),
        Some("d-LOGS")
    );
    assert_eq!(
        agent_record.get("LIFECYCLE_EVENT").map(String::as_str),
        Some("ApplicationStart")
    );
    assert_eq!(agent_record.get("PRIORITY").map(String::as_str), Some("6"));
    // The report of the command, from the async side, has the host command id too.
    assert!(
        journal.entries().iter().any(|e| {
            e.get("HOST_COMMAND_ID").map(String::as_str) == Some(start_id)
                && e.get("DEPLOYMENT_ID").map(String::as_str) == Some("d-LOGS")
                && e.get("MESSAGE").is_some_and(|m| m == "reported")
        }),
        "no 'reported' record with fields"
    );

    agent.signal(Signal::SIGTERM);
    let status = agent.wait(T).expect("the agent stops");
    assert!(status.success(), "{status:?}");

    // stderr: one JSON object per line, with the fields.
    let stderr = agent.log_text();
    let mut with_fields = 0;
    for line in stderr.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["deployment_id"] == "d-LOGS" && v["host_command_id"] == start_id {
            with_fields += 1;
        }
    }
    assert!(
        with_fields > 0,
        "no JSON line with deployment_id and host_command_id"
    );
    // The agent log file keeps the text format.
    let log = fs::read_to_string(s.path().join("log/codedeploy-agent.log")).expect("agent log");
    assert!(log.starts_with("20") && log.contains(" INFO  [codedeploy-agent("));
    assert!(
        !log.lines().any(|l| l.starts_with("{\"timestamp\"")),
        "JSON in the agent log"
    );

    // No secret anywhere: every file in the sandbox (agent log, scripts.log, hook output files,
    // deployments log, status file, result and tracking files), stdout, stderr, the journal.
    let secrets = [
        "secret-ASIALOGTESTKEY",
        "session-ASIALOGTESTKEY",
        "gho_LOGTESTSECRETTOKEN",
        "ghp_LOGTESTACCESSTOKEN",
    ];
    let status_json =
        fs::read_to_string(s.path().join("pid/codedeploy-agent.status.json")).unwrap_or_default();
    assert_no_secrets(
        s.path(),
        &[("journal", journal.raw_text()), ("status", status_json)],
        &secrets,
    );
    // The hooks really ran and printed their environment (so the check above saw it).
    let scripts = fs::read_to_string(s.root().join("dg/d-LOGS/logs/scripts.log")).expect("log");
    assert!(
        scripts.contains("[stdout]LIFECYCLE_EVENT=ApplicationStart"),
        "{scripts}"
    );
}

#[test]
fn agent_log_rotates_by_size_and_keeps_the_configured_number() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = start_daemon(
        &s,
        &fake,
        ":log_max_size: 4096\n:log_max_files: 2\n:codedeploy_test_profile: beta\n",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", Some(&fake.credentials().access_key)),
            (
                "AWS_SECRET_ACCESS_KEY",
                Some(&fake.credentials().secret_key),
            ),
            ("CODEDEPLOY_JOURNAL_SOCKET", Some("off")),
        ],
    );
    let log = s.path().join("log/codedeploy-agent.log");
    let third = s.path().join("log/codedeploy-agent.log.2");
    let deadline = Instant::now() + T;
    // Trace-level polling fills 4 KiB files quickly; wait for two rotations and then some.
    while !third.exists() {
        assert!(
            Instant::now() < deadline,
            "no rotation:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let polls = fake.requests_for("PollHostCommand").len();
    assert!(fake.wait_until(T, |r| {
        r.iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls + 20
    }));
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait(T).expect("stops").success());
    let mut names: Vec<String> = fs::read_dir(s.path().join("log"))
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "codedeploy-agent.log",
            "codedeploy-agent.log.1",
            "codedeploy-agent.log.2"
        ]
    );
    for name in &names {
        let text = fs::read_to_string(s.path().join("log").join(name)).expect("read");
        // Whole records only; a file is over the cap only when one record alone is.
        assert!(text.ends_with('\n'), "{name}");
        assert!(
            text.len() <= 4096 || text.lines().count() == 1,
            "{name}: {} bytes in {} lines",
            text.len(),
            text.lines().count()
        );
    }
    // The last lines of the run are in the live file.
    assert!(
        fs::read_to_string(&log)
            .expect("log")
            .contains("agent exiting now")
    );
}

#[test]
fn enormous_hook_output_leaves_disk_use_bounded() {
    let s = Sandbox::new();
    s.write_config(":scripts_log_max_size: 1MiB\n:scripts_log_max_files: 2\n");
    // 40 MB on stdout, then a marker; a little on stderr.
    let b = s.bundle(
        "flood",
        &[
            ("appspec.yml", "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/flood.sh\n"),
            (
                "scripts/flood.sh",
                "#!/bin/sh\nyes 'a line of hook output, repeated to fill the disk 0123456789' | head -c 40000000\necho the-end-marker\necho err-line >&2\n",
            ),
        ],
    );
    let run = s.deploy(&b, "dg", &[]);
    run.assert_ok();
    let dir = Sandbox::deployment_dir(&run);
    let logs = dir.join("logs");
    let mut scripts: Vec<String> = fs::read_dir(&logs)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("scripts.log"))
        .collect();
    scripts.sort();
    // How much reaches scripts.log depends on how far the tailer falls behind (output punched
    // out before it was read is skipped with a note), but it rotated and kept at most two.
    assert!(
        scripts.len() >= 2
            && ["scripts.log", "scripts.log.1", "scripts.log.2"][..scripts.len().min(3)]
                == scripts[..],
        "{scripts:?}"
    );
    for n in &scripts {
        let len = fs::metadata(logs.join(n)).expect("stat").len();
        assert!(len <= 1 << 20, "{n}: {len}");
    }
    let live = fs::read_to_string(logs.join("scripts.log")).expect("read");
    // (head -c cuts the last line short, so the marker ends that line.)
    assert!(
        live.contains("the-end-marker\n"),
        "{}",
        &live[live.len().saturating_sub(500)..]
    );
    let all: String = scripts
        .iter()
        .map(|n| fs::read_to_string(logs.join(n)).expect("read"))
        .collect();
    assert!(all.contains("[stderr]err-line"));

    // The captured stdout file: its length says 40 MB, its disk use stays near the cap.
    let hooks = logs.join("hooks");
    let stdout = files(&hooks)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "stdout"))
        .expect("stdout file");
    let meta = fs::metadata(&stdout).expect("stat");
    assert!(meta.len() > 40_000_000, "{}", meta.len());
    let on_disk = meta.blocks() * 512;
    assert!(
        on_disk <= 3 << 20,
        "hook output uses {on_disk} bytes on disk"
    );
    // The kept end of it is intact.
    let tail = fs::read(&stdout).expect("read");
    assert!(String::from_utf8_lossy(&tail[tail.len() - 100..]).contains("the-end-marker"));
    // The whole deployment directory stays small.
    let total: u64 = files(&dir)
        .iter()
        .map(|f| fs::metadata(f).expect("stat").blocks() * 512)
        .sum();
    assert!(total <= 8 << 20, "deployment directory uses {total} bytes");
}

#[test]
fn a_presigned_url_location_never_reaches_output_or_logs() {
    let s = Sandbox::new();
    let url = "https://releases.s3.amazonaws.com/app.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAPRESIGNEDKEY%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=PRESIGNEDSESSIONTOKEN&X-Amz-Signature=0123456789abcdefPRESIGNEDSIG";
    let run = s.local(&["-l", url, "-t", "zip"]);
    // Local mode takes https locations from GitHub only: refused, without the secrets.
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("X-Amz-Signature=REDACTED"),
        "{}",
        run.stdout
    );
    assert_no_secrets(
        s.path(),
        &[
            ("stdout", run.stdout.clone()),
            ("stderr", run.stderr.clone()),
        ],
        &["AKIAPRESIGNEDKEY", "PRESIGNEDSESSIONTOKEN", "PRESIGNEDSIG"],
    );
}

#[test]
fn a_journal_that_stops_reading_does_not_stall_the_agent() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    // Bound but never read: its queue (net.unix.max_dgram_qlen, often 10) fills at once.
    let stuck = s.path().join("stuck.socket");
    let _socket = std::os::unix::net::UnixDatagram::bind(&stuck).expect("bind");
    let stuck_s = stuck.display().to_string();
    let mut agent = start_daemon(
        &s,
        &fake,
        ":codedeploy_test_profile: beta\n",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", Some(&fake.credentials().access_key)),
            (
                "AWS_SECRET_ACCESS_KEY",
                Some(&fake.credentials().secret_key),
            ),
            ("CODEDEPLOY_JOURNAL_SOCKET", Some(stuck_s.as_str())),
        ],
    );
    // Trace-level polling logs many records per poll; the agent must keep polling.
    assert!(
        fake.wait_until(T, |r| {
            r.iter()
                .filter(|r| r.operation == "PollHostCommand")
                .count()
                >= 30
        }),
        "the agent stopped polling:\n{}",
        agent.log_text()
    );
    agent.signal(Signal::SIGTERM);
    let status = agent.wait(T).expect("the agent stops");
    assert!(status.success(), "{status:?}");
    let log = fs::read_to_string(s.path().join("log/codedeploy-agent.log")).expect("agent log");
    assert!(log.contains("agent exiting now"), "the file log has it all");
}
