//! Issue 17 item 1, through the real binary against the fake host-commands service: the
//! `UpdateDeploymentAgent` command with a local directory (file://) or a loopback HTTP server
//! standing in for the release bucket. The agent runs from a copy in the sandbox, which is
//! what gets replaced.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::Sandbox;
use support::daemon::{Daemon, HOST, run_commands, signed, spec_json, wait_quiet};
use support::fake_service::{Complete, FakeService, command};

const T: Duration = Duration::from_secs(60);

/// A copy of the agent binary in the sandbox, and its bytes.
fn agent_copy(s: &Sandbox) -> (PathBuf, Vec<u8>) {
    let dir = s.path().join("bin");
    fs::create_dir_all(&dir).expect("mkdir bin");
    let path = dir.join("codedeploy-agent");
    let bytes = fs::read(support::bin()).expect("read the agent binary");
    fs::write(&path, &bytes).expect("copy the agent");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    (path, bytes)
}

/// The agent binary with `marker` appended: still the same program, other bytes.
fn marked_agent(marker: &str) -> Vec<u8> {
    let mut bytes = fs::read(support::bin()).expect("read the agent binary");
    bytes.extend_from_slice(format!("\n{marker}\n").as_bytes());
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes `binary` as release `version` under `releases/`, as packaging/build lays out a
/// tarball and SHA256SUMS (`sums` overrides the checksum).
fn publish(releases: &Path, version: &str, binary: &[u8], sums: Option<&str>) {
    let arch = std::env::consts::ARCH;
    let dir = releases.join(version);
    fs::create_dir_all(&dir).expect("mkdir release");
    let name = format!("codedeploy-agent-{version}-{arch}.tar.gz");
    let tarball = dir.join(&name);
    {
        let out = fs::File::create(&tarball).expect("tarball");
        let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(binary.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("codedeploy-agent-{version}-{arch}/bin/codedeploy-agent"),
            binary,
        )
        .expect("append");
        tar.into_inner().expect("tar").finish().expect("gz");
    }
    let sum = match sums {
        Some(s) => s.to_owned(),
        None => sha256(&fs::read(&tarball).expect("read tarball")),
    };
    fs::write(dir.join("SHA256SUMS"), format!("{sum}  {name}\n")).expect("sums");
}

fn set_latest(releases: &Path, version: &str) {
    fs::create_dir_all(releases).expect("mkdir");
    fs::write(releases.join("latest"), format!("{version}\n")).expect("latest");
}

/// Serves `dir` over HTTP on 127.0.0.1 (GET only, one request per connection).
fn serve_dir(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let file = dir.join(path.trim_start_matches('/'));
                match fs::read(&file) {
                    Ok(body) => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body);
                    }
                    Err(_) => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
                let _ = stream.flush();
                let _ = reader.read(&mut [0u8; 1]);
            });
        }
    });
    format!("http://{addr}")
}

/// Starts the sandbox's copy of the agent with the update keys in `extra`.
fn start(s: &Sandbox, fake: &FakeService, bin: &Path, extra: &str) -> Daemon {
    Daemon::start_bin(s, fake, bin, HOST, extra, &[])
}

fn update_command(fake: &FakeService, id: &str) {
    fake.enqueue(
        HOST,
        command(id, "UpdateDeploymentAgent", HOST, &format!("exec/{id}")),
    );
}

fn completes_of(fake: &FakeService, id: &str) -> Vec<Complete> {
    fake.completes()
        .into_iter()
        .filter(|c| c.host_command_identifier == id)
        .collect()
}

