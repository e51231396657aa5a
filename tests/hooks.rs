//! Hook execution against real `/bin/sh` scripts in temporary directories.

#[path = "support/require.rs"]
mod require;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codedeploy_agent::appspec::model::{Position, Script};
use codedeploy_agent::deploy::hooks::{
    EventReport, EventRun, HookEnv, HookError, HookOptions, ScriptError, ScriptErrorCode, run_event,
};
use tempfile::TempDir;

struct Fixture {
    _dir: TempDir,
    root: PathBuf,
    archive: PathBuf,
    deployment: PathBuf,
    env: HookEnv,
    options: HookOptions,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    // Readable by a runas user too.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
    let deployment = root.join("dg-1").join("d-TEST1");
    let archive = deployment.join("deployment-archive");
    fs::create_dir_all(&archive).expect("mkdir");
    for d in [root.join("dg-1"), deployment.clone(), archive.clone()] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    Fixture {
        _dir: dir,
        root,
        archive,
        deployment,
        env: HookEnv {
            lifecycle_event: "ApplicationStart".into(),
            deployment_id: "d-TEST1".into(),
            application_name: "app".into(),
            deployment_group_name: "dg".into(),
            deployment_group_id: "dg-1".into(),
            extra: vec![
                ("BUNDLE_BUCKET".into(), "bucket".into()),
                ("BUNDLE_KEY".into(), "key.zip".into()),
            ],
        },
        options: HookOptions {
            kill_grace: Duration::from_secs(1),
            ..HookOptions::default()
        },
    }
}

fn script(location: &str, timeout: u64) -> Script {
    Script {
        location: location.into(),
        timeout,
        runas: None,
        sudo: false,
        position: Position::default(),
    }
}

impl Fixture {
    fn write(&self, location: &str, body: &str) -> PathBuf {
        self.write_mode(location, body, 0o755)
    }

