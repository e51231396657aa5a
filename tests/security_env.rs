//! Issue 12, items 3–6 and 8, through the real binary: what hooks inherit from the agent's
//! environment, the v2 hardening switches, configuration warnings, group names that collide
//! with the deployment root's own folders, the per-group deployment lock, and replies that
//! trickle.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::daemon::{Daemon, HOST, signed, spec_json};
use support::fake_service::{FakeService, Fault, command};
use support::{Run, Sandbox, bin};

/// Every hardening key of the v2 agent, each set to its non-default value.
const V2_HARDENING: &str = "\
restrict_hook_env_to_allowlist: true
strip_loader_env_in_hooks: true
disable_core_dumps: true
restrict_agent_dir_permissions: true
restrict_log_dir_permissions: true
ignore_ownership_in_bundle: true
reject_unconfined_selinux_in_bundle: true
reject_unsafe_permissions_in_bundle: true
reject_symlinks_in_bundle: false
reject_path_traversal_in_bundle: true
reject_symlink_permission_targets: true
disable_powershell_profile_in_hooks: true
archive_max_extraction_size: \"4GB\"
";

/// A bundle whose ApplicationStart hook writes its environment and some of its process facts
/// into `<sandbox>/hook.*`.
fn env_bundle(s: &Sandbox) -> PathBuf {
    let dir = s.path().display();
    let spec =
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/env.sh\n";
    let script = format!(
        "#!/bin/sh\nenv > {dir}/hook.env\ngrep 'Max core file size' /proc/$PPID/limits > {dir}/hook.agent-core\nulimit -c > {dir}/hook.core\n"
    );
    s.bundle("env", &[("appspec.yml", spec), ("scripts/env.sh", &script)])
}