fn wait_complete(fake: &FakeService, id: &str, timeout: Duration) -> Complete {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(c) = completes_of(fake, id).into_iter().next() {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no final report for {id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn message(c: &Complete) -> String {
    let payload = c
        .diagnostics
        .as_ref()
        .map(|d| d.payload.clone())
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&payload)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(payload)
}

fn prev(bin: &Path) -> PathBuf {
    bin.with_file_name("codedeploy-agent.prev")
}

/// Kills the agent the pid file names (a rolled-back agent is nobody's child).
struct PidFileGuard(PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn update_command_installs_the_latest_release_restarts_into_it_and_reports_once() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, old) = agent_copy(&s);
    let releases = s.path().join("releases");
    let new = marked_agent("release 9.9.9");
    publish(&releases, "9.9.9", &new, None);
    set_latest(&releases, "9.9.9");
    let mut agent = start(
        &s,
        &fake,
        &bin,
        &format!(
            ":update_source: file://{}\n:update_health_timeout_seconds: 30\n",
            releases.display()
        ),
    );
    let pid = agent.pid();
    update_command(&fake, "hc-update");
    let done = wait_complete(&fake, "hc-update", T);
    assert_eq!(done.command_status, "Succeeded", "{}", agent.log_text());
    assert!(
        message(&done).contains("updated the agent from"),
        "{}",
        message(&done)
    );
    assert_eq!(
        fs::read(&bin).expect("bin"),
        new,
        "the new binary is in place"
    );
    assert_eq!(
        fs::read(prev(&bin)).expect("prev"),
        old,
        "the old one is kept"
    );
    assert_eq!(agent.child.try_wait().expect("try_wait"), None);
    assert_eq!(agent.pid(), pid, "restarted in place (exec)");
    let all = wait_quiet(&fake, T);
    assert_eq!(
        all.iter()
            .filter(|c| c.host_command_identifier == "hc-update")
            .count(),
        1,
        "reported exactly once: {all:?}"
    );
    // And the new binary goes on running commands.
    let bundle = s.bundle(
        "after",
        &[("appspec.yml", "version: 0.0\nos: linux\n"), ("a.txt", "a")],
    );
    let spec = signed(&spec_json("d-AFTER", "dg", &bundle));
    let done = run_commands(&fake, "after", &["DownloadBundle"], &spec, T);
    assert_eq!(done[0].command_status, "Succeeded");
}

#[test]
fn a_pinned_version_is_installed_instead_of_the_latest_over_http() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, _old) = agent_copy(&s);
    let releases = s.path().join("releases");
    publish(&releases, "9.9.9", &marked_agent("release 9.9.9"), None);
    let pinned = marked_agent("release 0.0.5");
    publish(&releases, "0.0.5", &pinned, None);
    set_latest(&releases, "9.9.9");
    let url = serve_dir(releases);
    let _agent = start(
        &s,
        &fake,
        &bin,
        &format!(
            ":update_source: {url}\n:update_policy: pinned\n:update_pinned_version: 0.0.5\n:update_health_timeout_seconds: 30\n"
        ),
    );
    update_command(&fake, "hc-pinned");
    let done = wait_complete(&fake, "hc-pinned", T);
    assert_eq!(done.command_status, "Succeeded", "{}", message(&done));
    assert!(message(&done).contains("to 0.0.5"), "{}", message(&done));
    assert_eq!(
        fs::read(&bin).expect("bin"),
        pinned,
        "0.0.5, not the latest"
    );
}

#[test]
fn update_policy_off_refuses_with_a_clear_report() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, old) = agent_copy(&s);
    let releases = s.path().join("releases");
    publish(&releases, "9.9.9", &marked_agent("release 9.9.9"), None);
    set_latest(&releases, "9.9.9");
    let mut agent = start(
        &s,
        &fake,
        &bin,
        &format!(
            ":update_source: file://{}\n:update_policy: off\n",
            releases.display()
        ),
    );
    update_command(&fake, "hc-off");
    let done = wait_complete(&fake, "hc-off", T);
    assert_eq!(done.command_status, "Failed");
    assert!(
        message(&done).starts_with("update_policy is off in "),
        "{}",
        message(&done)
    );
    assert_eq!(fs::read(&bin).expect("bin"), old);
    assert!(!prev(&bin).exists());
    assert_eq!(agent.child.try_wait().expect("try_wait"), None);
}

#[test]
fn a_bad_checksum_is_refused_and_the_old_binary_kept() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, old) = agent_copy(&s);
    let releases = s.path().join("releases");
    publish(
        &releases,
        "9.9.9",
        &marked_agent("release 9.9.9"),
        Some(&"0".repeat(64)),
    );
    set_latest(&releases, "9.9.9");
    let mut agent = start(
        &s,
        &fake,
        &bin,
        &format!(":update_source: file://{}\n", releases.display()),
    );
    let pid = agent.pid();
    update_command(&fake, "hc-bad");
    let done = wait_complete(&fake, "hc-bad", T);
    assert_eq!(done.command_status, "Failed");
    assert!(
        message(&done).starts_with("checksum mismatch for "),
        "{}",
        message(&done)
    );
    assert_eq!(fs::read(&bin).expect("bin"), old, "the old binary is kept");
    assert!(!prev(&bin).exists());
    let leftovers: Vec<_> = fs::read_dir(bin.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "nothing left beside the binary: {leftovers:?}"
    );
    assert_eq!(agent.child.try_wait().expect("try_wait"), None);
    assert_eq!(agent.pid(), pid);
}

