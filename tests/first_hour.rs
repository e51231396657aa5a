//! What a newcomer meets in the first hour, through the real binary: a closed stdout, one
//! verdict on unknown lifecycle events from validate, plan and local, warnings on the terminal,
//! the sample for any user, start-up failures that say what to do next.

mod support;

use std::fs;
use std::process::{Command, Stdio};

use support::{Run, Sandbox, bin};

/// Runs the binary with a stdout whose reader is already gone (`… | head -0`), stderr captured.
fn with_closed_stdout(args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    Run::from(out)
}

fn assert_quiet_end(run: &Run, what: &str) {
    assert_ne!(run.code, -1, "{what}: killed by a signal: {}", run.stderr);
    assert_ne!(run.code, 101, "{what}: panicked: {}", run.stderr);
    assert_ne!(run.code, 134, "{what}: aborted: {}", run.stderr);
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("Broken pipe"),
        "{what}: {}",
        run.stderr
    );
}

#[test]
fn every_command_treats_a_closed_stdout_as_the_end_of_output() {
    let s = Sandbox::new();
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-app");
    let config = s.config();
    let config = config.to_str().expect("utf8");
    let b = s.bundle(
        "ok",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/a.sh\n",
            ),
            ("scripts/a.sh", "#!/bin/sh\necho hi\n"),
        ],
    );
    let b = b.to_str().expect("utf8");
    let pid_dir = s.path().join("pid");
    let status_config = s.path().join("status.yml");
    fs::write(
        &status_config,
        format!(
            ":root_dir: {}\n:log_dir: {}\n:pid_dir: {}\n",
            s.root().display(),
            s.path().join("log").display(),
            pid_dir.display()
        ),
    )
    .expect("write");
    let status_config = status_config.to_str().expect("utf8");
    let cases: Vec<(&str, Vec<&str>, Option<i32>)> = vec![
        ("validate", vec!["validate", sample], Some(0)),
        (
            "validate --format json",
            vec!["validate", "--format", "json", sample],
            Some(0),
        ),
        ("plan", vec!["plan", "-c", config, "-l", b], Some(0)),
        ("local", vec!["local", "-c", config, "-l", b], Some(0)),
        ("local --version", vec!["local", "--version"], Some(0)),
        ("status --help", vec!["status", "--help"], Some(0)),
        ("status", vec!["status", "--config", status_config], None),
        (
            "status --json",
            vec!["status", "--json", "--config", status_config],
            None,
        ),
        (
            "prepare-image --dry-run",
            vec!["prepare-image", "--dry-run", "--config", status_config],
            None,
        ),
        ("--help", vec!["--help"], Some(0)),
        ("--version", vec!["--version"], Some(0)),
    ];
    for (what, args, code) in cases {
        let run = with_closed_stdout(&args);
        assert_quiet_end(&run, what);
        if let Some(code) = code {
            assert_eq!(run.code, code, "{what}: {}", run.stderr);
        }
    }
    // The local deployment ran to its end although nobody read its output.
    let logs = fs::read_dir(s.root().join("default-local-deployment-group"))
        .expect("group dir")
        .count();
    assert_eq!(logs, 1);
}

fn typo_bundle(s: &Sandbox) -> std::path::PathBuf {
    s.bundle(
        "typo",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: scripts/a.sh\n  AfterInstal:\n    - location: scripts/a.sh\n",
            ),
            ("scripts/a.sh", "#!/bin/sh\necho hi\n"),
        ],
    )
}

