//! The shipped systemd unit, configuration and installer scripts (packaging/, systemd/):
//! the unit passes `systemd-analyze verify` without a word, `install.sh` lays out exactly the
//! AWS agent's files and keeps an operator's config, and the start/restart rules hold (a fake
//! `systemctl` on PATH records what the scripts ask of systemd). The built .rpm is checked
//! against the .deb with Debian's `rpm` (`CODEDEPLOY_AGENT_DIST`; a skip line without it, a
//! failure under CI=true): listing, scriptlets, and a scratch-root install, upgrade and erase.

#[path = "support/require.rs"]
mod require;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use codedeploy_agent::config::Config;

const UNIT: &str = "codedeploy-agent.service";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `key=` in the unit (the last one), as systemd reads it.
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .map(str::to_owned)
}

#[test]
fn unit_verifies_without_any_output() {
    if !require::tool(
        "systemd-analyze",
        &["--version"],
        "apt-get install -y systemd",
    ) {
        return;
    }
    let unit = read(&repo("systemd/codedeploy-agent.service"));
    assert_eq!(
        unit_value(&unit, "ExecStart").as_deref(),
        Some("/opt/codedeploy-agent/bin/codedeploy-agent run")
    );
    // verify fails when ExecStart's binary does not exist: point it at the one just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join(UNIT);
    let exec = format!("ExecStart={} run", env!("CARGO_BIN_EXE_codedeploy-agent"));
    let text: Vec<String> = unit
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                exec.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    fs::write(&copy, text.join("\n") + "\n").expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown keys and bad values are only warnings (rc 0), so any output at all fails.
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
}

#[test]
fn unit_settings_match_the_daemon() {
    let unit = read(&repo("systemd/codedeploy-agent.service"));
    let get = |k: &str| unit_value(&unit, k).unwrap_or_else(|| panic!("{k}= missing"));
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("NotifyAccess"), "main");
    // The daemon stops pinging after 230 s of a silent poll loop (daemon::agent).
    let watchdog: u64 = get("WatchdogSec").parse().expect("WatchdogSec in seconds");
    assert!(watchdog > 230 + 30, "WatchdogSec={watchdog}");
    // Graceful stop waits up to kill_agent_max_wait_time_seconds, then stops the hooks.
    let default_wait = Config::system_defaults().kill_agent_max_wait_time_seconds;
    let stop: u64 = get("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > default_wait + 10,
        "TimeoutStopSec={stop} vs {default_wait}"
    );
    assert_eq!(get("KillMode"), "process");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("OOMPolicy"), "continue");
    for breaks_hooks in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelModules",
        "ProtectClock",
        "RestrictSUIDSGID",
        "MemoryDenyWriteExecute",
    ] {
        assert!(
            unit_value(&unit, breaks_hooks).is_none(),
            "{breaks_hooks}= would apply to every hook script (docs/operations.md)"
        );
    }
}

#[test]
fn shipped_config_is_the_aws_default() {
    let path = repo("packaging/codedeployagent.yml");
    let c = Config::parse(&read(&path), &path).expect("the shipped config parses");
    assert_eq!(
        c.root_dir,
        Path::new("/opt/codedeploy-agent/deployment-root")
    );
    assert_eq!(c.log_dir, Path::new("/var/log/aws/codedeploy-agent/"));
    assert_eq!(c.pid_dir, Path::new("/opt/codedeploy-agent/state/.pid/"));
    assert_eq!(c.program_name, "codedeploy-agent");
    assert!(!c.verbose);
    assert_eq!(c.wait_between_runs, 1);
    assert_eq!(c.max_revisions, 5);
    assert_eq!(c.proxy_uri, None);
}

