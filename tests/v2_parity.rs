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
