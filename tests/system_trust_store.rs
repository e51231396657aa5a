//! The daemon on a machine without CA certificates (a minimal root before `ca-certificates`;
//! the system test `package_installs_with_its_dependencies` found it): with an on-premises
//! configuration and a plain-http endpoint it needs no trust store at all (no TLS client is
//! built that the configuration does not use); where it does need one, the error names the
//! trust store, what to install, and keeps the cause.

mod support;

use std::time::Duration;

use support::Sandbox;
use support::daemon::{Daemon, write_config};
use support::fake_service::FakeService;

const HOST: &str = "arn:aws:iam::111122223333:user/trust-store-test";

/// No CA certificates anywhere: rustls-native-certs reads only these when they are set.
const NO_TRUST_STORE: [(&str, &str); 2] = [
    ("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt"),
    ("SSL_CERT_DIR", "/nonexistent/certs"),
];

fn start(s: &Sandbox, fake: &FakeService, endpoint: &str) -> Daemon {
    let creds = fake.credentials();
    let onprem = s.path().join("onprem.yml");
    std::fs::write(
        &onprem,
        format!(
            "---\nregion: us-east-1\niam_user_arn: {HOST}\naws_access_key_id: {}\naws_secret_access_key: {}\n",
            creds.access_key, creds.secret_key
        ),
    )
    .expect("onprem");
    write_config(
        s,
        fake,
        &format!(
            ":on_premises_config_file: {}\n:deploy_control_endpoint: {endpoint}\n",
            onprem.display()
        ),
    );
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("run")
        .arg("-c")
        .arg(s.config())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", s.path())
        .env("CODEDEPLOY_LOG", "debug")
        .env("RUST_BACKTRACE", "1")
        // Were IMDS asked, it would be a dead loopback port, never 169.254.169.254.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::null());
    for (k, v) in NO_TRUST_STORE {
        cmd.env(k, v);
    }
    Daemon::spawn(s, cmd)
}

#[test]
fn on_premises_over_http_polls_without_a_trust_store() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = start(&s, &fake, &fake.url());
    let polled = fake.wait_until(Duration::from_secs(60), |r| {
        r.iter().any(|r| r.operation == "PollHostCommand")
    });
    let exited = agent.child.try_wait().ok().flatten();
    assert!(
        polled,
        "no poll without a trust store (exit {exited:?}):\n{}",
        agent.log_text()
    );
    assert!(exited.is_none(), "{}", agent.log_text());
}

#[test]
fn https_without_a_trust_store_is_a_clear_error() {
    let s = Sandbox::new();
    let fake = FakeService::start();
    // An https endpoint on a closed loopback port: the client is built (and fails) before
    // any connection is tried.
    let mut agent = start(&s, &fake, "https://127.0.0.1:9");
    let status = agent
        .wait(Duration::from_secs(60))
        .expect("the daemon exits");
    assert!(!status.success());
    let log = agent.log_text();
    for part in [
        "no CA certificates",
        "SSL_CERT_FILE=/nonexistent/ca-certificates.crt",
        "install the ca-certificates package",
        "No CA certificates were loaded from the system",
    ] {
        assert!(log.contains(part), "{part:?} missing from:\n{log}");
    }
}
