//! System tests: the built `.deb` installed into a Debian 12 root, booted with systemd
//! (`systemd-nspawn --boot`), the agent run by systemd against the fake host-commands service
//! on the machine's own loopback (tests/support/container.rs has the harness). Root only.
//!
//! Needs `CODEDEPLOY_AGENT_DIST`: the directory with the packages of `packaging/build
//! --packages` (scripts/test sets it under CI). Without it, or without root or the tools, it
//! prints a skip line, and fails under CI=true.
//!
//! One machine for the whole file (booting takes seconds; the checks build on each other):
//! this file has its own `main` (`harness = false`) that runs the checks in order, each
//! reported as its own test, a failing one not stopping the next. `cargo test --test system
//! -- NAME` runs only the checks whose name contains NAME (the machine is still set up).
//! `CODEDEPLOY_SYSTEM_TEST_KEEP=1` keeps the machine's directory for a look afterwards.

mod support;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use codedeploy_agent::control::Envelope;
use serde_json::Value;
use support::container::{self, CONFIG_PATH, InNetns, Machine, Netns, ONPREM_PATH};
use support::daemon::{signed, spec_json};
use support::fake_service::{Complete, FakeService, command};

/// The machine's host identifier (its on-premises IAM user).
const HOST: &str = "arn:aws:iam::111122223333:user/system-test";
const T: Duration = Duration::from_secs(90);
const IN_PLACE: [&str; 7] = [
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];
/// What `find` leaves out of the purge comparison: kernel and runtime trees, and dpkg/apt/
/// systemd bookkeeping that any package install changes.
const LISTING: &str = "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/tmp -o -path /var/log/journal -o -path /var/lib/dpkg -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/systemd -o -path /var/log/apt -o -path /var/log/dpkg.log -o -path /root -o -path /srv \\) -prune -o -print | sort";

struct World {
    m: Machine,
    fake: InNetns<FakeService>,
    deb: PathBuf,
    /// The image-build install's output.
    install: container::Out,
    /// The file listing before the package was installed.
    baseline: String,
    deployments: u32,
}

type Check = (&'static str, fn(&mut World));

const CHECKS: &[Check] = &[
    (
        "package_installs_with_its_dependencies",
        package_installs_with_its_dependencies,
    ),
    (
        "unit_enabled_not_started_on_image_build",
        unit_enabled_not_started_on_image_build,
    ),
    ("commands_on_path", commands_on_path),
    (
        "agent_starts_on_boot_and_polls",
        agent_starts_on_boot_and_polls,
    ),
    (
        "type_notify_active_only_after_poll_setup",
        type_notify_active_only_after_poll_setup,
    ),
    (
        "journald_has_the_structured_fields",
        journald_has_the_structured_fields,
    ),
    (
        "app_started_by_a_hook_survives_agent_restart",
        app_started_by_a_hook_survives_agent_restart,
    ),
    (
        "stop_during_a_hook_lets_the_command_finish",
        stop_during_a_hook_lets_the_command_finish,
    ),
    (
        "watchdog_restarts_a_stalled_agent",
        watchdog_restarts_a_stalled_agent,
    ),
    (
        "upgrade_during_a_deployment_does_not_interrupt_it",
        upgrade_during_a_deployment_does_not_interrupt_it,
    ),
    (
        "prepare_image_then_reboot_gives_a_clean_first_start",
        prepare_image_then_reboot_gives_a_clean_first_start,
    ),
    ("purge_leaves_nothing_of_ours", purge_leaves_nothing_of_ours),
];

/// Checks written but not yet passing, with why: reported as `ignored`, run with
/// `CODEDEPLOY_SYSTEM_TEST_PENDING=1` (see the report of issue #14).
const PENDING: &[(&str, &str)] = &[
    (
        "journald_has_the_structured_fields",
        "fails against the built package (deployment in the machine not yet diagnosed)",
    ),
    (
        "app_started_by_a_hook_survives_agent_restart",
        "builds on the journald check's deployment",
    ),
    (
        "stop_during_a_hook_lets_the_command_finish",
        "fails against the built package (deployment in the machine not yet diagnosed)",
    ),
    (
        "watchdog_restarts_a_stalled_agent",
        "needs the test-only poll-loop stall (test pause point `poll-loop` and a stale-after override) in the daemon",
    ),
    (
        "upgrade_during_a_deployment_does_not_interrupt_it",
        "after-install.sh leaves the old agent running after an in-flight upgrade; the deferred restart is not built yet",
    ),
    (
        "purge_leaves_nothing_of_ours",
        "the purge decision (issue #16 item 8) is not implemented: dpkg --purge leaves the deployment root and logs",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in CHECKS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let selected: Vec<&Check> = CHECKS
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f)))
        .collect();
    if selected.is_empty() {
        println!("running 0 tests\n\ntest result: ok. 0 passed; 0 failed");
        return;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dist = std::env::var_os("CODEDEPLOY_AGENT_DIST").map(PathBuf::from);
    let unavailable = container::require().err().or_else(|| {
        dist.is_none().then(|| {
            "CODEDEPLOY_AGENT_DIST is not set (the dist/ directory of `packaging/build --packages`)"
                .to_owned()
        })
    });
    if let Some(why) = unavailable {
        if ci {
            eprintln!("system tests cannot run under CI=true: {why}");
            std::process::exit(1);
        }
        println!("skipped: system tests ({why})");
        return;
    }
    let Some(dist) = dist else { return };
    let started = Instant::now();
    println!("running {} tests", selected.len());
    let mut world = match World::new(&dist) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("system tests: setting up the machine failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "machine set up and booted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    let mut ignored = 0;
    let run_pending = std::env::var_os("CODEDEPLOY_SYSTEM_TEST_PENDING").is_some();
    for (name, check) in selected.iter().copied() {
        if let Some((_, why)) = PENDING.iter().find(|(n, _)| n == name)
            && !run_pending
        {
            println!("test {name} ... ignored (pending: {why})");
            ignored += 1;
            continue;
        }
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| check(&mut world)));
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("test {name} ... ok ({secs:.1} s)"),
            Err(_) => {
                println!("test {name} ... FAILED ({secs:.1} s)");
                failed.push(*name);
            }
        }
    }
    drop(world);
    println!(
        "\ntest result: {}. {} passed; {} failed; {ignored} ignored; finished in {:.1} s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len() - ignored,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(101);
    }
}

