//! Issue 17, through the real binary: behaviours of AWS's Rust agent v2 (and of the Ruby
//! agent where v2 dropped them) that a fleet switching to this agent expects.

mod support;

use std::time::Duration;

use support::Sandbox;
use support::daemon::Daemon;
use support::fake_service::FakeService;

/// Runs `run` with `extra` config lines against a fresh fake and expects it to refuse to
/// start: a non-zero exit, the refusal on stderr, and no request to the service.
fn run_refused(extra: &str) -> String {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut daemon = Daemon::start(&s, &fake, extra, &[]);
    let status = daemon
        .wait(Duration::from_secs(20))
        .expect("the agent should refuse to start, not keep running");
    let stderr = daemon.log_text();
    assert!(!status.success(), "exit {status:?}, stderr:\n{stderr}");
    assert_eq!(
        fake.arrival_count(),
        0,
        "the agent reached the service before refusing:\n{stderr}"
    );
    stderr
}

#[test]
fn run_refuses_a_ruby_user_key_and_names_the_systemd_override() {
    let stderr = run_refused(":user: nobody\n");
    assert!(
        stderr.contains(":user: nobody is not supported")
            && stderr.contains("User=nobody in a systemd unit override"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn run_refuses_a_ruby_group_key_too() {
    let stderr = run_refused(":group: nogroup\n");
    assert!(
        stderr.contains(":group: nogroup is not supported")
            && stderr.contains("Group=nogroup in a systemd unit override"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn run_accepts_a_user_key_naming_the_user_it_runs_as() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("passwd lookup")
        .expect("the test user has a passwd entry")
        .name;
    let mut daemon = Daemon::start(&s, &fake, &format!(":user: {me}\n"), &[]);
    let polled = (0..1000).any(|_| {
        if fake.arrival_count() > 0 {
            return true;
        }
        if matches!(daemon.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(polled, "no poll; stderr:\n{}", daemon.log_text());
}

/// Waits until the fake has answered a `PollHostCommand`, or the daemon exits.
fn wait_for_poll(fake: &FakeService, daemon: &mut Daemon) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if fake.requests_for("PollHostCommand").iter().any(|_| true) {
            return true;
        }
        if matches!(daemon.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn run_writes_the_version_file_and_sends_its_value_as_the_version_header() {
    let s = Sandbox::new();
    // What a Ruby agent leaves behind: it must not be sent for this agent.
    std::fs::write(
        s.path().join(".version"),
        "agent_version: OFFICIAL_1.8.1-1_deb",
    )
    .expect("write stale .version");
    let fake = FakeService::start();
    let mut daemon = Daemon::start(&s, &fake, "", &[]);
    assert!(
        wait_for_poll(&fake, &mut daemon),
        "no poll; stderr:\n{}",
        daemon.log_text()
    );
    let expected = format!("codedeploy-agent-rs/{}", env!("CARGO_PKG_VERSION"));
    // `<root_dir>/../.version`: the sandbox root is `<sandbox>/root`.
    let path = s.path().join(".version");
    let text = std::fs::read_to_string(&path).expect("read .version");
    assert_eq!(text, format!("agent_version: {expected}"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("stat").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o444, "mode {mode:o}");
    let poll = &fake.requests_for("PollHostCommand")[0];
    assert_eq!(
        poll.header("x-amz-codedeploy-agent-version"),
        Some(expected.as_str())
    );
}

#[test]
fn run_refuses_an_endpoint_scheme_other_than_https_or_http() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    // The fake's URL with another scheme: a refused agent never reaches it.
    let url = fake.url().replacen("http://", "ftp://", 1);
    let mut daemon = Daemon::start(
        &s,
        &fake,
        &format!(":deploy_control_endpoint: {url}\n"),
        &[],
    );
    let status = daemon.wait(Duration::from_secs(20)).expect("should exit");
    let stderr = daemon.log_text();
    assert!(!status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "deploy_control_endpoint {url} is not an https:// URL"
        )),
        "stderr:\n{stderr}"
    );
    assert_eq!(fake.arrival_count(), 0);
}

#[test]
fn run_warns_about_plain_http_endpoints_and_still_polls() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut daemon = Daemon::start(&s, &fake, "", &[]);
    assert!(wait_for_poll(&fake, &mut daemon), "{}", daemon.log_text());
    assert!(
        daemon
            .log_text()
            .contains("deploy_control_endpoint uses plain http"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn run_refuses_fips_mode_in_a_region_without_fips_endpoints() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut daemon = Daemon::start(
        &s,
        &fake,
        ":use_fips_mode: true\n",
        &[("AWS_REGION", "eu-west-1")],
    );
    let status = daemon.wait(Duration::from_secs(20)).expect("should exit");
    let stderr = daemon.log_text();
    assert!(!status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("use_fips_mode is set but Region eu-west-1 has no FIPS endpoints"),
        "stderr:\n{stderr}"
    );
    assert_eq!(fake.arrival_count(), 0);
}

#[test]
fn run_accepts_fips_mode_in_a_fips_region() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut daemon = Daemon::start(&s, &fake, ":use_fips_mode: true\n", &[]);
    assert!(wait_for_poll(&fake, &mut daemon), "{}", daemon.log_text());
}

#[test]
fn run_clamps_the_stop_wait_to_a_day_with_a_warning() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut daemon = Daemon::start(
        &s,
        &fake,
        ":kill_agent_max_wait_time_seconds: 100000\n",
        &[],
    );
    assert!(wait_for_poll(&fake, &mut daemon), "{}", daemon.log_text());
    assert!(
        daemon
            .log_text()
            .contains("kill_agent_max_wait_time_seconds 100000 is more than 24 hours; using 86400"),
        "{}",
        daemon.log_text()
    );
}

/// A loopback stand-in for api.github.com: answers every request with `body` (a tarball)
/// and records each request head.
struct FakeGitHub {
    url: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeGitHub {
    fn serve(body: Vec<u8>) -> Self {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().expect("lock").push(head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        Self { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

/// A GitHub-style tarball: one top directory holding a bundle whose hook records its run.
fn github_tarball(s: &Sandbox) -> Vec<u8> {
    let top = s.path().join("gh").join("acme-app-abc1234");
    std::fs::create_dir_all(top.join("scripts")).expect("mkdir");
    std::fs::write(
        top.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/mark.sh\n",
    )
    .expect("appspec");
    let marker = s.path().join("hook-ran");
    let script = top.join("scripts/mark.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = s.path().join("gh.tar");
    let ok = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(s.path().join("gh"))
        .arg("acme-app-abc1234")
        .status()
        .expect("tar");
    assert!(ok.success());
    std::fs::read(out).expect("read tar")
}

fn local_github(
    s: &Sandbox,
    github: &FakeGitHub,
    location: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> support::Run {
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("local")
        .arg("-c")
        .arg(s.config())
        .args(["-l", location, "-t", "tar"])
        .args(extra)
        .env("CODEDEPLOY_GITHUB_API_URL", &github.url)
        .env_remove("CODEDEPLOY_GITHUB_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    support::Run::from(cmd.output().expect("run binary"))
}

#[test]
fn local_github_tree_ref_with_a_slash_and_the_token_from_the_environment() {
    let s = Sandbox::new();
    let github = FakeGitHub::serve(github_tarball(&s));
    let run = local_github(
        &s,
        &github,
        "https://github.com/acme/app.git/tree/release/1.2",
        &[],
        &[("CODEDEPLOY_GITHUB_TOKEN", "ghp_fromenv")],
    );
    run.assert_ok();
    assert!(s.path().join("hook-ran").exists(), "{}", run.stdout);
    let heads = github.heads();
    assert!(
        heads[0].starts_with("GET /repos/acme/app/tarball/release/1.2 HTTP/1.1"),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: token ghp_fromenv"),
        "{heads:?}"
    );
}

#[test]
fn local_github_commit_url_and_the_token_option_wins_over_the_environment() {
    let s = Sandbox::new();
    let github = FakeGitHub::serve(github_tarball(&s));
    let run = local_github(
        &s,
        &github,
        "https://github.com/acme/app/commit/0123abcd",
        &["--github-token", "ghp_fromflag"],
        &[("CODEDEPLOY_GITHUB_TOKEN", "ghp_fromenv")],
    );
    run.assert_ok();
    let heads = github.heads();
    assert!(
        heads[0].starts_with("GET /repos/acme/app/tarball/0123abcd "),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("authorization: token ghp_fromflag"),
        "{heads:?}"
    );
    assert!(!run.stdout.contains("ghp_fromflag") && !run.stderr.contains("ghp_fromflag"));
}

#[test]
fn local_github_without_a_token_is_anonymous() {
    let s = Sandbox::new();
    let github = FakeGitHub::serve(github_tarball(&s));
    let run = local_github(&s, &github, "https://github.com/acme/app", &[], &[]);
    run.assert_ok();
    let heads = github.heads();
    assert!(
        heads[0].starts_with("GET /repos/acme/app/tarball/HEAD "),
        "{heads:?}"
    );
    assert!(!heads[0].to_ascii_lowercase().contains("authorization"));
}

#[test]
fn v2_cli_spellings_are_accepted() {
    let s = Sandbox::new();
    let out = |args: &[&str]| {
        support::Run::from(
            std::process::Command::new(support::bin())
                .args(args)
                .output()
                .expect("run"),
        )
    };
    let version = out(&["-v"]);
    assert_eq!(version.code, 0, "{version:?}");
    assert!(version.stdout.contains(env!("CARGO_PKG_VERSION")));
    let config = s.config();
    let config = config.to_str().expect("utf8");
    // No daemon runs: LSB 3, whichever way the file is given.
    for args in [
        vec!["--config_file", config, "status"],
        vec!["--config-file", config, "status"],
        vec!["status", "--config-file", config],
    ] {
        let r = out(&args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
    }
    // deploy-local is local.
    let bundle = s.bundle("b", &[("appspec.yml", "version: 0.0\nos: linux\n")]);
    out(&[
        "deploy-local",
        "-c",
        config,
        "-l",
        bundle.to_str().expect("utf8"),
    ])
    .assert_ok();
    out(&[
        "--config_file",
        config,
        "deploy-local",
        "-l",
        bundle.to_str().expect("utf8"),
    ])
    .assert_ok();
}

/// `codedeploy-local -l s3://releases/<key> -t tgz` against the loopback fake S3 (the
/// endpoint from the config), credentials and region from the environment.
fn local_s3(s: &Sandbox, s3: &support::fake_s3::FakeS3, location: &str) -> support::Run {
    s.write_config(&format!(":s3_endpoint_override: {}\n", s3.url()));
    support::Run::from(
        std::process::Command::new(support::bin())
            .arg("local")
            .arg("-c")
            .arg(s.config())
            .args(["-l", location, "-t", "tgz"])
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .env("HOME", s.path())
            .output()
            .expect("run binary"),
    )
}

#[test]
fn bundle_etag_falls_back_to_the_etag_seen_on_download() {
    let s = Sandbox::new();
    let seen = s.path().join("etag-seen");
    let dir = s.bundle(
        "etag",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/etag.sh\n  ApplicationStart:\n    - location: scripts/etag.sh\n",
            ),
            (
                "scripts/etag.sh",
                &format!(
                    "#!/bin/sh\nprintf '%s %s\\n' \"$LIFECYCLE_EVENT\" \"${{BUNDLE_ETAG-unset}}\" >> {}\n",
                    seen.display()
                ),
            ),
        ],
    );
    let tgz = s.path().join("b.tgz");
    support::tgz(&dir, &tgz);
    let s3 = support::fake_s3::FakeS3::start();
    let etag = s3.put("releases", "b.tgz", std::fs::read(&tgz).expect("read tgz"));

    // No ETag in the location: the hooks get the one S3 answered with.
    local_s3(&s, &s3, "s3://releases/b.tgz").assert_ok();
    assert_eq!(
        std::fs::read_to_string(&seen).expect("hook output"),
        format!("AfterInstall {etag}\nApplicationStart {etag}\n")
    );

    // An ETag in the location is what the hooks see, as before.
    std::fs::remove_file(&seen).expect("rm");
    local_s3(&s, &s3, &format!("s3://releases/b.tgz?etag={etag}")).assert_ok();
    assert_eq!(
        std::fs::read_to_string(&seen).expect("hook output"),
        format!("AfterInstall {etag}\nApplicationStart {etag}\n")
    );
}

/// Decision (docs/compatibility.md, v2 section): validation errors of `codedeploy-local` exit
/// 1 as in the Ruby agent, not v2's 2; 2 stays what it is for every command, a command-line
/// usage error.
#[test]
fn local_validation_errors_exit_1_as_ruby_and_usage_errors_exit_2() {
    let s = Sandbox::new();
    let missing = s.path().join("no-such-bundle");
    let run = s.local(&["-l", missing.to_str().expect("utf8")]);
    run.assert_failed_with("is specified as a file or directory which does not exist");
    let run = s.local(&["--no-such-option"]);
    assert_eq!(run.code, 2, "{run:?}");
}