    fn write_mode(&self, location: &str, body: &str, mode: u32) -> PathBuf {
        let path = self.archive.join(location);
        let parent = path.parent().expect("has a parent");
        fs::create_dir_all(parent).expect("mkdir");
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(&path, body).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn run(&self, scripts: &[Script]) -> Result<EventReport, HookError> {
        run_event(&EventRun {
            event: "ApplicationStart",
            scripts,
            archive_dir: &self.archive,
            deployment_dir: &self.deployment,
            env: &self.env,
            options: &self.options,
            first_script: 0,
        })
    }

    fn run_err(&self, scripts: &[Script]) -> ScriptError {
        match self.run(scripts) {
            Err(HookError::Script(e)) => e,
            other => panic!("expected a script error, got {other:?}"),
        }
    }

    fn scripts_log(&self) -> String {
        fs::read_to_string(self.deployment.join("logs/scripts.log")).expect("scripts.log")
    }

    fn tmp(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (LifecycleEvent - \w+|Script - .+|\[stdout\].*|\[stderr\].*)$`
fn scripts_log_line_ok(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let shape = b"dddd-dd-dd dd:dd:dd ";
    for (i, s) in shape.iter().enumerate() {
        let ok = match s {
            b'd' => b[i].is_ascii_digit(),
            other => b[i] == *other,
        };
        if !ok {
            return false;
        }
    }
    let rest = &line[20..];
    if let Some(event) = rest.strip_prefix("LifecycleEvent - ") {
        !event.is_empty() && event.chars().all(|c| c.is_alphanumeric() || c == '_')
    } else if let Some(loc) = rest.strip_prefix("Script - ") {
        !loc.is_empty()
    } else {
        rest.starts_with("[stdout]") || rest.starts_with("[stderr]")
    }
}

fn assert_scripts_log_format(log: &str) {
    for line in log.lines() {
        assert!(scripts_log_line_ok(line), "bad scripts.log line: {line:?}");
    }
}

/// Alive and not a zombie.
/// Signals are delivered asynchronously: a grandchild may take a moment to be gone.
fn gone_soon(pid: i32) -> bool {
    let by = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(10));
    }
    !alive(pid)
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(s) = fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a leftover test process on drop, whatever the test outcome.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn success_exports_the_environment_runs_in_the_archive_with_null_stdin() {
    let f = fixture();
    let out = f.tmp("env.txt");
    f.write(
        "scripts/env.sh",
        &format!(
            "#!/bin/sh\nenv > '{0}'\necho \"CWD=$(pwd -P)\" >> '{0}'\necho \"STDIN=$(readlink /proc/$$/fd/0)\" >> '{0}'\necho \"READ=$(cat | wc -c)\" >> '{0}'\n",
            out.display()
        ),
    );
    let report = f.run(&[script("scripts/env.sh", 10)]).expect("succeeds");
    assert_eq!(report.scripts.len(), 1);
    let env = fs::read_to_string(&out).expect("env written");
    for want in [
        "LIFECYCLE_EVENT=ApplicationStart",
        "DEPLOYMENT_ID=d-TEST1",
        "APPLICATION_NAME=app",
        "DEPLOYMENT_GROUP_NAME=dg",
        "DEPLOYMENT_GROUP_ID=dg-1",
        "BUNDLE_BUCKET=bucket",
        "BUNDLE_KEY=key.zip",
        "STDIN=/dev/null",
        "READ=0",
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in:\n{env}");
    }
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "inherited env");
    let cwd = fs::canonicalize(&f.archive).expect("canonical");
    assert!(
        env.lines().any(|l| l == format!("CWD={}", cwd.display())),
        "cwd is the archive:\n{env}"
    );
}

#[test]
fn a_path_with_spaces_runs() {
    let f = fixture();
    f.write("my scripts/start app.sh", "#!/bin/sh\necho spaced\n");
    f.run(&[script("my scripts/start app.sh", 10)])
        .expect("succeeds");
    let log = f.scripts_log();
    assert!(log.contains(" Script - my scripts/start app.sh\n"), "{log}");
    assert!(log.contains(" [stdout]spaced\n"), "{log}");
}

#[test]
fn scripts_log_has_the_aws_line_format_and_no_ansi() {
    let f = fixture();
    f.write(
        "scripts/out.sh",
        "#!/bin/sh\necho one\necho two >&2\nprintf '\\033[1;31mred\\033[0m plain\\n'\nprintf '\\033]0;title\\007tail\\n'\necho\nprintf 'no newline'\n",
    );
    f.run(&[script("scripts/out.sh", 10)]).expect("succeeds");
    let log = f.scripts_log();
    assert_scripts_log_format(&log);
    assert!(!log.contains('\x1b'), "ANSI stripped: {log:?}");
    assert!(!log.contains('\x07'), "OSC stripped: {log:?}");
    let entries: Vec<&str> = log.lines().map(|l| &l[20..]).collect();
    assert_eq!(entries[0], "LifecycleEvent - ApplicationStart");
    assert_eq!(entries[1], "Script - scripts/out.sh");
    for want in [
        "[stdout]one",
        "[stderr]two",
        "[stdout]red plain",
        "[stdout]tail",
        "[stdout]",
        "[stdout]no newline",
    ] {
        assert!(entries.contains(&want), "missing {want:?} in {entries:?}");
    }
    assert!(log.ends_with("[stdout]no newline"), "final line kept as is");
}

#[test]
fn the_deployments_log_gets_every_entry() {
    let mut f = fixture();
    let dlog = f
        .root
        .join("deployment-logs/codedeploy-agent-deployments.log");
    f.options.deployments_log = Some(dlog.clone());
    f.write("s.sh", "#!/bin/sh\necho hello\n");
    f.run(&[script("s.sh", 10)]).expect("succeeds");
    let text = fs::read_to_string(&dlog).expect("deployments log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, entry) in lines.iter().zip([
        "LifecycleEvent - ApplicationStart",
        "Script - s.sh",
        "[stdout]hello",
    ]) {
        // [YYYY-MM-DD HH:MM:SS.mmm] [d-TEST1]<entry>
        assert_eq!(&line[0..1], "[");
        assert_eq!(&line[20..21], ".");
        assert_eq!(&line[24..], format!("] [d-TEST1]{entry}"), "{line}");
    }
}

#[test]
fn exit_3_fails_with_code_4_and_the_aws_message() {
    let f = fixture();
    f.write("scripts/start.sh", "#!/bin/sh\necho starting\nexit 3\n");
    let e = f.run_err(&[script("scripts/start.sh", 10)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptFailed);
    assert_eq!(e.script_name, "scripts/start.sh");
    assert_eq!(
        e.message,
        "Script at specified location: scripts/start.sh failed with exit code 3"
    );
    let (summary, tail) = e.log.split_once('\n').expect("summary line");
    assert!(
        summary.contains("ApplicationStart failed at script 1 of 1"),
        "{summary}"
    );
    assert!(summary.contains(&e.message), "{summary}");
    assert_eq!(
        tail,
        "LifecycleEvent - ApplicationStart\nScript - scripts/start.sh\n[stdout]starting\n"
    );
    let payload: serde_json::Value = serde_json::from_str(&e.payload_json()).expect("json");
    assert_eq!(payload["error_code"], 4);
    assert_eq!(payload["script_name"], "scripts/start.sh");
}

#[test]
fn the_payload_tail_follows_the_aws_quirk_end_to_end() {
    let f = fixture();
    // "[stdout]" + 91 chars + "\n" = 100-char entries: AWS keeps 20 of 50.
    f.write(
        "s.sh",
        &format!(
            "#!/bin/sh\ni=0\nwhile [ $i -lt 50 ]; do echo \"{}\"; i=$((i+1)); done\nexit 1\n",
            "x".repeat(91)
        ),
    );
    let e = f.run_err(&[script("s.sh", 10)]);
    let (_, tail) = e.log.split_once('\n').expect("summary line");
    assert_eq!(tail.lines().count(), 20, "{tail}");
}

#[test]
fn a_missing_script_fails_with_code_1_and_the_normalised_path() {
    let f = fixture();
    let e = f.run_err(&[script("scripts/./sub/../missing.sh", 10)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptMissing);
    assert_eq!(
        e.message,
        format!(
            "Script does not exist at specified location: {}/scripts/missing.sh",
            f.archive.display()
        )
    );
    assert!(
        e.log.ends_with("\nLifecycleEvent - ApplicationStart\n"),
        "{}",
        e.log
    );
}

#[test]
fn a_script_outside_the_archive_is_refused() {
    let f = fixture();
    let e = f.run_err(&[script("../../../../../../bin/sh", 10)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptMissing);
    assert!(
        e.message.contains("outside the deployment archive"),
        "{}",
        e.message
    );

    fs::create_dir_all(f.archive.join("scripts")).expect("mkdir");
    std::os::unix::fs::symlink("/bin/true", f.archive.join("scripts/evil.sh")).expect("symlink");
    let e = f.run_err(&[script("scripts/evil.sh", 10)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptMissing);
    assert!(
        e.message.contains("outside the deployment archive"),
        "{}",
        e.message
    );
}

#[test]
fn a_non_executable_script_is_made_executable_and_runs() {
    let f = fixture();
    let marker = f.tmp("ran");
    let path = f.write_mode(
        "scripts/noexec.sh",
        &format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
        0o644,
    );
    f.run(&[script("scripts/noexec.sh", 10)]).expect("succeeds");
    assert!(marker.exists());
    let mode = fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn a_script_without_a_shebang_runs_with_sh() {
    let f = fixture();
    f.write("plain.sh", "echo from-sh\n");
    f.run(&[script("plain.sh", 10)]).expect("succeeds");
    assert!(f.scripts_log().contains("[stdout]from-sh\n"));
}

#[test]
fn a_timeout_terms_the_process_group_and_fails_with_code_3() {
    let f = fixture();
    let marker = f.tmp("term");
    let pidfile = f.tmp("sleep.pid");
    f.write(
        "scripts/slow.sh",
        &format!(
            "#!/bin/sh\ntrap 'echo TERM > \"{}\"; exit 1' TERM\nsleep 100 &\necho $! > '{}'\nwait\n",
            marker.display(),
            pidfile.display()
        ),
    );
    let start = Instant::now();
    let e = f.run_err(&[script("scripts/slow.sh", 1)]);
    let elapsed = start.elapsed();
    assert_eq!(e.code, ScriptErrorCode::ScriptTimedOut);
    assert_eq!(
        e.message,
        "Script at specified location: scripts/slow.sh failed to complete in 1 seconds"
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(
        fs::read_to_string(&marker).expect("trap ran").trim(),
        "TERM"
    );
    let pid = read_pid(&pidfile);
    let _cleanup = KillOnDrop(pid);
    assert!(
        gone_soon(pid),
        "the background sleep in the group got TERM too"
    );
    assert!(e.log.contains("sent TERM"), "{}", e.log);
}

#[test]
fn a_script_ignoring_term_is_killed_after_the_grace() {
    let f = fixture();
    let pidfile = f.tmp("sleep.pid");
    f.write(
        "stubborn.sh",
        &format!(
            "#!/bin/sh\ntrap '' TERM\nsleep 100 &\necho $! > '{}'\nwhile :; do wait; done\n",
            pidfile.display()
        ),
    );
    let start = Instant::now();
    let e = f.run_err(&[script("stubborn.sh", 1)]);
    let elapsed = start.elapsed();
    assert_eq!(e.code, ScriptErrorCode::ScriptTimedOut);
    // 1 s timeout + 1 s grace.
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let pid = read_pid(&pidfile);
    let _cleanup = KillOnDrop(pid);
    assert!(gone_soon(pid), "the TERM-ignoring sleep was KILLed");
    assert!(e.log.contains("then KILL"), "{}", e.log);
}

#[test]
fn a_background_child_does_not_hold_the_event_and_keeps_running() {
    let f = fixture();
    let pidfile = f.tmp("bg.pid");
    f.write(
        "scripts/daemon.sh",
        &format!(
            "#!/bin/sh\n( sleep 1; echo late-output; exec sleep 30 ) &\necho $! > '{}'\necho started\nexit 0\n",
            pidfile.display()
        ),
    );
    let start = Instant::now();
    let report = f.run(&[script("scripts/daemon.sh", 20)]).expect("succeeds");
    let elapsed = start.elapsed();
    let pid = read_pid(&pidfile);
    let _cleanup = KillOnDrop(pid);
    assert!(
        elapsed < Duration::from_secs(1),
        "returned after {elapsed:?}"
    );
    assert!(alive(pid), "the background child is unharmed");
    assert!(f.scripts_log().contains("[stdout]started\n"));

    let (stdout, _) = report.scripts[0]
        .output_files
        .clone()
        .expect("file capture");
    assert_eq!(
        stdout,
        f.deployment
            .join("logs/hooks/01-ApplicationStart-daemon.sh.stdout")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(&stdout).expect("stdout file");
        if text.contains("late-output") {
            assert!(text.starts_with("started\n"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "late output never arrived: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(alive(pid), "still alive after writing (no SIGPIPE)");
}

#[test]
fn legacy_mode_fails_with_code_6_when_a_child_holds_stdout() {
    let mut f = fixture();
    f.options.wait_for_inherited_output = true;
    let pidfile = f.tmp("bg.pid");
    f.write(
        "scripts/daemon.sh",
        &format!(
            "#!/bin/sh\nsleep 30 &\necho $! > '{}'\necho started\nexit 0\n",
            pidfile.display()
        ),
    );
    let start = Instant::now();
    let e = f.run_err(&[script("scripts/daemon.sh", 1)]);
    let elapsed = start.elapsed();
    let pid = read_pid(&pidfile);
    let _cleanup = KillOnDrop(pid);
    assert_eq!(e.code, ScriptErrorCode::OutputsLeftOpen);
    assert_eq!(
        e.message,
        "Script at specified location: scripts/daemon.sh failed to close STDOUT"
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "waited for the timeout: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(f.scripts_log().contains("[stdout]started\n"));
}

#[test]
fn legacy_mode_succeeds_when_outputs_close() {
    let mut f = fixture();
    f.options.wait_for_inherited_output = true;
    f.write(
        "s.sh",
        "#!/bin/sh\necho out\necho err >&2\nsleep 1 >/dev/null 2>&1 &\n",
    );
    let report = f.run(&[script("s.sh", 10)]).expect("succeeds");
    assert_eq!(report.scripts[0].output_files, None);
    let log = f.scripts_log();
    assert!(
        log.contains("[stdout]out\n") && log.contains("[stderr]err\n"),
        "{log}"
    );
}

#[test]
fn the_first_failing_script_stops_the_event() {
    let f = fixture();
    let marker = f.tmp("second-ran");
    f.write("a.sh", "#!/bin/sh\nexit 1\n");
    f.write(
        "b.sh",
        &format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    );
    let e = f.run_err(&[script("a.sh", 10), script("b.sh", 10)]);
    assert_eq!(e.script_name, "a.sh");
    assert!(
        e.log
            .starts_with("[ApplicationStart failed at script 1 of 2"),
        "{}",
        e.log
    );
    assert!(!marker.exists());
    assert!(!f.scripts_log().contains("Script - b.sh"));
}

#[test]
fn a_script_killed_by_a_signal_says_so() {
    let f = fixture();
    f.write("die.sh", "#!/bin/sh\nkill -9 $$\n");
    let e = f.run_err(&[script("die.sh", 10)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptFailed);
    assert_eq!(
        e.message,
        "Script at specified location: die.sh failed with exit code 137 (killed by signal SIGKILL)"
    );
}

#[test]
fn a_huge_timeout_does_not_overflow() {
    let f = fixture();
    f.write("s.sh", "#!/bin/sh\nexit 0\n");
    f.run(&[script("s.sh", u64::MAX)]).expect("succeeds");
    f.write("f.sh", "#!/bin/sh\nexit 2\n");
    let e = f.run_err(&[script("f.sh", u64::MAX)]);
    assert_eq!(e.code, ScriptErrorCode::ScriptFailed);
}

#[test]
fn huge_output_without_newlines_is_split_into_bounded_lines() {
    let f = fixture();
    f.write(
        "flood.sh",
        "#!/bin/sh\nhead -c 3000000 /dev/zero | tr '\\0' x\necho\necho done\n",
    );
    f.run(&[script("flood.sh", 60)]).expect("succeeds");
    let log = f.scripts_log();
    assert_scripts_log_format(&log);
    assert!(log.lines().all(|l| l.len() <= 20 + 8 + 16 * 1024));
    let xs: usize = log
        .lines()
        .filter_map(|l| l.get(20..)?.strip_prefix("[stdout]"))
        .map(|s| s.bytes().filter(|&b| b == b'x').count())
        .sum();
    assert_eq!(xs, 3_000_000);
    assert!(log.ends_with("[stdout]done\n"));
}

#[test]
fn an_event_without_scripts_writes_nothing() {
    let f = fixture();
    let report = f.run(&[]).expect("noop");
    assert!(report.scripts.is_empty());
    assert!(!f.deployment.join("logs").exists());
}

#[test]
fn sudo_as_root_changes_nothing() {
    if !require::root() {
        return;
    }
    let f = fixture();
    f.write("s.sh", "#!/bin/sh\nid -u\n");
    let mut s = script("s.sh", 10);
    s.sudo = true;
    f.run(&[s]).expect("succeeds without a sudo binary");
    assert!(f.scripts_log().contains("[stdout]0\n"));
}

#[test]
fn runas_an_unknown_user_fails_with_code_4() {
    let f = fixture();
    f.write("s.sh", "#!/bin/sh\nexit 0\n");
    let mut s = script("s.sh", 10);
    s.runas = Some("no-such-user-cdhooks".into());
    let e = f.run_err(&[s]);
    assert_eq!(e.code, ScriptErrorCode::ScriptFailed);
    assert!(
        e.message.starts_with(
            "Script at specified location: s.sh run as user no-such-user-cdhooks failed with error UnknownUser with message "
        ),
        "{}",
        e.message
    );
}

/// A system user created for one test and removed afterwards.
struct TestUser(String);

impl TestUser {
    fn create() -> Self {
        let name = format!("cdhk{}", std::process::id());
        let status = std::process::Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", "-d", "/nonexistent-cdhk", &name])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd {name}");
        TestUser(name)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(&self.0).status();
    }
}

#[test]
fn runas_switches_user_without_su() {
    if !require::root() {
        return;
    }
    let user = TestUser::create();
    let f = fixture();
    f.write(
        "scripts/whoami.sh",
        "#!/bin/sh\necho \"uid=$(id -u) user=$USER logname=$LOGNAME home=$HOME shell=$SHELL\"\necho \"groups=$(id -G)\"\n",
    );
    let mut s = script("scripts/whoami.sh", 10);
    s.runas = Some(user.0.clone());
    f.run(&[s.clone()]).expect("succeeds");
    let log = f.scripts_log();
    let pw = nix::unistd::User::from_name(&user.0)
        .expect("lookup")
        .expect("exists");
    let want = format!(
        "[stdout]uid={} user={1} logname={1} home=/nonexistent-cdhk shell=/bin/sh\n",
        pw.uid, user.0
    );
    assert!(log.contains(&want), "want {want:?} in {log}");
    assert!(pw.uid.as_raw() != 0);
    assert!(
        !log.contains("groups=0"),
        "root's groups were dropped: {log}"
    );

    f.write("scripts/fail.sh", "#!/bin/sh\nexit 3\n");
    let mut s = script("scripts/fail.sh", 10);
    s.runas = Some(user.0.clone());
    let e = f.run_err(&[s]);
    assert_eq!(
        e.message,
        format!(
            "Script at specified location: scripts/fail.sh run as user {} failed with exit code 3",
            user.0
        )
    );
}

#[test]
fn a_rerun_logs_only_its_own_output() {
    let f = fixture();
    f.write("s.sh", "#!/bin/sh\necho once-per-run\n");
    f.run(&[script("s.sh", 10)]).expect("first run");
    let report = f.run(&[script("s.sh", 10)]).expect("second run");
    let log = f.scripts_log();
    assert_eq!(log.matches("[stdout]once-per-run\n").count(), 2, "{log}");
    assert_eq!(
        log.matches("LifecycleEvent - ApplicationStart\n").count(),
        2
    );
    // The per-deployment file keeps both runs' output.
    let (stdout, _) = report.scripts[0].output_files.clone().expect("files");
    assert_eq!(
        fs::read_to_string(stdout).expect("stdout file"),
        "once-per-run\nonce-per-run\n"
    );
}