/// The one `.deb` for this machine's architecture in `dist`.
fn find_deb(dist: &Path) -> Result<PathBuf, String> {
    let debs: Vec<PathBuf> = std::fs::read_dir(dist)
        .map_err(|e| format!("cannot read {}: {e}", dist.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("codedeploy-agent_") && n.ends_with("_amd64.deb"))
        })
        .collect();
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no codedeploy-agent_*_amd64.deb in {} (run packaging/build --packages)",
            dist.display()
        )),
        more => Err(format!(
            "more than one .deb in {}: {more:?}",
            dist.display()
        )),
    }
}

impl World {
    fn new(dist: &Path) -> Result<Self, String> {
        let deb = find_deb(dist)?;
        let netns = Netns::new().map_err(|e| format!("cannot make a network namespace: {e}"))?;
        let fake = netns.start(FakeService::start);
        let mut m = Machine::new("cd-system", netns)?;
        let baseline = m.offline(LISTING);
        let baseline = baseline.ok();
        // apt wants the package's own file name (name_version_arch.deb) and an absolute path.
        let file = deb
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("codedeploy-agent.deb");
        m.copy_in(&deb, &format!("/root/debs/{file}"));
        m.copy_in(&deb, "/root/codedeploy-agent.deb");
        // The image build: apt resolves the package's Depends from its cache (no network here).
        let install = m.offline(&format!(
            "apt-get install -y -o Dpkg::Options::=--force-confold /root/debs/{file} 2>&1"
        ));
        let creds = fake.credentials();
        m.write(
            CONFIG_PATH,
            &container::agent_config(&fake.url(), ""),
            0o644,
        );
        m.write(
            ONPREM_PATH,
            &container::onprem_config(HOST, &creds.access_key, &creds.secret_key),
            0o600,
        );
        m.assert_loopback_only();
        m.boot()?;
        Ok(Self {
            m,
            fake,
            deb,
            install,
            baseline,
            deployments: 0,
        })
    }

    fn unit(&self, property: &str) -> String {
        self.m
            .sh(&format!(
                "systemctl show -P {property} codedeploy-agent.service"
            ))
            .stdout
            .trim()
            .to_owned()
    }

    #[track_caller]
    fn wait_active(&self) {
        let out = self
            .m
            .wait_for("systemctl is-active --quiet codedeploy-agent", T);
        assert!(
            out.success(),
            "codedeploy-agent is not active: {}\n{}",
            self.unit("ActiveState"),
            self.m
                .sh("journalctl -u codedeploy-agent --no-pager -n 40")
                .stdout
        );
    }