fn hook_env(s: &Sandbox) -> Vec<String> {
    fs::read_to_string(s.path().join("hook.env"))
        .expect("the hook wrote its environment")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn has_var(env: &[String], name: &str) -> bool {
    env.iter().any(|l| l.starts_with(&format!("{name}=")))
}

/// `codedeploy-agent local -c <config> <args>` with extra environment variables.
fn local_with_env(s: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.arg("local").arg("-c").arg(s.config()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run binary"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn hooks_never_see_the_agents_aws_credentials() {
    let s = Sandbox::new();
    let b = env_bundle(&s);
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEHOOKLEAK"),
        ("AWS_SECRET_ACCESS_KEY", "secret-hook-leak"),
        ("AWS_SESSION_TOKEN", "token-hook-leak"),
        ("AWS_CREDENTIAL_FILE", "/root/.aws/leak"),
        ("UNRELATED_MARKER", "kept"),
    ];
    local_with_env(&s, &["-l", b.to_str().expect("utf8"), "-g", "dg"], &creds).assert_ok();
    let env = hook_env(&s);
    for (name, _) in &creds[..4] {
        assert!(!has_var(&env, name), "{name} reached the hook: {env:?}");
    }
    // Without restrict_hook_env_to_allowlist the rest of the environment is inherited.
    assert!(has_var(&env, "UNRELATED_MARKER"), "{env:?}");
    assert!(has_var(&env, "DEPLOYMENT_ID"), "{env:?}");
}

#[test]
fn an_appspec_environment_cannot_put_credentials_back_for_runas_hooks() {
    // runas hooks of another user go through the same environment function.
    if !support::require::root() {
        return;
    }
    let s = Sandbox::new();
    let dir = s.path().display();
    let spec = "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/env.sh\n      runas: nobody\n";
    let script = format!("#!/bin/sh\nenv > {dir}/hook.env\n");
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let b = s.bundle(
        "runas",
        &[("appspec.yml", spec), ("scripts/env.sh", &script)],
    );
    local_with_env(
        &s,
        &["-l", b.to_str().expect("utf8"), "-g", "dg"],
        &[("AWS_SECRET_ACCESS_KEY", "secret-hook-leak")],
    )
    .assert_ok();
    let env = hook_env(&s);
    assert!(!has_var(&env, "AWS_SECRET_ACCESS_KEY"), "{env:?}");
    assert!(env.iter().any(|l| l == "USER=nobody"), "{env:?}");
}

#[test]
fn a_v2_configuration_with_every_hardening_key_loads_without_a_warning() {
    let s = Sandbox::new();
    s.write_config(V2_HARDENING);
    let b = env_bundle(&s);
    let run = local_with_env(
        &s,
        &["-l", b.to_str().expect("utf8"), "-g", "dg"],
        &[
            ("UNRELATED_MARKER", "dropped"),
            ("LD_LIBRARY_PATH", "/nonexistent-loader-path"),
        ],
    );
    run.assert_ok();
    assert!(
        !run.stderr.to_lowercase().contains("warning") && !run.stdout.contains("unknown"),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let log = fs::read_to_string(s.path().join("log/codedeploy-local.log")).unwrap_or_default();
    assert!(!log.contains("unknown configuration key"), "{log}");

    // restrict_hook_env_to_allowlist: PATH, HOME, USER and the deployment variables only.
    // strip_loader_env_in_hooks: no LD_* either (it would not be on the allowlist anyway).
    let env = hook_env(&s);
    assert!(!has_var(&env, "UNRELATED_MARKER"), "{env:?}");
    assert!(!has_var(&env, "LD_LIBRARY_PATH"), "{env:?}");
    assert!(
        has_var(&env, "PATH") && has_var(&env, "LIFECYCLE_EVENT"),
        "{env:?}"
    );
    // disable_core_dumps: the agent's soft core limit is 0.
    let agent_core = fs::read_to_string(s.path().join("hook.agent-core")).expect("limits");
    assert_eq!(
        agent_core.split_whitespace().nth(4),
        Some("0"),
        "{agent_core}"
    );
    // restrict_agent_dir_permissions and restrict_log_dir_permissions.
    assert_eq!(mode(&s.root()), 0o711);
    assert_eq!(mode(&s.root().join("deployment-instructions")), 0o700);
    assert_eq!(mode(&s.root().join("dg")), 0o711);
    assert_eq!(mode(&s.path().join("log")), 0o750);
}

#[test]
fn strip_loader_env_in_hooks_alone_removes_only_the_loader_variables() {
    let s = Sandbox::new();
    let b = env_bundle(&s);
    let args = ["-l", b.to_str().expect("utf8"), "-g", "dg"];
    let env = [
        ("LD_LIBRARY_PATH", "/nonexistent-loader-path"),
        ("UNRELATED_MARKER", "kept"),
    ];
    local_with_env(&s, &args, &env).assert_ok();
    assert!(has_var(&hook_env(&s), "LD_LIBRARY_PATH"), "off by default");
    s.write_config("strip_loader_env_in_hooks: true\n");
    local_with_env(&s, &args, &env).assert_ok();
    let got = hook_env(&s);
    assert!(!has_var(&got, "LD_LIBRARY_PATH"), "{got:?}");
    assert!(has_var(&got, "UNRELATED_MARKER"), "{got:?}");
}

#[test]
fn core_dumps_are_off_for_the_agent_but_hooks_keep_the_hosts_limit() {
    let s = Sandbox::new();
    let b = env_bundle(&s);
    let args = ["-l", b.to_str().expect("utf8"), "-g", "dg"];
    // The test runs the agent under `sh -c 'ulimit -c 4096; exec ...'` so there is a limit
    // to lower.
    let run_with_limit = |s: &Sandbox| {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg("ulimit -S -c 4096 && exec \"$@\"")
            .arg("sh")
            .arg(bin())
            .arg("local")
            .arg("-c")
            .arg(s.config())
            .args(args)
            .output()
            .expect("run");
        Run::from(out).assert_ok();
    };
    run_with_limit(&s);
    let agent = fs::read_to_string(s.path().join("hook.agent-core")).expect("limits");
    assert_eq!(
        agent.split_whitespace().nth(4),
        Some("0"),
        "default on: {agent}"
    );
    let hook = fs::read_to_string(s.path().join("hook.core")).expect("ulimit");
    assert_eq!(
        hook.trim(),
        "4096",
        "the hook keeps the limit the agent was started with"
    );
    s.write_config("disable_core_dumps: false\n");
    run_with_limit(&s);
    let agent = fs::read_to_string(s.path().join("hook.agent-core")).expect("limits");
    // dash's ulimit -c counts 512-byte blocks.
    assert_eq!(agent.split_whitespace().nth(4), Some("2097152"), "{agent}");
}

fn tar_bundle(s: &Sandbox, name: &str, files: &[(&str, &str, u32)], owner: Option<u32>) -> PathBuf {
    let dir = s.path().join("tars").join(name);
    for (rel, content, mode) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let out = s.path().join(format!("{name}.tgz"));
    let mut tar = Command::new("tar");
    tar.arg("-czf").arg(&out).arg("-C").arg(&dir);
    if let Some(id) = owner {
        tar.arg(format!("--owner={id}"))
            .arg(format!("--group={id}"))
            .arg("--numeric-owner");
    }
    assert!(tar.arg(".").status().expect("tar").success());
    out
}

fn deploy_tgz(s: &Sandbox, bundle: &Path) -> Run {
    s.local(&[
        "-l",
        bundle.to_str().expect("utf8"),
        "-t",
        "tgz",
        "-g",
        "dg",
    ])
}

#[test]
fn ignore_ownership_in_bundle_keeps_the_unpacking_user_as_owner() {
    if !support::require::root() {
        return;
    }
    // The agent's own tree never takes the archive's owners (issue #12 item 7, see
    // docs/compatibility.md), so v2's `ignore_ownership_in_bundle` is always in effect here:
    // with the key off, on, and the bundle's uid existing or not, the unpacked file is root's.
    let s = Sandbox::new();
    let spec = "version: 0.0\nos: linux\n";
    let b = tar_bundle(
        &s,
        "owned",
        &[("appspec.yml", spec, 0o644), ("app/data.txt", "x", 0o644)],
        Some(4242),
    );
    let unpacked = |run: &Run| Sandbox::deployment_dir(run).join("deployment-archive/app/data.txt");
    let run = deploy_tgz(&s, &b);
    run.assert_ok();
    assert_eq!(
        fs::metadata(unpacked(&run)).expect("stat").uid(),
        0,
        "key off"
    );
    s.write_config("ignore_ownership_in_bundle: true\n");
    let run = deploy_tgz(&s, &b);
    run.assert_ok();
    assert_eq!(
        fs::metadata(unpacked(&run)).expect("stat").uid(),
        0,
        "key on"
    );
}

#[test]
fn reject_unsafe_permissions_in_bundle_refuses_setuid_entries_and_modes() {
    let s = Sandbox::new();
    let spec = "version: 0.0\nos: linux\n";
    let b = tar_bundle(
        &s,
        "suid",
        &[("appspec.yml", spec, 0o644), ("bin/tool", "x", 0o4755)],
        None,
    );
    deploy_tgz(&s, &b).assert_ok();
    s.write_config("reject_unsafe_permissions_in_bundle: true\n");
    deploy_tgz(&s, &b).assert_failed_with("reject_unsafe_permissions_in_bundle");

    let dest = s.dest().display().to_string();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\npermissions:\n  - object: {dest}/app\n    mode: 4755\n    type:\n      - file\n"
    );
    let b = s.bundle("mode", &[("appspec.yml", &spec), ("app/tool", "x")]);
    let run = s.deploy(&b, "dg2", &[]);
    run.assert_failed_with("mode 4755 with the setuid or setgid bit");
    assert!(
        !s.dest().join("app/tool").exists(),
        "refused before the copy"
    );
}

#[test]
fn reject_unconfined_selinux_in_bundle_refuses_unconfined_types() {
    let s = Sandbox::new();
    let dest = s.dest().display().to_string();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\npermissions:\n  - object: {dest}/app\n    context:\n      type: unconfined_t\n"
    );
    let b = s.bundle("se", &[("appspec.yml", &spec), ("app/a", "x")]);
    let run = s.deploy(&b, "dg", &[]);
    assert!(
        !run.stdout.contains("reject_unconfined_selinux_in_bundle"),
        "off by default: {}",
        run.stdout
    );
    s.write_config("reject_unconfined_selinux_in_bundle: true\n");
    s.deploy(&b, "dg", &[]).assert_failed_with(
        "set the SELinux type unconfined_t, which reject_unconfined_selinux_in_bundle refuses",
    );
}