#[test]
fn validate_plan_and_local_give_one_verdict_on_an_unknown_event() {
    let s = Sandbox::new();
    let b = typo_bundle(&s);
    let b = b.to_str().expect("utf8");
    let config = s.config();
    let config = config.to_str().expect("utf8");
    let position = "appspec.yml:6:3: AfterInstal is not a lifecycle event of this deployment; did you mean AfterInstall?";
    let aws = r#"appspec.yml file contains unknown lifecycle events: ["AfterInstal"]"#;

    let validate = Run::from(
        Command::new(bin())
            .args(["validate", b])
            .output()
            .expect("run"),
    );
    assert_eq!(validate.code, 1, "{}", validate.stdout);
    assert!(
        validate
            .stdout
            .contains(&position.replace(": AfterInstal is", ": error: AfterInstal is")),
        "{}",
        validate.stdout
    );

    let plan = Run::from(
        Command::new(bin())
            .args(["plan", "-c", config, "-l", b])
            .output()
            .expect("run"),
    );
    assert_eq!(plan.code, 1, "{}", plan.stdout);
    assert!(
        plan.stdout.contains(aws) && plan.stdout.contains(position),
        "{}",
        plan.stdout
    );

    let local = s.local(&["-l", b]);
    assert_eq!(local.code, 1, "{}", local.stdout);
    assert!(
        local.stdout.contains(&format!("ERROR: {aws}")),
        "{}",
        local.stdout
    );
    assert!(local.stdout.contains(position), "{}", local.stdout);

    // A custom event the deployment names is accepted by all three.
    let validate = Run::from(
        Command::new(bin())
            .args(["validate", "--events", "AfterInstal", b])
            .output()
            .expect("run"),
    );
    assert_eq!(validate.code, 0, "{}", validate.stdout);
    let plan = Run::from(
        Command::new(bin())
            .args(["plan", "-c", config, "-l", b, "--events", "AfterInstal"])
            .output()
            .expect("run"),
    );
    assert_eq!(plan.code, 0, "{}", plan.stdout);
    s.local(&["-l", b, "--events", "AfterInstal"]).assert_ok();
}

#[test]
fn appspec_warnings_reach_the_terminal_once_and_the_log_once() {
    let s = Sandbox::new();
    let b = s.bundle(
        "hooks-typo",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nHooks:\n  AfterInstall:\n    - location: scripts/a.sh\n",
            ),
            ("scripts/a.sh", "#!/bin/sh\necho hi\n"),
        ],
    );
    let run = s.local(&["-l", b.to_str().expect("utf8")]);
    run.assert_ok();
    let warning = "The key Hooks is ignored";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("warning: appspec.yml:3:1: "),
        "{}",
        run.stderr
    );
    let log = s.path().join("log").join("codedeploy-local.log");
    assert!(
        run.stdout
            .contains(&format!("Agent log: {}", log.display())),
        "{}",
        run.stdout
    );
    let text = fs::read_to_string(&log).expect("log");
    assert_eq!(text.matches(warning).count(), 1, "{text}");
    // On a pipe, what happened is still said: where the files went and the summary.
    assert!(
        run.stdout
            .contains("Files: the appspec has no files section"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("finished in"), "{}", run.stdout);
}