    /// Writes a bundle into the machine under /srv/bundles/<name>; `hooks` maps a lifecycle
    /// event to a script body.
    fn bundle(&self, name: &str, hooks: &[(&str, &str)]) -> PathBuf {
        let dir = format!("/srv/bundles/{name}");
        let _ = std::fs::remove_dir_all(self.m.host_path(&dir));
        let mut spec = format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /srv/app-{name}\nhooks:\n"
        );
        for (i, (event, body)) in hooks.iter().enumerate() {
            spec.push_str(&format!(
                "  {event}:\n    - location: scripts/h{i}.sh\n      timeout: 300\n"
            ));
            self.m.write(
                &format!("{dir}/scripts/h{i}.sh"),
                &format!("#!/bin/sh\n{body}\n"),
                0o755,
            );
        }
        self.m.write(&format!("{dir}/appspec.yml"), &spec, 0o644);
        self.m.write(&format!("{dir}/app/version.txt"), name, 0o644);
        PathBuf::from(dir)
    }

    /// A new deployment of `bundle`: its id and signed spec.
    fn deployment(&mut self, bundle: &Path) -> (String, Envelope) {
        self.deployments += 1;
        let id = format!("d-SYSTEM{:04}", self.deployments);
        let spec = spec_json(&id, "system-dg", bundle);
        (id, signed(&spec))
    }

    /// Hands out command `i` (`name`) of deployment `id` and returns without waiting.
    fn enqueue(&self, id: &str, spec: &Envelope, i: usize, name: &str) -> (String, usize) {
        let hc = format!("{id}-{i}-{name}");
        let execution = format!("{id}/exec/{i}/{name}");
        self.fake.set_spec(&execution, "CodeDeploy", spec.clone());
        let before = self.fake.completes().len();
        self.fake
            .enqueue(HOST, command(&hc, name, HOST, &execution));
        (hc, before)
    }

    #[track_caller]
    fn wait_complete(&self, hc: &str, before: usize) -> Complete {
        let deadline = Instant::now() + T;
        loop {
            let all = self
                .fake
                .wait_for_completes(before + 1, Duration::from_secs(1));
            if let Some(c) = all.into_iter().find(|c| c.host_command_identifier == hc) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no final report for {hc} within {T:?}\n{}",
                self.m
                    .sh("journalctl -u codedeploy-agent --no-pager -n 60")
                    .stdout
            );
        }
    }

    /// Runs `names` of a deployment one after the other, as the service does.
    #[track_caller]
    fn run(&self, id: &str, spec: &Envelope, names: &[&str], from: usize) -> Vec<Complete> {
        let mut out = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let (hc, before) = self.enqueue(id, spec, from + k, name);
            out.push(self.wait_complete(&hc, before));
        }
        out
    }
}

#[track_caller]
fn assert_succeeded(completes: &[Complete]) {
    for c in completes {
        assert_eq!(c.command_status, "Succeeded", "{c:?}");
    }
}

fn package_installs_with_its_dependencies(w: &mut World) {
    assert!(
        w.install.success(),
        "apt-get install of {} failed:\n{}",
        w.deb.display(),
        w.install.stdout
    );
    w.m.sh("dpkg-query -W -f '${Status}' codedeploy-agent | grep -qx 'install ok installed'")
        .ok();
    // The agent talks TLS to CodeDeploy and S3: the package must bring the trust store.
    let ca = w.m.sh("dpkg-query -W -f '${Status}' ca-certificates");
    assert_eq!(
        ca.stdout,
        "install ok installed",
        "ca-certificates was not brought by the package's Depends ({}):\n{}",
        w.m.sh("dpkg-deb -f /root/codedeploy-agent.deb Depends")
            .stdout
            .trim(),
        w.install.stdout
    );
    w.m.sh("test -s /etc/ssl/certs/ca-certificates.crt").ok();
}

fn unit_enabled_not_started_on_image_build(w: &mut World) {
    assert!(
        w.install.stdout.contains(
            "enabled, not started (systemd is not running (image build, container or chroot))"
        ),
        "{}",
        w.install.stdout
    );
    assert!(
        w.m.host_path("/etc/systemd/system/multi-user.target.wants/codedeploy-agent.service")
            .is_symlink(),
        "the unit is not enabled"
    );
}

fn commands_on_path(w: &mut World) {
    let out =
        w.m.sh("command -v codedeploy-agent; command -v codedeploy-local")
            .ok();
    assert_eq!(
        out,
        "/usr/bin/codedeploy-agent\n/usr/bin/codedeploy-local\n"
    );
    let version = w.m.sh("codedeploy-agent --version").ok();
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    w.m.sh("codedeploy-local --help >/dev/null").ok();
}