#[test]
fn an_update_waits_until_the_running_command_finishes() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, old) = agent_copy(&s);
    let releases = s.path().join("releases");
    let new = marked_agent("release 9.9.9");
    publish(&releases, "9.9.9", &new, None);
    set_latest(&releases, "9.9.9");
    let _agent = start(
        &s,
        &fake,
        &bin,
        &format!(
            ":update_source: file://{}\n:update_health_timeout_seconds: 30\n",
            releases.display()
        ),
    );
    let holding = s.path().join("holding");
    let release = s.path().join("go");
    let hold = format!(
        "#!/bin/sh\ntouch {}\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
        holding.display(),
        release.display()
    );
    let dest = s.dest().display().to_string();
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
    let spec = signed(&spec_json("d-HELD", "dg", &b));
    let done = run_commands(&fake, "held", &["DownloadBundle"], &spec, T);
    assert_eq!(done[0].command_status, "Succeeded");
    fake.set_spec("held/exec/hook", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("hc-hook", "BeforeInstall", HOST, "held/exec/hook"),
    );
    assert!(fake.wait_until(T, |_| holding.exists()), "the hook runs");

    update_command(&fake, "hc-deferred");
    let deadline = std::time::Instant::now() + T;
    while !fake
        .acks()
        .iter()
        .any(|a| a.host_command_identifier == "hc-deferred")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the update is acknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Deferred: polling stops, and nothing changes while the hook runs.
    let polls = fake.requests_for("PollHostCommand").len();
    assert!(
        !fake.wait_until(Duration::from_secs(2), |r| r
            .iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls + 1),
        "the agent keeps polling while an update waits"
    );
    assert_eq!(
        fs::read(&bin).expect("bin"),
        old,
        "not replaced under a running command"
    );
    assert!(completes_of(&fake, "hc-deferred").is_empty());

    fs::write(&release, "").expect("release the hook");
    let hook = wait_complete(&fake, "hc-hook", T);
    assert_eq!(hook.command_status, "Succeeded");
    let update = wait_complete(&fake, "hc-deferred", T);
    assert_eq!(update.command_status, "Succeeded", "{}", message(&update));
    assert_eq!(fs::read(&bin).expect("bin"), new);
    let order: Vec<String> = fake
        .completes()
        .into_iter()
        .map(|c| c.host_command_identifier)
        .filter(|id| id == "hc-hook" || id == "hc-deferred")
        .collect();
    assert_eq!(order, ["hc-hook", "hc-deferred"]);
}

#[test]
fn a_new_binary_that_never_comes_up_is_rolled_back_and_reported_once() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let (bin, old) = agent_copy(&s);
    let releases = s.path().join("releases");
    // Answers --version (so it passes the pre-switch check), but `run` fails at once.
    let broken = b"#!/bin/sh\nif [ \"$1\" = --version ]; then echo codedeploy-agent 9.9.9; exit 0; fi\necho broken >&2\nexit 3\n";
    publish(&releases, "9.9.9", broken, None);
    set_latest(&releases, "9.9.9");
    let _guard = PidFileGuard(s.path().join("pid/codedeploy-agent.pid"));
    let mut agent = start(
        &s,
        &fake,
        &bin,
        &format!(
            ":update_source: file://{}\n:update_health_timeout_seconds: 3\n",
            releases.display()
        ),
    );
    update_command(&fake, "hc-broken");
    let exited = agent.wait(T).expect("the broken binary exits");
    assert_eq!(exited.code(), Some(3), "{}", agent.log_text());
    let done = wait_complete(&fake, "hc-broken", T);
    assert_eq!(done.command_status, "Failed");
    assert!(
        message(&done).contains("did not reach its first poll")
            && message(&done).contains("rolled back to"),
        "{}",
        message(&done)
    );
    assert_eq!(fs::read(&bin).expect("bin"), old, "the old binary is back");
    let all = wait_quiet(&fake, T);
    assert_eq!(
        all.iter()
            .filter(|c| c.host_command_identifier == "hc-broken")
            .count(),
        1,
        "reported exactly once: {all:?}"
    );
    // The restored agent polls.
    let polls = fake.requests_for("PollHostCommand").len();
    assert!(fake.wait_until(T, |r| {
        r.iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls
    }));
}