#[test]
fn archive_max_extraction_size_caps_what_a_bundle_unpacks_to() {
    let s = Sandbox::new();
    let spec = "version: 0.0\nos: linux\n";
    let big = "y".repeat(3000);
    let b = tar_bundle(
        &s,
        "big",
        &[("appspec.yml", spec, 0o644), ("app/big", &big, 0o644)],
        None,
    );
    s.write_config("archive_max_extraction_size: \"4KB\"\n");
    deploy_tgz(&s, &b).assert_ok();
    s.write_config("archive_max_extraction_size: 2KB\n");
    deploy_tgz(&s, &b)
        .assert_failed_with("unpacks to more than archive_max_extraction_size (2000 bytes)");
    s.write_config("archive_max_extraction_size: 2048\n");
    deploy_tgz(&s, &b).assert_failed_with("archive_max_extraction_size (2048 bytes)");
    s.write_config("archive_max_extraction_size: lots\n");
    let run = deploy_tgz(&s, &b);
    assert!(
        run.stdout
            .contains("archive_max_extraction_size: expected a size"),
        "{}",
        run.stdout
    );
}

#[test]
fn unknown_configuration_keys_are_reported_on_stderr_and_in_the_log() {
    let s = Sandbox::new();
    s.write_config("restrict_hook_env_to_alowlist: true\n");
    let b = env_bundle(&s);
    let run = s.deploy(&b, "dg", &[]);
    run.assert_ok();
    let expected = "unknown configuration key restrict_hook_env_to_alowlist ignored";
    assert!(run.stderr.contains(expected), "stderr:\n{}", run.stderr);
    let log = fs::read_to_string(s.path().join("log/codedeploy-local.log")).expect("log");
    assert!(log.contains(expected), "{log}");
    // plan and status (no log of their own) say it on stderr.
    let out = Command::new(bin())
        .args(["plan", "-c"])
        .arg(s.config())
        .args(["-l", b.to_str().expect("utf8")])
        .output()
        .expect("plan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected), "plan stderr:\n{stderr}");
    let out = Command::new(bin())
        .args(["status", "-c"])
        .arg(s.config())
        .output()
        .expect("status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected), "status stderr:\n{stderr}");
}

#[test]
fn a_group_named_like_the_roots_own_folders_is_refused_and_other_groups_keep_their_state() {
    let s = Sandbox::new();
    let b = env_bundle(&s);
    let bundle = b.to_str().expect("utf8");
    s.local(&["-l", bundle, "-g", "dg"]).assert_ok();
    let before = s.instructions("dg_last_successful_install");
    assert!(!before.is_empty());
    for group in [
        "deployment-instructions",
        "deployment-logs",
        "ongoing-deployment",
    ] {
        // Several runs: pruning (max_revisions 5) is what deleted other groups' files.
        for _ in 0..6 {
            s.local(&["-l", bundle, "-g", group])
                .assert_failed_with("has the name of one of the deployment root's own directories");
        }
    }
    assert_eq!(s.instructions("dg_last_successful_install"), before);
    s.local(&["-l", bundle, "-g", "dg"]).assert_ok();
}

#[test]
fn the_daemon_fails_a_command_of_a_reserved_group_with_a_clear_message_and_keeps_polling() {
    if !support::require::openssl() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let b = env_bundle(&s);
    let spec = signed(&spec_json("d-RESERVED", "deployment-instructions", &b));
    fake.set_spec("exec/reserved", "CodeDeploy", spec);
    fake.enqueue(
        HOST,
        command("c-reserved", "DownloadBundle", HOST, "exec/reserved"),
    );
    let completes = fake.wait_for_completes(1, Duration::from_secs(60));
    let c = completes.first().expect("a final report");
    assert_eq!(c.command_status, "Failed");
    let payload = &c.diagnostics.as_ref().expect("diagnostics").payload;
    assert!(
        payload.contains("has the name of one of the deployment root's own directories"),
        "{payload}"
    );
    // Still polling: a normal group's command succeeds afterwards.
    let spec = signed(&spec_json("d-OK", "dg", &b));
    fake.set_spec("exec/ok", "CodeDeploy", spec);
    fake.enqueue(HOST, command("c-ok", "DownloadBundle", HOST, "exec/ok"));
    let completes = fake.wait_for_completes(2, Duration::from_secs(60));
    assert!(
        completes
            .iter()
            .any(|c| c.host_command_identifier == "c-ok" && c.command_status == "Succeeded"),
        "{completes:?}"
    );
}

#[test]
fn a_second_local_deployment_of_a_group_waits_for_the_first() {
    let s = Sandbox::new();
    let dir = s.path().display().to_string();
    let fifo = s.path().join("gate");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let spec = "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n      timeout: 120\n";
    // Each run's hook records its start, then waits for one line on the fifo.
    let script = format!(
        "#!/bin/sh\necho \"start $DEPLOYMENT_ID\" >> {dir}/order\nread line < {dir}/gate\necho \"end $DEPLOYMENT_ID\" >> {dir}/order\n"
    );
    let b = s.bundle(
        "gated",
        &[("appspec.yml", spec), ("scripts/start.sh", &script)],
    );
    let spawn = || {
        Command::new(bin())
            .arg("local")
            .arg("-c")
            .arg(s.config())
            .args(["-l", b.to_str().expect("utf8"), "-g", "dg"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    // Lines of a child's stdout, as they come.
    let lines = |child: &mut std::process::Child| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let order = || fs::read_to_string(s.path().join("order")).unwrap_or_default();
    let mut first = spawn();
    let first_out = lines(&mut first);
    // The first is inside its hook once it has written "start".
    // (codedeploy-local also prints what it uses, such as its log's path, on a pipe.)
    let first_dir = loop {
        let line = first_out
            .recv_timeout(Duration::from_secs(60))
            .expect("first run started");
        if line
            .rsplit('/')
            .next()
            .is_some_and(|last| last.starts_with("d-"))
        {
            break line;
        }
    };
    let gate_open = || {
        // Releases one waiting hook.
        fs::write(&fifo, "go\n").expect("write the fifo");
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !order().contains("start") {
        assert!(
            std::time::Instant::now() < deadline,
            "first hook never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = spawn();
    let second_out = lines(&mut second);
    let mut waiting = None;
    while let Ok(line) = second_out.recv_timeout(Duration::from_secs(30)) {
        if line.starts_with("waiting for deployment") {
            waiting = Some(line);
            break;
        }
    }
    let Some(waiting) = waiting else {
        // Release both hooks so nothing is left running, then fail.
        gate_open();
        gate_open();
        let _ = first.wait();
        let _ = second.wait();
        panic!("the second run did not wait; order so far:\n{}", order());
    };
    let first_id = first_dir
        .rsplit('/')
        .next()
        .expect("deployment id")
        .to_owned();
    assert_eq!(
        waiting,
        format!(
            "waiting for deployment {first_id} of group dg (pid {}) to finish",
            first.id()
        )
    );
    assert_eq!(order().matches("start").count(), 1, "{}", order());
    gate_open();
    assert!(first.wait().expect("first").success());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while order().matches("start").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "second hook never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gate_open();
    assert!(second.wait().expect("second").success());
    let order = order();
    let events: Vec<&str> = order
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(events, ["start", "end", "start", "end"], "{order}");
}

#[test]
fn a_poll_answer_that_trickles_is_given_up_and_polling_continues() {
    if !support::require::openssl() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    // One byte every 200 ms: no single read waits anywhere near http_read_timeout.
    fake.inject(
        Some("PollHostCommand"),
        Fault::Trickle(Duration::from_millis(200)),
        1,
    );
    let b = env_bundle(&s);
    let spec = signed(&spec_json("d-TRICKLE", "dg", &b));
    fake.set_spec("exec/trickle", "CodeDeploy", spec);
    fake.enqueue(
        HOST,
        command("c-trickle", "DownloadBundle", HOST, "exec/trickle"),
    );
    // A misspelt key too: `run` reports it (stderr, which is also the log here).
    let agent = Daemon::start(
        &s,
        &fake,
        ":http_read_timeout: 1\n:bogus_key_for_test: 1\n",
        &[],
    );
    let completes = fake.wait_for_completes(1, Duration::from_secs(90));
    assert!(
        completes
            .iter()
            .any(|c| c.host_command_identifier == "c-trickle" && c.command_status == "Succeeded"),
        "no report after a trickled poll; agent log:\n{}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("whole request"),
        "the timeout is named: {}",
        agent.log_text()
    );
    assert!(
        agent
            .log_text()
            .contains("unknown configuration key bogus_key_for_test ignored"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn a_github_download_that_trickles_is_given_up_and_retried() {
    use codedeploy_agent::revision::ThroughputFloor;
    use codedeploy_agent::revision::github::{GitHubArchive, GitHubFetcher};
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            if n == 0 {
                // A byte every 100 ms of a promised 100 kB, until the client hangs up.
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                while stream.write_all(b"x").and_then(|()| stream.flush()).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            } else {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        }
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fetcher = GitHubFetcher::new(None, runtime.handle().clone())
        .expect("client")
        .with_base_url(&url)
        .with_retry_delays(vec![Duration::from_millis(10)])
        .with_throughput_floor(ThroughputFloor {
            grace: Duration::from_secs(1),
            min_bytes_per_sec: 100,
            stall: Duration::from_secs(5),
        });
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let (tx, rx) = std::sync::mpsc::channel();
    let target = dest.clone();
    std::thread::spawn(move || {
        let archive = GitHubArchive {
            account: "acme",
            repository: "app",
            commit: "abc123",
            bundle_type: None,
            token: None,
        };
        let _ = tx.send(
            fetcher
                .download(&archive, &target)
                .map_err(|e| e.to_string()),
        );
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the trickling download was never given up");
    result.expect("the retry succeeds");
    assert_eq!(fs::read(&dest).expect("read"), b"ok");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn a_daemon_command_waits_for_a_local_deployment_of_its_group() {
    if !support::require::openssl() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let dir = s.path().display().to_string();
    let fifo = s.path().join("gate");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let agent = Daemon::start(&s, &fake, "", &[]);
    // `local` with the daemon's configuration (same root), held inside its hook.
    let spec = "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n      timeout: 120\n";
    let script = format!("#!/bin/sh\ntouch {dir}/held\nread line < {dir}/gate\n");
    let b = s.bundle(
        "held",
        &[("appspec.yml", spec), ("scripts/start.sh", &script)],
    );
    let mut local = Command::new(bin())
        .arg("local")
        .arg("-c")
        .arg(s.config())
        .args(["-l", b.to_str().expect("utf8"), "-g", "dg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn local");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !s.path().join("held").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the local hook never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let env_b = env_bundle(&s);
    fake.set_spec(
        "exec/d",
        "CodeDeploy",
        signed(&spec_json("d-DAEMON", "dg", &env_b)),
    );
    fake.enqueue(HOST, command("c-d", "DownloadBundle", HOST, "exec/d"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !agent.log_text().contains("waiting for deployment") {
        if std::time::Instant::now() > deadline {
            fs::write(&fifo, "go\n").expect("release");
            let _ = local.wait();
            panic!(
                "the daemon did not wait for the local run:\n{}",
                agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent
            .log_text()
            .contains(&format!("of group dg (pid {}) to finish", local.id())),
        "{}",
        agent.log_text()
    );
    assert!(
        fake.completes().is_empty(),
        "the command ran while the lock was held"
    );
    fs::write(&fifo, "go\n").expect("release the local hook");
    assert!(local.wait().expect("local").success());
    let completes = fake.wait_for_completes(1, Duration::from_secs(60));
    assert_eq!(
        completes.first().map(|c| c.command_status.as_str()),
        Some("Succeeded"),
        "{completes:?}"
    );
}

#[test]
fn a_non_dumpable_agent_cannot_be_read_by_processes_of_its_own_user() {
    // PR_SET_DUMPABLE 0: /proc/<agent>/environ (and mem) belong to root, so even a hook of the
    // agent's own user cannot read the agent's memory or environment.
    if !support::require::root() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody exists");
    let s = Sandbox::new();
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::set_permissions(s.dest(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let dir = s.path().display();
    let spec =
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/peek.sh\n";
    let script = format!(
        "#!/bin/sh\nif cat /proc/$PPID/environ > /dev/null 2>&1; then echo readable; else echo denied; fi > {dir}/peek\n"
    );
    let b = s.bundle(
        "peek",
        &[("appspec.yml", spec), ("scripts/peek.sh", &script)],
    );
    let run_as_nobody = || {
        let out = Command::new(bin())
            .arg("local")
            .arg("-c")
            .arg(s.config())
            .args(["-l", b.to_str().expect("utf8"), "-g", "dg"])
            .env("HOME", s.path())
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .output()
            .expect("run");
        Run::from(out).assert_ok();
        fs::read_to_string(s.path().join("peek"))
            .expect("the hook ran")
            .trim()
            .to_owned()
    };
    assert_eq!(
        run_as_nobody(),
        "denied",
        "disable_core_dumps is on by default"
    );
    s.write_config("disable_core_dumps: false\n");
    assert_eq!(run_as_nobody(), "readable");
}

/// Runs `cmd` with its output captured; `None` if it is still running after `limit` (then it
/// is killed).
fn output_within(mut cmd: Command, limit: Duration) -> Option<Run> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(Run::from(out.expect("wait for the agent"))),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
    }
}

#[test]
fn an_s3_bundle_that_trickles_is_given_up_as_a_whole_by_local() {
    use support::fake_s3::{FakeS3, S3Faults};
    let s = Sandbox::new();
    // 64 KiB that gzip cannot shrink: at a byte every 50 ms the bundle would take an hour,
    // while no single read waits anywhere near the stall bound.
    let mut noise = String::with_capacity(64 << 10);
    let mut x: u32 = 0x1234_5678;
    while noise.len() < 64 << 10 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(char::from(b'!' + (x % 90) as u8));
    }
    let dir = s.bundle(
        "trickle",
        &[
            ("appspec.yml", "version: 0.0\nos: linux\n"),
            ("noise.txt", &noise),
        ],
    );
    let tgz = s.path().join("bundle.tgz");
    support::tgz(&dir, &tgz);
    let s3 = FakeS3::start();
    let etag = s3.put(
        "deploys",
        "bundle.tgz",
        fs::read(&tgz).expect("read bundle"),
    );
    s3.set_faults(S3Faults {
        trickle: Some((1, Duration::from_millis(50))),
        ..S3Faults::default()
    });
    s.write_config(&format!(
        "s3_endpoint_override: {}\ndownload_stall_timeout_seconds: 5\n\
         download_min_bytes_per_second: 200\ndownload_throughput_grace_seconds: 1\n",
        s3.url()
    ));
    let mut cmd = Command::new(bin());
    cmd.arg("local")
        .arg("-c")
        .arg(s.config())
        .args([
            "-l",
            &format!("s3://deploys/bundle.tgz?etag={etag}"),
            "-t",
            "tgz",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIATRICKLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", s.path().join("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", s.path().join("no-aws-creds"))
        .env("CODEDEPLOY_LOG", "debug");
    let run = output_within(cmd, Duration::from_secs(60))
        .expect("the trickling S3 download was never given up (bounded per read only?)");
    run.assert_failed_with("too slow");
    // Every ranged GET (the first and its resumes) was broken off by the agent.
    let gets = s3.wait_requests(3, Duration::from_secs(10));
    assert_eq!(gets.len(), 3, "{gets:#?}");
    assert!(
        gets.iter().all(|g| !g.complete && g.range.is_some()),
        "{gets:#?}"
    );
    assert!(
        gets[1..].iter().all(|g| g.if_match.is_some()),
        "resumes are pinned to the ETag: {gets:#?}"
    );
}

#[test]
fn an_identity_document_that_trickles_is_given_up_and_the_daemon_starts() {
    if !support::require::openssl() {
        return;
    }
    use support::fake_imds::FakeImds;
    let s = Sandbox::new();
    let fake = FakeService::start();
    let imds = FakeImds::start();
    imds.set(|st| {
        st.region = "us-east-1".into();
        st.trickle = vec!["/latest/dynamic/instance-identity/document".into()];
    });
    let host = "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0";
    let b = env_bundle(&s);
    fake.set_spec(
        "exec/imds",
        "CodeDeploy",
        signed(&spec_json("d-IMDSTRICKLE", "dg", &b)),
    );
    fake.enqueue(host, command("c-imds", "DownloadBundle", host, "exec/imds"));
    let url = imds.url();
    // The host identifier comes from IMDS, whose identity document trickles once.
    let agent = Daemon::start_as(
        &s,
        &fake,
        host,
        "",
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_HOST_IDENTIFIER", ""),
        ],
    );
    assert_reported_after_a_trickle(
        &fake,
        &imds,
        &agent,
        "c-imds",
        "a trickled identity document",
    );
}

/// The daemon reported `id` as succeeded although IMDS trickled `what`, and it hung up on the
/// trickle (IMDS saw the connection given up).
#[track_caller]
fn assert_reported_after_a_trickle(
    fake: &FakeService,
    imds: &support::fake_imds::FakeImds,
    agent: &Daemon,
    id: &str,
    what: &str,
) {
    let completes = fake.wait_for_completes(1, Duration::from_secs(60));
    assert!(
        completes
            .iter()
            .any(|c| c.host_command_identifier == id && c.command_status == "Succeeded"),
        "no report after {what}; agent log:\n{}",
        agent.log_text()
    );
    assert_eq!(
        imds.wait_trickles_given_up(1, Duration::from_secs(5)),
        1,
        "the agent hung up on the trickle; IMDS saw {:#?}",
        imds.requests()
    );
}

#[test]
fn instance_credentials_that_trickle_are_given_up_and_polling_continues() {
    if !support::require::openssl() {
        return;
    }
    use support::fake_imds::FakeImds;
    use support::fake_service::TestCredentials;
    let s = Sandbox::new();
    let fake = FakeService::start();
    let imds = FakeImds::start();
    imds.set(|st| {
        st.region = "us-east-1".into();
        st.trickle = vec!["/latest/meta-data/iam/security-credentials/agent-role".into()];
    });
    fake.add_credentials(
        TestCredentials::new("ASIAFIRST", "secret-first").with_session_token("session-first"),
    );
    let b = env_bundle(&s);
    fake.set_spec(
        "exec/creds",
        "CodeDeploy",
        signed(&spec_json("d-CREDTRICKLE", "dg", &b)),
    );
    fake.enqueue(
        HOST,
        command("c-creds", "DownloadBundle", HOST, "exec/creds"),
    );
    let url = imds.url();
    // `prod`: credentials from the instance profile only, whose first answer trickles.
    let agent = Daemon::start(
        &s,
        &fake,
        ":codedeploy_test_profile: prod\n",
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "false"),
        ],
    );
    assert_reported_after_a_trickle(&fake, &imds, &agent, "c-creds", "trickled credentials");
}

#[test]
fn the_daemon_refuses_an_appspec_that_leads_out_of_the_bundle() {
    if !support::require::openssl() {
        return;
    }
    // Issue 12 item 1 through the daemon: the same opener as validate, plan and local.
    let s = Sandbox::new();
    let fake = FakeService::start();
    let b = s.bundle("zero", &[("scripts/run.sh", "#!/bin/sh\n")]);
    std::os::unix::fs::symlink("/dev/zero", b.join("appspec.yml")).expect("symlink");
    let spec = signed(&spec_json("d-ZERO", "dg", &b));
    let _agent = Daemon::start(&s, &fake, "", &[]);
    let mut failed = None;
    for name in ["DownloadBundle", "BeforeInstall", "Install"] {
        let c =
            support::daemon::run_commands(&fake, "zero", &[name], &spec, Duration::from_secs(60))
                .remove(0);
        if c.command_status == "Failed" {
            failed = Some(c);
            break;
        }
    }
    let c = failed.expect("a command fails on the appspec");
    let diagnostics = c.diagnostics.map(|d| d.payload).unwrap_or_default();
    assert!(
        diagnostics.contains("leads out of the bundle"),
        "{diagnostics}"
    );
}