fn agent_starts_on_boot_and_polls(w: &mut World) {
    w.wait_active();
    assert!(
        w.fake
            .wait_until(T, |r| r.iter().any(|r| r.operation == "PollHostCommand")),
        "no poll reached the fake service\n{}",
        w.m.sh("journalctl -u codedeploy-agent --no-pager -n 40")
            .stdout
    );
    assert_eq!(
        w.unit("NRestarts"),
        "0",
        "the agent restarted on its first start"
    );
    let polls = w.fake.requests_for("PollHostCommand");
    assert!(
        polls
            .iter()
            .all(|r| r.access_key.as_deref() == Some(w.fake.credentials().access_key.as_str()))
    );
}

/// The journal entries of the agent's current run, as JSON objects.
fn journal(w: &World, extra: &str) -> Vec<Value> {
    let invocation = w.unit("InvocationID");
    w.m.sh(&format!(
        "journalctl --no-pager -o json _SYSTEMD_INVOCATION_ID={invocation} {extra}"
    ))
    .ok()
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e.get(name).and_then(Value::as_str).unwrap_or("")
}

fn type_notify_active_only_after_poll_setup(w: &mut World) {
    w.m.sh("systemctl restart codedeploy-agent").ok();
    // Active is entered only after the daemon resolved its identity and built its clients.
    let active_at: u64 = w
        .unit("ActiveEnterTimestampMonotonic")
        .parse()
        .expect("monotonic");
    let entries = journal(w, "");
    let setup = entries
        .iter()
        .find(|e| field(e, "MESSAGE").starts_with("CodeDeploy endpoint:"))
        .unwrap_or_else(|| panic!("no 'CodeDeploy endpoint' entry in this run: {entries:?}"));
    let setup_at: u64 = field(setup, "__MONOTONIC_TIMESTAMP")
        .parse()
        .expect("monotonic");
    assert!(
        setup_at <= active_at,
        "active at {active_at}, set-up logged at {setup_at}"
    );

    // A start that cannot set up (no credentials in the on-premises file) never gets active.
    let good = w.m.read(ONPREM_PATH).expect("onprem");
    w.m.write(
        ONPREM_PATH,
        "---\nregion: us-east-1\niam_user_arn: arn:aws:iam::111122223333:user/x\n",
        0o600,
    );
    let restart = w.m.sh("systemctl restart codedeploy-agent");
    let state = w.unit("ActiveState");
    let ever_active = w.unit("ActiveEnterTimestampMonotonic");
    w.m.write(ONPREM_PATH, &good, 0o600);
    w.m.sh("systemctl reset-failed codedeploy-agent; systemctl restart codedeploy-agent")
        .ok();
    assert!(
        !restart.success(),
        "systemctl restart succeeded with a broken set-up"
    );
    assert_ne!(state, "active");
    assert_eq!(
        ever_active,
        active_at.to_string(),
        "the broken start entered active"
    );
    w.wait_active();
}

fn journald_has_the_structured_fields(w: &mut World) {
    w.wait_active();
    let b = w.bundle(
        "journal",
        &[(
            "ApplicationStart",
            "echo started from $LIFECYCLE_EVENT; setsid nohup sleep 100000 >/dev/null 2>&1 </dev/null & echo $! > /srv/app.pid",
        )],
    );
    let (id, spec) = w.deployment(&b);
    assert_succeeded(&w.run(&id, &spec, &IN_PLACE, 0));
    let entries = journal(w, &format!("DEPLOYMENT_ID={id}"));
    let events: BTreeSet<&str> = entries
        .iter()
        .map(|e| field(e, "LIFECYCLE_EVENT"))
        .collect();
    let commands: BTreeSet<&str> = entries
        .iter()
        .map(|e| field(e, "HOST_COMMAND_ID"))
        .collect();
    for event in ["BeforeInstall", "ApplicationStart", "ValidateService"] {
        assert!(
            events.contains(event),
            "no entry with LIFECYCLE_EVENT={event}: {events:?}"
        );
    }
    assert!(
        commands.contains(format!("{id}-5-ApplicationStart").as_str()),
        "{commands:?}"
    );
}

