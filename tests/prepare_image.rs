//! `codedeploy-agent prepare-image`: what it removes and keeps, `--dry-run`, and its refusals
//! (a command in flight, a running daemon: a real `run` against the fake service).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::daemon::Daemon;
use support::fake_service::FakeService;
use support::{Run, Sandbox, bin};

fn prepare(s: &Sandbox, args: &[&str]) -> Run {
    let out = Command::new(bin())
        .arg("prepare-image")
        .arg("--config")
        .arg(s.config())
        .args(args)
        .output()
        .expect("run prepare-image");
    Run::from(out)
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.expect("entry").path();
            out.push(
                p.strip_prefix(base)
                    .expect("under base")
                    .display()
                    .to_string(),
            );
            if p.is_dir() && !p.is_symlink() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A sandbox with everything an agent leaves behind: a real local deployment (deployment
/// root, scripts.log, instructions, deployments log, codedeploy-local.log), the daemon's pid,
/// lock and status files, its log with rotated copies, and an on-premises config file.
fn used_machine() -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    let onprem = s.path().join("codedeploy.onpremises.yml");
    fs::write(
        &onprem,
        "---\naws_access_key_id: AKIAONPREM\naws_secret_access_key: onprem-secret\niam_user_arn: arn:aws:iam::111122223333:user/x\nregion: us-east-1\n",
    )
    .expect("onprem");
    let pid = s.path().join("pid");
    s.write_config(&format!(
        ":pid_dir: {}\n:on_premises_config_file: {}\n",
        pid.display(),
        onprem.display()
    ));
    let b = s.bundle(
        "app",
        &[
            ("appspec.yml", "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/hook.sh\n"),
            ("scripts/hook.sh", "#!/bin/sh\necho hook ran\n"),
        ],
    );
    s.deploy(&b, "dg", &[]).assert_ok();
    fs::create_dir_all(&pid).expect("pid dir");
    fs::write(pid.join("codedeploy-agent.pid"), "4242").expect("pid");
    fs::write(pid.join("codedeploy-agent.pid.lock"), "").expect("lock");
    fs::write(pid.join("codedeploy-agent.status.json"), "{}").expect("status");
    // A status rewrite cut off by a crash.
    fs::write(pid.join(".codedeploy-agent.status.json.tmp.4242"), "{").expect("status tmp");
    fs::write(pid.join("unrelated.txt"), "not ours").expect("other");
    let log = s.path().join("log");
    for name in [
        "codedeploy-agent.log",
        "codedeploy-agent.log.1",
        "codedeploy-agent.log.2",
        // Left by the AWS agent (daily rolls) on a host that switched agents.
        "codedeploy-agent.20260101.log",
    ] {
        fs::write(
            log.join(name),
            "2026-01-01 00:00:00 INFO  [codedeploy-agent(1)]: x\n",
        )
        .expect("log");
    }
    fs::write(log.join("operator-notes.log"), "keep me").expect("other log");
    fs::write(log.join("codedeploy-agent.old.log"), "not a dated roll").expect("other log");
    // A finished command whose result was accepted leaves nothing in the tracking dir; an
    // empty tracking dir is normal.
    fs::create_dir_all(s.root().join("ongoing-deployment")).expect("tracking");
    (s, onprem)
}

#[test]
fn dry_run_lists_and_changes_nothing_then_the_real_run_removes_it_all() {
    let (s, onprem) = used_machine();
    let before_root = tree(&s.root());
    assert!(
        before_root.iter().any(|p| p.ends_with("scripts.log")),
        "{before_root:?}"
    );
    assert!(
        before_root
            .iter()
            .any(|p| p.starts_with("deployment-instructions"))
    );
    let before_all = tree(s.path());

    let dry = prepare(&s, &["--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("Would remove:"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("Dry run: nothing was changed."),
        "{}",
        dry.stdout
    );
    for expected in [
        s.root().join("dg"),
        s.root().join("deployment-instructions"),
        s.root().join("deployment-logs"),
        s.root().join("ongoing-deployment"),
        s.path().join("pid/codedeploy-agent.pid"),
        s.path().join("pid/codedeploy-agent.pid.lock"),
        s.path().join("pid/codedeploy-agent.status.json"),
        s.path().join("log/codedeploy-agent.log"),
        s.path().join("log/codedeploy-agent.log.2"),
        s.path().join("log/codedeploy-agent.20260101.log"),
        s.path().join("log/codedeploy-local.log"),
    ] {
        assert!(
            dry.stdout.contains(&format!("  {}\n", expected.display())),
            "{} not listed:\n{}",
            expected.display(),
            dry.stdout
        );
    }
    assert_eq!(tree(s.path()), before_all, "a dry run changes nothing");

    let run = prepare(&s, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Removed:"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("The agent stays enabled and starts on instances launched from this image."),
        "{}",
        run.stdout
    );
    // Operator-owned files are named as kept.
    assert!(
        run.stdout.contains(&format!(
            "  {} (the agent configuration",
            s.config().display()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "  {} (the on-premises configuration",
            onprem.display()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("no identity or credentials on disk"),
        "{}",
        run.stdout
    );

    assert!(s.root().is_dir(), "the deployment root itself stays");
    assert_eq!(tree(&s.root()), Vec::<String>::new());
    assert_eq!(tree(&s.path().join("pid")), ["unrelated.txt"]);
    assert_eq!(
        tree(&s.path().join("log")),
        ["codedeploy-agent.old.log", "operator-notes.log"]
    );
    assert!(s.config().exists() && onprem.exists());
    assert!(s.dest().exists(), "installed applications are not touched");

    let again = prepare(&s, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("Nothing to remove"),
        "{}",
        again.stdout
    );
}

#[test]
fn leaves_what_the_agent_did_not_create_in_a_shared_root_dir() {
    let (s, _) = used_machine();
    let root = s.root();
    // An operator who pointed root_dir at a directory that also holds their own things.
    fs::write(root.join("important.txt"), "operator data").expect("file");
    fs::create_dir_all(root.join("bin")).expect("dir");
    fs::write(root.join("bin/tool"), "binary").expect("tool");
    // Looks half like a group directory: one deployment-like child and one other.
    fs::create_dir_all(root.join("mixed/d-LOOKALIKE")).expect("mixed");
    fs::write(root.join("mixed/notes"), "keep").expect("notes");
    fs::create_dir_all(root.join("empty")).expect("empty");
    // A symlink to a directory of deployment-like entries is not a group directory.
    let elsewhere = s.path().join("elsewhere");
    fs::create_dir_all(elsewhere.join("d-OTHER")).expect("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, root.join("linked")).expect("symlink");

    let run = prepare(&s, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    for kept in ["important.txt", "bin", "mixed", "empty", "linked"] {
        assert!(
            run.stdout.contains(&format!(
                "  {} (not created by the agent",
                root.join(kept).display()
            )),
            "{kept} not listed as kept:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        tree(&root),
        [
            "bin",
            "bin/tool",
            "empty",
            "important.txt",
            "linked",
            "mixed",
            "mixed/d-LOOKALIKE",
            "mixed/notes",
        ]
    );
    assert!(elsewhere.join("d-OTHER").is_dir());
}

#[test]
fn refuses_while_a_command_is_in_flight_or_owed_unless_forced() {
    let (s, _) = used_machine();
    let tracking = s.root().join("ongoing-deployment");
    fs::write(tracking.join("d-RUNNING"), "hc-running").expect("tracking");
    let before = tree(s.path());
    for args in [&[][..], &["--dry-run"][..]] {
        let r = prepare(&s, args);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains(
                "A command is in flight: deployment d-RUNNING (host command hc-running) has not finished."
            ),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("--force"), "{}", r.stderr);
        assert_eq!(tree(s.path()), before, "a refusal changes nothing");
    }

    // Finished but not yet accepted by the service: still owed, still refused.
    fs::write(
        tracking.join("d-RUNNING.result"),
        r#"{"CommandStatus":"Succeeded","Payload":"{}"}"#,
    )
    .expect("result");
    let r = prepare(&s, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("finished but its result was not yet accepted by the service"),
        "{}",
        r.stderr
    );

    // A tracking file older than a day is stale for the agent too: not in flight.
    let stale = tracking.join("d-OLD");
    fs::write(&stale, "hc-old").expect("stale");
    fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86_400))
        .expect("mtime");

    // An empty tracking file names no command; the agent drops it too: not in flight.
    let empty = tracking.join("d-EMPTY");
    fs::write(&empty, "").expect("empty");
    let r = prepare(&s, &["--dry-run"]);
    assert!(!r.stderr.contains("d-EMPTY"), "{}", r.stderr);

    let forced = prepare(&s, &["--force"]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(tree(&s.root()), Vec::<String>::new());
}

#[test]
fn refuses_while_the_daemon_runs_and_proceeds_once_it_stopped() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let pid_file = s.path().join("pid/codedeploy-agent.pid");
    let status_file = s.path().join("pid/codedeploy-agent.status.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The status file is first written concurrently with the first poll: wait for both.
    while !pid_file.exists()
        || !status_file.exists()
        || fake.requests_for("PollHostCommand").is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not start:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The status file's rewrites (every 5 s) briefly show a `.….tmp.<pid>` file: not compared.
    let settled = || -> Vec<String> {
        tree(s.path())
            .into_iter()
            .filter(|p| !p.rsplit('/').next().is_some_and(|n| n.starts_with('.')))
            .collect()
    };
    let before = settled();
    let r = prepare(&s, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "The CodeDeploy agent is running as PID {} (it holds {})",
            agent.pid(),
            s.path().join("pid/codedeploy-agent.pid.lock").display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("systemctl stop codedeploy-agent"),
        "{}",
        r.stderr
    );
    assert!(pid_file.exists(), "nothing removed while it runs");
    assert!(s.path().join("log/codedeploy-agent.log").exists());
    // The daemon's own files may have changed (status rewrites); the set of files is the same.
    assert_eq!(settled(), before);

    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait(Duration::from_secs(60))
        .expect("the agent stops");
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    let r = prepare(&s, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!s.path().join("pid/codedeploy-agent.pid.lock").exists());
    assert!(!s.path().join("log/codedeploy-agent.log").exists());
    assert!(
        r.stdout.contains(&format!(
            "  {}\n",
            s.path().join("log/codedeploy-agent.log").display()
        )),
        "{}",
        r.stdout
    );
}

/// Kills a child process on drop (a test that fails half-way leaves none behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_daemon_starting_during_the_cleanup_stops_even_when_no_lock_file_existed() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let pid = s.path().join("pid");
    s.write_config(&format!(":pid_dir: {}\n", pid.display()));
    assert!(!pid.exists(), "no daemon ever ran here");
    let marker = s.path().join("paused");
    let preparing = KillOnDrop(
        Command::new(bin())
            .arg("prepare-image")
            .arg("--config")
            .arg(s.config())
            .env("CODEDEPLOY_AGENT_TEST_PAUSE_AT", "prepare-locked")
            .env("CODEDEPLOY_AGENT_TEST_PAUSE_MARKER", &marker)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn prepare-image"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "prepare-image did not reach its pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Same pid_dir: Daemon::start rewrites the config with it.
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let status = agent.wait(Duration::from_secs(60));
    assert!(
        status.is_some_and(|st| !st.success()),
        "the daemon must not start while prepare-image works: {status:?}\n{}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("Could not acquire lock on"),
        "{}",
        agent.log_text()
    );
    assert!(fake.requests_for("PollHostCommand").is_empty());
    drop(preparing);
}