/// Creates (once) a local user for the README check and returns its uid.
fn test_user(name: &str) -> u32 {
    let exists = Command::new("id").args(["-u", name]).output().expect("id");
    if !exists.status.success() {
        let made = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", name])
            .status()
            .expect("useradd");
        assert!(made.success(), "useradd {name}");
    }
    let out = Command::new("id").args(["-u", name]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// The README's first command, as `user` (None: root) with its own empty HOME.
fn readme_first_command(home: &std::path::Path, user: Option<&str>) -> Run {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-app");
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            // runuser sets HOME from passwd; env puts the test's HOME back.
            c.args(["-u", u, "--", "env"])
                .arg(format!("HOME={}", home.display()))
                .arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(["local", "--bundle-location", sample])
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
        .stdin(Stdio::null());
    Run::from(cmd.output().expect("run"))
}

#[test]
fn the_readme_first_command_works_for_root_and_two_users_twice_each() {
    if !support::require::root() {
        return;
    }
    if std::path::Path::new("/etc/codedeploy-agent/conf/codedeployagent.yml").exists() {
        eprintln!("skipped: this machine has an agent configuration file");
        return;
    }
    let s = Sandbox::new();
    fs::set_permissions(
        s.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let users = [None, Some("cdfirsthour1"), Some("cdfirsthour2")];
    for user in users {
        let home = s.path().join(format!("home-{}", user.unwrap_or("root")));
        fs::create_dir(&home).expect("mkdir home");
        if let Some(u) = user {
            let uid = test_user(u);
            std::os::unix::fs::chown(&home, Some(uid), None).expect("chown home");
        }
        let state = home.join(".local/state/codedeploy-agent");
        for round in 0..2 {
            let run = readme_first_command(&home, user);
            assert_eq!(
                run.code, 0,
                "{user:?} round {round}: {}{}",
                run.stdout, run.stderr
            );
            let out = &run.stdout;
            assert!(
                out.contains("AppSpec file valid. Local deployment successful"),
                "{out}"
            );
            // Said on a pipe too: the configuration note, the state dir, where the files are.
            assert!(
                out.contains(&format!(
                    "using built-in defaults with the deployment root {}",
                    state.join("deployment-root").display()
                )),
                "{user:?}: {out}"
            );
            assert!(
                out.contains(&format!(
                    "Agent log: {}",
                    state.join("log/codedeploy-local.log").display()
                )),
                "{out}"
            );
            assert!(out.contains("the revision stays in "), "{out}");
            assert!(out.contains("finished in"), "{out}");
        }
        let log = fs::read_to_string(
            fs::read_dir(state.join("deployment-root/default-local-deployment-group"))
                .expect("group")
                .flatten()
                .map(|e| e.path().join("logs/scripts.log"))
                .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
                .expect("a deployment"),
        )
        .expect("scripts.log");
        // The second round stopped the first round's app.
        assert!(log.contains("stopping hello-app"), "{user:?}: {log}");
        // Stop the sample's background heartbeat.
        let pid = home.join(".local/state/codedeploy-hello-app/hello.pid");
        if let Ok(pid) = fs::read_to_string(pid) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// Starts `codedeploy-agent run` with no on-premises file, IMDS at `imds_url` (a loopback fake),
/// stderr into a file; returns the child and the stderr path.
fn daemon_off_ec2(s: &Sandbox, imds_url: &str) -> (std::process::Child, std::path::PathBuf) {
    let config = s.path().join("agent.yml");
    fs::write(
        &config,
        format!(
            ":root_dir: {root}\n:log_dir: {dir}/log\n:pid_dir: {dir}/pid\n:on_premises_config_file: {dir}/no-such-onprem.yml\n",
            root = s.root().display(),
            dir = s.path().display()
        ),
    )
    .expect("write config");
    let stderr = s.path().join("daemon.stderr");
    let child = Command::new(bin())
        .args(["run", "-c"])
        .arg(&config)
        .env_remove("AWS_REGION")
        .env_remove("AWS_HOST_IDENTIFIER")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_url)
        .env("HOME", s.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn");
    (child, stderr)
}

fn assert_says_what_to_do(text: &str, s: &Sandbox) {
    let onprem = s.path().join("no-such-onprem.yml");
    assert!(
        text.contains(&format!(
            "There is no on-premises configuration at {}",
            onprem.display()
        )) && text.contains("Off EC2, register this host with CodeDeploy and write that file"),
        "{text}"
    );
}

#[test]
fn off_ec2_the_daemon_says_the_on_premises_file_is_missing() {
    for status in [403, 404] {
        let s = Sandbox::new();
        let imds = support::fake_imds::FakeImds::start();
        imds.set(|st| {
            st.token_status = Some(status);
            st.v1_allowed = false;
        });
        let (child, stderr) = daemon_off_ec2(&s, &imds.url());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(1), "{status}");
        let text = fs::read_to_string(&stderr).expect("stderr");
        assert!(text.contains(&format!("at {}", imds.url())), "{text}");
        assert_says_what_to_do(&text, &s);
    }
    // Nothing listening: the agent keeps asking, and says what to do and when it asks again.
    let s = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let (mut child, stderr) = daemon_off_ec2(&s, &format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = fs::read_to_string(&stderr).unwrap_or_default();
        if text.contains("next try in") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("next try in 2 s"), "{text}");
    assert_says_what_to_do(&text, &s);
}

#[test]
fn small_things_say_what_they_do() {
    // plan -v answers like local -v.
    let plan = Run::from(
        Command::new(bin())
            .args(["plan", "-v"])
            .output()
            .expect("run"),
    );
    let local = Run::from(
        Command::new(bin())
            .args(["local", "-v"])
            .output()
            .expect("run"),
    );
    assert_eq!(plan.code, 0);
    assert_eq!(plan.stdout, local.stdout);
    assert!(!plan.stdout.is_empty());
    // status --help lists its exit codes.
    let help = Run::from(
        Command::new(bin())
            .args(["status", "--help"])
            .output()
            .expect("run"),
    );
    assert!(
        help.stdout
            .contains("0 the agent is running, 3 it is not running"),
        "{}",
        help.stdout
    );
    // deploy without credentials says so, not "check the bucket name". No network: a closed
    // loopback port, IMDS disabled.
    let home = tempfile::tempdir().expect("tempdir");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-app");
    let run = Run::from(
        Command::new(bin())
            .args([
                "deploy",
                "--application-name",
                "a",
                "--deployment-group-name",
                "g",
            ])
            .args(["--s3-location", "s3://b/k", "--source", sample])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", home.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
            .env("HOME", home.path())
            .env("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
            .env("AWS_ENDPOINT_URL_CODEDEPLOY", "http://127.0.0.1:9")
            .stdin(Stdio::null())
            .output()
            .expect("run"),
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no AWS credentials were found"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Check the bucket name"),
        "{}",
        run.stderr
    );
}

/// The daemon's log as an operator reads it: started against a closed loopback service port,
/// stopped once it has logged a poll error.
#[test]
fn the_daemon_log_has_no_duplicated_or_debug_rendered_lines() {
    let s = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = s.path().join("agent.yml");
    fs::write(
        &config,
        format!(
            ":root_dir: {root}\n:log_dir: {dir}/log\n:pid_dir: {dir}/pid\n:codedeploy_test_profile: beta\n\
             :deploy_control_endpoint: http://127.0.0.1:{port}\n:on_premises_config_file: {dir}/none.yml\n:startup_jitter_ms: 0\n",
            root = s.root().display(),
            dir = s.path().display()
        ),
    )
    .expect("config");
    for format in ["text", "json"] {
        let stderr = s.path().join(format!("stderr.{format}"));
        let mut child = Command::new(bin())
            .args(["run", "--log-format", format, "-c"])
            .arg(&config)
            .env("AWS_REGION", "us-east-1")
            .env(
                "AWS_HOST_IDENTIFIER",
                "arn:aws:ec2:us-east-1:111122223333:instance/i-1",
            )
            .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .env("HOME", s.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let text = loop {
            let text = fs::read_to_string(&stderr).unwrap_or_default();
            if text.contains("next try in") || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = nix_kill(child.id());
        let _ = child.wait();
        assert!(text.contains("next try in"), "{format}: {text}");
        assert!(
            !text.contains("Some(") && !text.contains("None"),
            "{format}: {text}"
        );
        let messages: Vec<String> = text
            .lines()
            .map(|l| match format {
                // Drop the timestamp and pid: the rest must not repeat.
                "text" => l.split_once("]: ").map_or(l, |(_, m)| m).to_owned(),
                _ => serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("fields").and_then(|f| f.get("message")))
                            .cloned()
                    })
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| l.to_owned()),
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for m in &messages {
            assert!(
                seen.insert(m.clone()),
                "{format}: repeated line {m}\n{text}"
            );
        }
        let endpoint_lines = messages
            .iter()
            .filter(|m| m.contains("CodeDeploy endpoint"))
            .count();
        assert_eq!(endpoint_lines, 1, "{format}: {text}");
        let identity_lines = messages
            .iter()
            .filter(|m| m.contains("host=") || m.contains("host identity"))
            .count();
        assert_eq!(identity_lines, 1, "{format}: {text}");
    }
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .map(|_| ())
}

#[test]
fn the_daemon_logs_a_failed_command_once() {
    if !support::require::openssl() {
        return;
    }
    use support::daemon::{Daemon, run_commands, signed, spec_json};
    let s = Sandbox::new();
    let fake = support::fake_service::FakeService::start();
    let agent = Daemon::start(&s, &fake, "", &[]);
    let b = s.bundle(
        "fails",
        &[
            ("appspec.yml", "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"),
            ("scripts/start.sh", "#!/bin/sh\nexit 3\n"),
        ],
    );
    let spec = signed(&spec_json("d-FAILONCE", "dg", &b));
    let completes = run_commands(
        &fake,
        "once",
        &["DownloadBundle", "Install", "ApplicationStart"],
        &spec,
        std::time::Duration::from_secs(60),
    );
    assert_eq!(completes[2].command_status, "Failed");
    let text = agent.log_text();
    let message = "Script at specified location: scripts/start.sh failed with exit code 3";
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(message)).collect();
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
}