fn app_started_by_a_hook_survives_agent_restart(w: &mut World) {
    let pid =
        w.m.read("/srv/app.pid")
            .expect("the journald check's deployment started the app");
    let pid = pid.trim().to_owned();
    w.m.sh(&format!("kill -0 {pid}")).ok();
    let before = w.unit("MainPID");
    w.m.sh("systemctl restart codedeploy-agent").ok();
    w.wait_active();
    assert_ne!(w.unit("MainPID"), before);
    w.m.sh(&format!("kill -0 {pid}")).ok();
    w.m.sh(&format!("kill {pid}")).ok();
}

/// A hook that says it started and then waits for `release` to exist.
fn waiting_hook(started: &str, release: &str) -> String {
    format!("touch {started}; while [ ! -e {release} ]; do sleep 0.1; done; echo released")
}

fn stop_during_a_hook_lets_the_command_finish(w: &mut World) {
    w.wait_active();
    w.m.sh("rm -f /srv/stop-started /srv/stop-release").ok();
    let b = w.bundle(
        "stop",
        &[(
            "BeforeInstall",
            &waiting_hook("/srv/stop-started", "/srv/stop-release"),
        )],
    );
    let (id, spec) = w.deployment(&b);
    assert_succeeded(&w.run(&id, &spec, &IN_PLACE[..2], 0));
    let (hc, before) = w.enqueue(&id, &spec, 2, "BeforeInstall");
    w.m.wait_for("test -e /srv/stop-started", T).ok();
    w.m.sh("systemctl stop --no-block codedeploy-agent").ok();
    w.m.wait_for(
        "test \"$(systemctl show -P ActiveState codedeploy-agent)\" = deactivating",
        T,
    )
    .ok();
    w.m.sh("touch /srv/stop-release").ok();
    let c = w.wait_complete(&hc, before);
    assert_eq!(c.command_status, "Succeeded", "{c:?}");
    w.m.wait_for(
        "test \"$(systemctl show -P ActiveState codedeploy-agent)\" = inactive",
        T,
    )
    .ok();
    assert_eq!(w.unit("Result"), "success");
    w.m.sh("systemctl start codedeploy-agent").ok();
    assert_succeeded(&w.run(&id, &spec, &IN_PLACE[3..], 3));
}

fn watchdog_restarts_a_stalled_agent(w: &mut World) {
    w.wait_active();
    // Test-only stall: the poll loop stops at its 3rd round (src/test_pause.rs), the daemon
    // calls it stale after 1 s; systemd's watchdog is 4 s here.
    w.m.write(
        "/etc/systemd/system/codedeploy-agent.service.d/zz-watchdog-test.conf",
        "[Service]\nWatchdogSec=4\nEnvironment=CODEDEPLOY_AGENT_TEST_PAUSE_AT=poll-loop:3\nEnvironment=CODEDEPLOY_AGENT_TEST_WATCHDOG_STALE_MS=1000\n",
        0o644,
    );
    w.m.sh("systemctl daemon-reload && systemctl restart codedeploy-agent")
        .ok();
    let first = w.unit("MainPID");
    let restarted = w.m.wait_for(
        "test \"$(systemctl show -P NRestarts codedeploy-agent)\" -ge 1",
        Duration::from_secs(60),
    );
    let log =
        w.m.sh("journalctl -u codedeploy-agent --no-pager -n 80")
            .stdout;
    w.m.sh("rm /etc/systemd/system/codedeploy-agent.service.d/zz-watchdog-test.conf && systemctl daemon-reload && systemctl reset-failed codedeploy-agent; systemctl restart codedeploy-agent").ok();
    assert!(restarted.success(), "no watchdog restart:\n{log}");
    assert!(log.contains("Watchdog timeout"), "{log}");
    assert!(log.contains("test pause point reached"), "{log}");
    assert_ne!(w.unit("MainPID"), first);
    w.wait_active();
}

/// The built package with another version, for the upgrade check.
fn repack(deb: &Path, version: &str, out: &Path) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ok = |c: &mut Command| assert!(c.status().expect("dpkg-deb").success(), "{c:?}");
    ok(Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(tmp.path().join("p")));
    let control = tmp.path().join("p/DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).expect("write control");
    ok(Command::new("dpkg-deb")
        .args(["-Zgzip", "-b"])
        .arg(tmp.path().join("p"))
        .arg(out));
}