/// An unpacked release tarball (packaging/build makes the same) and a fake `systemctl`.
struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    /// With a stand-in script for the binary: the debug binary is hundreds of MB, and only
    /// the layout test needs the real one.
    fn new() -> Self {
        Self::build(false)
    }

    fn with_real_binary() -> Self {
        Self::build(true)
    }

    fn build(real_binary: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Self { dir };
        let t = s.tarball();
        for sub in ["bin", "conf", "systemd"] {
            fs::create_dir_all(t.join(sub)).expect("mkdir");
        }
        let copy = |from: &Path, to: PathBuf, mode: u32| {
            fs::copy(from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
        };
        let bin = t.join("bin/codedeploy-agent");
        if real_binary {
            copy(
                Path::new(env!("CARGO_BIN_EXE_codedeploy-agent")),
                bin,
                0o755,
            );
        } else {
            fs::write(&bin, "#!/bin/sh\necho codedeploy-agent 0.0.0-stand-in\n").expect("write");
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        copy(
            &repo("packaging/codedeployagent.yml"),
            t.join("conf/codedeployagent.yml"),
            0o644,
        );
        copy(
            &repo("systemd/codedeploy-agent.service"),
            t.join("systemd").join(UNIT),
            0o644,
        );
        copy(&repo("packaging/install.sh"), t.join("install.sh"), 0o755);
        copy(
            &repo("packaging/after-install.sh"),
            t.join("after-install.sh"),
            0o755,
        );
        let fake = s.dir.path().join("fakebin");
        fs::create_dir_all(&fake).expect("mkdir");
        let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\n", s.calls_file().display());
        fs::write(fake.join("systemctl"), script).expect("fake systemctl");
        fs::set_permissions(fake.join("systemctl"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        s
    }

    fn tarball(&self) -> PathBuf {
        self.dir.path().join("codedeploy-agent-0.0.0-x86_64")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn calls_file(&self) -> PathBuf {
        self.dir.path().join("systemctl-calls")
    }

    /// What the scripts asked of systemctl since the last call, one line per call.
    fn take_calls(&self) -> Vec<String> {
        let text = fs::read_to_string(self.calls_file()).unwrap_or_default();
        let _ = fs::remove_file(self.calls_file());
        text.lines().map(str::to_owned).collect()
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        let path = format!(
            "{}:{}",
            self.dir.path().join("fakebin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env_remove("CODEDEPLOY_AGENT_NO_START")
            .env_remove("CODEDEPLOY_AGENT_ROOT")
            .env_remove("CODEDEPLOY_AGENT_TEST_SYSTEMCTL")
            .env_remove("PACKER_BUILD_NAME")
            .env_remove("DESTDIR");
        cmd
    }

    /// `install.sh --root <root> <args>`; `live`: as on a machine with systemd running.
    fn install(&self, live: bool, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = self.command(&self.tarball().join("install.sh"));
        cmd.arg("--root").arg(self.root()).args(args);
        if live {
            cmd.env("CODEDEPLOY_AGENT_TEST_SYSTEMCTL", "1");
        }
        cmd.envs(env.iter().copied());
        ok(cmd.output().expect("run install.sh"))
    }

    /// after-install.sh as a package manager calls it, against the staged root.
    fn after_install(&self, args: &[&str]) -> String {
        let mut cmd = self.command(&repo("packaging/after-install.sh"));
        cmd.args(args)
            .env("CODEDEPLOY_AGENT_ROOT", self.root())
            .env("CODEDEPLOY_AGENT_TEST_SYSTEMCTL", "1");
        ok(cmd.output().expect("run after-install.sh"))
    }

    fn config(&self) -> PathBuf {
        self.root()
            .join("etc/codedeploy-agent/conf/codedeployagent.yml")
    }
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "failed ({}):\n{text}", out.status);
    text
}

/// Every file and symlink under `root` (relative path -> mode or link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(rel, format!("{:o}", meta.permissions().mode() & 0o7777));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn install_sh_lays_out_exactly_the_aws_files() {
    let s = Stage::with_real_binary();
    s.install(false, &[], &[]);
    let want: BTreeMap<String, String> = [
        ("etc/codedeploy-agent/conf/codedeployagent.yml", "644"),
        ("opt/codedeploy-agent/bin/codedeploy-agent", "755"),
        (
            "opt/codedeploy-agent/bin/codedeploy-local",
            "-> codedeploy-agent",
        ),
        (
            "usr/bin/codedeploy-local",
            "-> /opt/codedeploy-agent/bin/codedeploy-agent",
        ),
        (
            "usr/bin/codedeploy-agent",
            "-> /opt/codedeploy-agent/bin/codedeploy-agent",
        ),
        ("usr/lib/systemd/system/codedeploy-agent.service", "644"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(tree(&s.root()), want);
    assert_eq!(
        fs::read(s.config()).expect("config"),
        fs::read(repo("packaging/codedeployagent.yml")).expect("shipped")
    );
    assert_eq!(
        fs::read(s.root().join("usr/lib/systemd/system").join(UNIT)).expect("unit"),
        fs::read(repo("systemd/codedeploy-agent.service")).expect("shipped")
    );
    // A staged tree: enabled offline there, the host's systemd untouched, never started.
    assert_eq!(
        s.take_calls(),
        [format!("--root={} enable {UNIT}", s.root().display())]
    );
    // The installed binary runs, also under its codedeploy-local name (argv[0] dispatch).
    let bin = s.root().join("opt/codedeploy-agent/bin/codedeploy-agent");
    let version = ok(Command::new(&bin).arg("--version").output().expect("run"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let local = s.root().join("opt/codedeploy-agent/bin/codedeploy-local");
    ok(Command::new(local).arg("--help").output().expect("run"));
}

#[test]
fn reinstall_keeps_a_modified_config_and_does_not_reenable() {
    let s = Stage::new();
    s.install(false, &[], &[]);
    s.take_calls();
    let mine = ":root_dir: '/srv/deployments'\n:verbose: true\n";
    fs::write(s.config(), mine).expect("edit config");
    let said = s.install(false, &[], &[]);
    assert_eq!(read(&s.config()), mine);
    assert!(said.contains("keeping your"), "{said}");
    // An upgrade leaves the enablement as the administrator had it.
    assert_eq!(s.take_calls(), Vec::<String>::new());
    assert_eq!(tree(&s.root()).len(), 6);
}

#[test]
fn fresh_install_enables_and_starts_unless_told_not_to() {
    let s = Stage::new();
    s.install(true, &[], &[]);
    assert_eq!(
        s.take_calls(),
        [
            "daemon-reload".to_owned(),
            format!("enable {UNIT}"),
            format!("start {UNIT}")
        ]
    );

    let enable_only = ["daemon-reload".to_owned(), format!("enable {UNIT}")];
    for (args, env) in [
        (&["--no-start"][..], &[][..]),
        (&[][..], &[("CODEDEPLOY_AGENT_NO_START", "1")][..]),
        (&[][..], &[("PACKER_BUILD_NAME", "amazon-ebs.agent")][..]),
    ] {
        let s = Stage::new();
        let said = s.install(true, args, env);
        assert_eq!(s.take_calls(), enable_only, "{args:?} {env:?}");
        assert!(said.contains("not started"), "{said}");
    }
}

#[test]
fn upgrade_restarts_only_when_no_command_is_in_flight() {
    let s = Stage::new();
    s.install(true, &[], &[]);
    s.take_calls();
    // An empty tracking directory: nothing in flight.
    let tracking = s
        .root()
        .join("opt/codedeploy-agent/deployment-root/ongoing-deployment");
    fs::create_dir_all(&tracking).expect("mkdir");
    s.install(true, &[], &[]);
    assert_eq!(
        s.take_calls(),
        [
            "daemon-reload".to_owned(),
            format!("--no-block try-restart {UNIT}")
        ]
    );

    fs::write(tracking.join("d-EXAMPLE111"), "WyJjb21tYW5kIl0=").expect("tracking file");
    let said = s.install(true, &[], &[]);
    assert_eq!(s.take_calls(), ["daemon-reload"]);
    assert!(
        said.contains("in progress") && said.contains("next restart"),
        "{said}"
    );

    // The tracking directory follows root_dir and ongoing_deployment_tracking of the config.
    fs::write(
        s.config(),
        ":root_dir: \"/srv/cd\"\n:ongoing_deployment_tracking: inflight\n",
    )
    .expect("config");
    s.install(true, &[], &[]);
    assert_eq!(
        s.take_calls(),
        [
            "daemon-reload".to_owned(),
            format!("--no-block try-restart {UNIT}")
        ],
        "the default tracking directory no longer counts"
    );
    let custom = s.root().join("srv/cd/inflight");
    fs::create_dir_all(&custom).expect("mkdir");
    fs::write(custom.join("d-EXAMPLE222.result"), "{}").expect("owed result");
    s.install(true, &[], &[]);
    assert_eq!(s.take_calls(), ["daemon-reload"]);

    // No restart either when told not to start.
    fs::remove_file(custom.join("d-EXAMPLE222.result")).expect("rm");
    s.install(true, &["--no-start"], &[]);
    assert_eq!(s.take_calls(), ["daemon-reload"]);
}

#[test]
fn package_manager_arguments_map_to_install_or_upgrade() {
    let enable = [
        "daemon-reload".to_owned(),
        format!("enable {UNIT}"),
        format!("start {UNIT}"),
    ];
    let restart = [
        "daemon-reload".to_owned(),
        format!("--no-block try-restart {UNIT}"),
    ];
    let cases: [(&[&str], &[String]); 6] = [
        (&["configure"], &enable),             // deb, fresh install
        (&["configure", "0.0.9-1"], &restart), // deb, upgrade from 0.0.9
        (&["1"], &enable),                     // rpm %post, install
        (&["2"], &restart),                    // rpm %post, upgrade
        (&["abort-upgrade", "0.0.9-1"], &[]),  // deb error unwinding: leave things alone
        (&["triggered"], &[]),
    ];
    for (args, want) in cases {
        let s = Stage::new();
        s.install(false, &[], &[]);
        s.take_calls();
        s.after_install(args);
        assert_eq!(s.take_calls(), want, "after-install.sh {args:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The built packages (issue #14 item 5): the .rpm checked with Debian's `rpm` against the .deb,
// since no RPM distribution can be booted here. `packaging/build --check-packages` made them;
// scripts/test exports its dist/ directory as CODEDEPLOY_AGENT_DIST under CI=true.

/// The dist/ directory of `packaging/build --check-packages`, or the skip line (a failure under
/// CI=true).
fn dist() -> Option<PathBuf> {
    match std::env::var_os("CODEDEPLOY_AGENT_DIST") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            require::missing(
                "CODEDEPLOY_AGENT_DIST (the dist/ directory of packaging/build --check-packages)",
                "packaging/build --check-packages && CODEDEPLOY_AGENT_DIST=$PWD/dist cargo test --test packaging; scripts/test does it under CI=true",
            );
            None
        }
    }
}

/// This machine's architecture as each package format spells it.
fn package_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "x86_64"),
        "aarch64" => ("arm64", "aarch64"),
        other => panic!("no packages are built for {other}"),
    }
}

fn built(dist: &Path, name: String) -> PathBuf {
    let p = dist.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run packaging/build --check-packages",
        p.display()
    );
    p
}

fn deb_file(dist: &Path) -> PathBuf {
    let v = env!("CARGO_PKG_VERSION");
    built(
        dist,
        format!("codedeploy-agent_{v}-1_{}.deb", package_arch().0),
    )
}

fn rpm_file(dist: &Path) -> PathBuf {
    let v = env!("CARGO_PKG_VERSION");
    built(
        dist,
        format!("codedeploy-agent-{v}-1.{}.rpm", package_arch().1),
    )
}

/// The static binary both packages carry (packaging/build puts a copy beside them).
fn dist_binary(dist: &Path) -> PathBuf {
    let v = env!("CARGO_PKG_VERSION");
    built(dist, format!("codedeploy-agent-{v}-{}", package_arch().1))
}

fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The Debian copyright file: Debian policy wants it in every .deb; the .rpm has none.
const DEB_ONLY: &str = "usr/share/doc/codedeploy-agent/copyright";

/// What the .deb ships, as [`tree`] spells it (directories left out).
fn deb_listing(deb: &Path) -> BTreeMap<String, String> {
    let data = stdout_of(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb));
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(&data[..]);
    for entry in archive.entries().expect("the .deb's data tar") {
        let entry = entry.expect("tar entry");
        let path = entry.path().expect("path").display().to_string();
        let path = path.trim_start_matches("./").to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let value = if kind.is_symlink() {
            let link = entry
                .link_name()
                .expect("link")
                .expect("a symlink's target");
            format!("-> {}", link.display())
        } else {
            format!("{:o}", entry.header().mode().expect("mode") & 0o7777)
        };
        out.insert(path, value);
    }
    out
}

/// What the .rpm ships (`rpm -qp` over its file list), as [`tree`] spells it.
fn rpm_listing(rpm: &Path) -> BTreeMap<String, String> {
    let text = stdout_of(
        Command::new("rpm")
            .args([
                "-qp",
                "--qf",
                "[%{FILEMODES:octal} %{FILENAMES} %{FILELINKTOS}\n]",
            ])
            .arg(rpm),
    );
    let mut out = BTreeMap::new();
    for line in String::from_utf8(text).expect("utf8").lines() {
        let mut parts = line.split(' ');
        let mode = u32::from_str_radix(parts.next().expect("mode"), 8).expect("octal mode");
        let path = parts
            .next()
            .expect("path")
            .trim_start_matches('/')
            .to_owned();
        let link = parts.next().unwrap_or("");
        match mode & 0o170_000 {
            0o040_000 => continue,
            0o120_000 => out.insert(path, format!("-> {link}")),
            _ => out.insert(path, format!("{:o}", mode & 0o7777)),
        };
    }
    out
}

#[test]
fn rpm_ships_the_debs_files_and_makes_its_symlinks_in_post() {
    if !require::tool("rpm", &["--version"], "apt-get install -y rpm") {
        return;
    }
    let Some(dist) = dist() else { return };
    let mut deb = deb_listing(&deb_file(&dist));
    assert_eq!(deb.remove(DEB_ONLY).as_deref(), Some("644"), "{deb:?}");
    let rpm = rpm_listing(&rpm_file(&dist));
    // Every regular file of the .deb, with its mode, and nothing else.
    let deb_files: BTreeMap<_, _> = deb
        .iter()
        .filter(|(_, v)| !v.starts_with("->"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(rpm, deb_files);
    // cargo-generate-rpm cannot express symlinks: the .deb's are exactly the ones %post
    // (after-install.sh) makes, with the same targets.
    let script = read(&repo("packaging/after-install.sh"));
    let made: BTreeMap<String, String> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ln -sfn "))
        .map(|l| {
            let (target, link) = l.split_once(' ').expect("ln -sfn TARGET LINK");
            let link = link.trim_matches('"').trim_start_matches("$r/").to_owned();
            (link, format!("-> {target}"))
        })
        .collect();
    let deb_links: BTreeMap<_, _> = deb
        .iter()
        .filter(|(_, v)| v.starts_with("->"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(made, deb_links);
    // %config(noreplace) is the .deb's conffile.
    let config = stdout_of(
        Command::new("rpm")
            .args(["-qp", "--configfiles"])
            .arg(rpm_file(&dist)),
    );
    assert_eq!(
        String::from_utf8_lossy(&config).trim(),
        "/etc/codedeploy-agent/conf/codedeployagent.yml"
    );
}

/// `rpm -qp --scripts`: scriptlet name ("postinstall") -> (interpreter, body).
fn rpm_scriptlets(rpm: &Path) -> BTreeMap<String, (String, String)> {
    let text = stdout_of(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm));
    let text = String::from_utf8(text).expect("utf8");
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        // "postinstall scriptlet (using /bin/sh):", or without "(using …)" for rpm's default
        // interpreter, /bin/sh.
        let header = line
            .strip_suffix("):")
            .and_then(|l| l.split_once(" scriptlet (using "))
            .or_else(|| line.strip_suffix(" scriptlet:").map(|n| (n, "/bin/sh")));
        if let Some((name, interpreter)) = header {
            out.insert(name.to_owned(), (interpreter.to_owned(), String::new()));
            current = Some(name.to_owned());
        } else if let Some(name) = &current {
            let body = &mut out.get_mut(name).expect("current scriptlet").1;
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn rpm_scriptlets_are_the_debs_maintainer_scripts() {
    if !require::tool("rpm", &["--version"], "apt-get install -y rpm") {
        return;
    }
    let Some(dist) = dist() else { return };
    let deb = deb_file(&dist);
    let control = stdout_of(Command::new("dpkg-deb").arg("--ctrl-tarfile").arg(&deb));
    let mut deb_scripts = BTreeMap::new();
    for entry in tar::Archive::new(&control[..])
        .entries()
        .expect("control tar")
    {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let name = name.trim_start_matches("./").to_owned();
        if ["preinst", "postinst", "prerm", "postrm"].contains(&name.as_str()) {
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).expect("read script");
            deb_scripts.insert(name, body);
        }
    }
    // One script per step for both formats (the argument conventions differ, and the scripts
    // map them: package_manager_arguments_map_to_install_or_upgrade and the scratch install).
    let steps = [
        ("postinst", "postinstall", "packaging/after-install.sh"),
        ("prerm", "preuninstall", "packaging/before-remove.sh"),
        ("postrm", "postuninstall", "packaging/after-remove.sh"),
    ];
    let rpm = rpm_scriptlets(&rpm_file(&dist));
    assert_eq!(
        rpm.keys().collect::<Vec<_>>(),
        ["postinstall", "postuninstall", "preuninstall"],
        "no %pre, %pretrans or %posttrans: the .deb has no preinst either"
    );
    assert_eq!(deb_scripts.len(), steps.len(), "{:?}", deb_scripts.keys());
    for (deb_name, rpm_name, file) in steps {
        let want = read(&repo(file));
        assert_eq!(
            deb_scripts[deb_name], want,
            "the .deb's {deb_name} is {file}"
        );
        let (interpreter, body) = &rpm[rpm_name];
        assert_eq!(interpreter, "/bin/sh", "{rpm_name}");
        assert_eq!(
            body.trim_end(),
            want.trim_end(),
            "the .rpm's {rpm_name} is {file}"
        );
    }
}

/// A scratch root for `rpm --root`: rpm runs the scriptlets chrooted into it, so it gets the
/// host's `sh` and the few commands the scripts use (with their shared libraries, found by
/// `ldd`), and a fake `systemctl` that appends its arguments to `/systemctl-calls`.
fn scratch_root(root: &Path) {
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        fs::create_dir_all(root.join(target)).expect("mkdir");
        std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
    }
    for dir in ["tmp", "var/tmp", "etc", "usr/sbin", "dev"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    // The scripts write to /dev/null.
    let null = root.join("dev/null");
    ok(Command::new("mknod")
        .args(["-m", "666"])
        .arg(&null)
        .args(["c", "1", "3"])
        .output()
        .expect("mknod"));
    let copy_in = |host: &Path| {
        let to = root.join(host.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        fs::copy(host, &to).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
    };
    for tool in ["sh", "mkdir", "ln", "rm", "sed", "tail", "ls", "cat"] {
        let host = fs::canonicalize(Path::new("/bin").join(tool)).expect("host tool");
        copy_in(&host);
        let name = root.join("usr/bin").join(tool);
        if !name.exists() {
            // /bin/sh is a symlink to dash on Debian: keep the name the scripts call.
            let real = root.join(host.strip_prefix("/").expect("absolute"));
            fs::copy(&real, &name).expect("copy under its name");
        }
        let libs = stdout_of(Command::new("ldd").arg(&host));
        for lib in String::from_utf8_lossy(&libs).split_whitespace() {
            if lib.starts_with('/') {
                copy_in(Path::new(lib));
            }
        }
    }
    fs::write(
        root.join("usr/bin/systemctl"),
        "#!/bin/sh\necho \"$*\" >> /systemctl-calls\n",
    )
    .expect("fake systemctl");
    fs::set_permissions(
        root.join("usr/bin/systemctl"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

/// Runs `rpm --root <root> <args>` and returns what it (and the scriptlets) said.
fn rpm_in(root: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("rpm");
    cmd.arg("--root").arg(root).args(args);
    // The scriptlets see rpm's environment: none of the no-start switches may be what decides.
    cmd.env_remove("CODEDEPLOY_AGENT_NO_START")
        .env_remove("CODEDEPLOY_AGENT_ROOT")
        .env_remove("CODEDEPLOY_AGENT_TEST_SYSTEMCTL")
        .env_remove("PACKER_BUILD_NAME");
    ok(cmd.output().expect("run rpm"))
}

/// What the fake systemctl was asked since the last call.
fn systemctl_calls(root: &Path) -> Vec<String> {
    let file = root.join("systemctl-calls");
    let text = fs::read_to_string(&file).unwrap_or_default();
    let _ = fs::remove_file(&file);
    text.lines().map(str::to_owned).collect()
}

/// The files of `root` that are not the scratch root's own nor rpm's database.
fn installed(root: &Path, before: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .filter(|(k, _)| !before.contains_key(k))
        .filter(|(k, _)| {
            ![
                "dev",
                "root/.rpmdb",
                "var/lib/rpm",
                "usr/lib/sysimage/rpm",
                "var/tmp",
                "tmp",
                "systemctl-calls",
            ]
            .iter()
            .any(|p| k == p || k.starts_with(&format!("{p}/")))
        })
        .collect()
}

#[test]
fn rpm_installs_into_a_scratch_root_enabled_not_started_and_erases_clean() {
    if !require::root()
        || !require::tool("rpm", &["--version"], "apt-get install -y rpm")
        || !require::tool("ldd", &["--version"], "apt-get install -y libc-bin")
    {
        return;
    }
    let Some(dist) = dist() else { return };
    let rpm = rpm_file(&dist);
    let rpm = rpm.to_str().expect("utf8");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    scratch_root(&root);
    let before = tree(&root);
    let unit = format!("enable {UNIT}");

    // Install: rpm %post gets 1, as on a machine being baked (no systemd running in the root):
    // enabled, not started, like the .deb's postinst (tests/system.rs: the no-start rule).
    let said = rpm_in(&root, &["--nodeps", "-i", rpm]);
    assert!(
        said.contains("enabled, not started (systemd is not running"),
        "{said}"
    );
    assert_eq!(systemctl_calls(&root), [unit]);
    let mut want = deb_listing(&deb_file(&dist));
    want.remove(DEB_ONLY);
    assert_eq!(
        installed(&root, &before),
        want,
        "the rpm's files plus %post's symlinks"
    );
    assert_eq!(
        fs::read(root.join("opt/codedeploy-agent/bin/codedeploy-agent")).expect("binary"),
        fs::read(dist_binary(&dist)).expect("dist binary")
    );
    assert_eq!(
        read(&root.join("etc/codedeploy-agent/conf/codedeployagent.yml")),
        read(&repo("packaging/codedeployagent.yml"))
    );
    assert_eq!(
        read(&root.join("usr/lib/systemd/system").join(UNIT)),
        read(&repo("systemd/codedeploy-agent.service"))
    );
    // Both names on PATH run (through the absolute symlinks, so inside the root).
    for (name, arg) in [
        ("codedeploy-agent", "--version"),
        ("codedeploy-local", "--help"),
    ] {
        let out = ok(Command::new("chroot")
            .arg(&root)
            .arg(format!("/usr/bin/{name}"))
            .arg(arg)
            .output()
            .expect("chroot"));
        assert!(
            arg != "--version" || out.contains(env!("CARGO_PKG_VERSION")),
            "{out}"
        );
    }

    // Upgrade (the same package again; %post gets 2, the old copy's %preun 1): an edited
    // config is kept, nothing is re-enabled or restarted, the symlinks stay.
    let mine = ":root_dir: '/srv/deployments'\n";
    fs::write(
        root.join("etc/codedeploy-agent/conf/codedeployagent.yml"),
        mine,
    )
    .expect("edit");
    let said = rpm_in(&root, &["--nodeps", "-U", "--replacepkgs", rpm]);
    assert!(said.contains("upgraded, not restarted"), "{said}");
    assert_eq!(systemctl_calls(&root), Vec::<String>::new());
    assert_eq!(
        read(&root.join("etc/codedeploy-agent/conf/codedeployagent.yml")),
        mine
    );
    let now = installed(&root, &before);
    for link in want.iter().filter(|(_, v)| v.starts_with("->")) {
        assert_eq!(
            now.get(link.0),
            Some(link.1),
            "{} after the upgrade",
            link.0
        );
    }

    // Erase: %preun 0 disables (no stop: systemd is not running) and removes the symlinks; the
    // edited config is kept as .rpmsave, as rpm does for %config files.
    rpm_in(&root, &["--nodeps", "-e", "codedeploy-agent"]);
    assert_eq!(systemctl_calls(&root), [format!("disable {UNIT}")]);
    let left: Vec<String> = installed(&root, &before).into_keys().collect();
    assert_eq!(
        left,
        ["etc/codedeploy-agent/conf/codedeployagent.yml.rpmsave"],
        "only the operator's edited config is left"
    );
}