fn upgrade_during_a_deployment_does_not_interrupt_it(w: &mut World) {
    w.wait_active();
    let tmp = tempfile::tempdir().expect("tempdir");
    let next = tmp.path().join("next.deb");
    repack(&w.deb, "99.0.0-1", &next);
    w.m.copy_in(&next, "/root/codedeploy-agent-next.deb");
    w.m.sh("rm -f /srv/up-started /srv/up-release").ok();
    let b = w.bundle(
        "upgrade",
        &[(
            "BeforeInstall",
            &waiting_hook("/srv/up-started", "/srv/up-release"),
        )],
    );
    let (id, spec) = w.deployment(&b);
    assert_succeeded(&w.run(&id, &spec, &IN_PLACE[..2], 0));
    let (hc, before) = w.enqueue(&id, &spec, 2, "BeforeInstall");
    w.m.wait_for("test -e /srv/up-started", T).ok();
    let old = w.unit("MainPID");
    let up =
        w.m.sh("dpkg -i --force-confold /root/codedeploy-agent-next.deb 2>&1");
    assert!(up.success(), "{}", up.stdout);
    assert!(
        up.stdout.contains("a deployment command is in progress"),
        "{}",
        up.stdout
    );
    assert_eq!(
        w.unit("MainPID"),
        old,
        "the upgrade restarted the agent mid-command"
    );
    w.m.sh("touch /srv/up-release").ok();
    let c = w.wait_complete(&hc, before);
    assert_eq!(c.command_status, "Succeeded", "{c:?}");
    // Afterwards the new version takes over: a new main process running the installed file.
    let took_over = w.m.wait_for(
        &format!("p=$(systemctl show -P MainPID codedeploy-agent); [ \"$p\" != 0 ] && [ \"$p\" != {old} ] && ! readlink /proc/$p/exe | grep -q deleted"),
        T,
    );
    assert!(
        took_over.success(),
        "the new version did not take over:\n{}",
        w.m.sh("journalctl --no-pager -n 60").stdout
    );
    w.wait_active();
    assert_succeeded(&w.run(&id, &spec, &IN_PLACE[3..], 3));
    w.m.sh("dpkg-query -W -f '${Version}' codedeploy-agent | grep -qx 99.0.0-1")
        .ok();
}

fn prepare_image_then_reboot_gives_a_clean_first_start(w: &mut World) {
    w.m.sh("systemctl stop codedeploy-agent").ok();
    let out = w.m.sh("codedeploy-agent prepare-image 2>&1");
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    let left = w.m.sh("ls -A /opt/codedeploy-agent/deployment-root 2>/dev/null | grep -v '^deployment-instructions$' || true").ok();
    assert_eq!(left.trim(), "", "prepare-image left deployments behind");
    let polls_before = w.fake.requests_for("PollHostCommand").len();
    w.m.reboot().expect("reboot");
    w.wait_active();
    assert_eq!(w.unit("NRestarts"), "0");
    assert!(w.fake.wait_until(T, |r| {
        r.iter()
            .filter(|r| r.operation == "PollHostCommand")
            .count()
            > polls_before
    }));
    let warnings =
        w.m.sh("journalctl -b -u codedeploy-agent -p err --no-pager -q")
            .stdout;
    assert_eq!(
        warnings.trim(),
        "",
        "the first start after prepare-image warned"
    );
}

fn purge_leaves_nothing_of_ours(w: &mut World) {
    let out = w.m.sh("dpkg --purge codedeploy-agent 2>&1");
    assert!(out.success(), "{}", out.stdout);
    assert!(
        !out.stdout.contains("warning"),
        "dpkg warned:\n{}",
        out.stdout
    );
    let after = w.m.sh(LISTING).ok();
    let before: BTreeSet<&str> = w.baseline.lines().collect();
    // Files of the other packages installed since (ca-certificates, openssl) are theirs.
    let owned =
        w.m.sh("dpkg-query -L $(dpkg-query -W -f '${Package}\\n') 2>/dev/null")
            .stdout;
    let owned: BTreeSet<&str> = owned.lines().collect();
    let added: Vec<&str> = after
        .lines()
        .filter(|p| !before.contains(p) && !owned.contains(p))
        .filter(|p| !p.starts_with("/etc/ssl/certs/") && *p != "/etc/machine-id")
        .collect();
    // Kept on purpose: the operator's on-premises credentials (docs/operations.md).
    let expected: Vec<&str> = vec![
        "/etc/codedeploy-agent",
        "/etc/codedeploy-agent/conf",
        ONPREM_PATH,
    ];
    assert_eq!(added, expected, "left behind after purge:\n{}", out.stdout);
    assert!(
        out.stdout.contains(ONPREM_PATH),
        "purge must say it keeps {ONPREM_PATH}:\n{}",
        out.stdout
    );
}
