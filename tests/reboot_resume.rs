//! Reboot and resume through the real daemon: a hook asks for a reboot through the file
//! `CODEDEPLOY_REBOOT_REQUEST_FILE` names; the agent reports nothing, records that the command
//! continues after the boot and runs `hook_reboot_command` (here a file the test waits for,
//! never a real reboot). The test then kills the agent where the machine would go down,
//! starts it again, and the command continues with the next script and is reported once.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::Sandbox;
use support::daemon::{Daemon, HOST, signed, spec_json, wait_quiet};
use support::fake_service::{FakeService, command};

const T: Duration = Duration::from_secs(60);

fn wait_for(path: &std::path::Path) {
    let deadline = Instant::now() + T;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_hook_reboot_continues_with_the_next_script_and_is_reported_once() {
    if !support::require::openssl() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let ran = s.path().join("ran");
    let rebooted = s.path().join("rebooted");
    let b = s.bundle(
        "app",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/one.sh\n    - location: scripts/two.sh\n",
            ),
            (
                "scripts/one.sh",
                &format!(
                    "#!/bin/sh\necho one >> {ran}\necho reboot > \"$CODEDEPLOY_REBOOT_REQUEST_FILE\"\n",
                    ran = ran.display()
                ),
            ),
            (
                "scripts/two.sh",
                &format!("#!/bin/sh\necho two >> {}\n", ran.display()),
            ),
        ],
    );
    let config = format!(":hook_reboot_command: touch {}\n", rebooted.display());
    let mut agent = Daemon::start(&s, &fake, &config, &[]);
    let spec = signed(&spec_json("d-REBOOT", "dg", &b));
    for (i, name) in ["DownloadBundle", "Install"].iter().enumerate() {
        let execution = format!("x/{i}");
        fake.set_spec(&execution, "CodeDeploy", spec.clone());
        fake.enqueue(HOST, command(&format!("c-{i}"), name, HOST, &execution));
        fake.wait_for_completes(i + 1, T);
    }
    fake.set_spec("x/start", "CodeDeploy", spec.clone());
    fake.enqueue(
        HOST,
        command("c-start", "ApplicationStart", HOST, "x/start"),
    );

    // The reboot point: the command is recorded as continuing, nothing is reported.
    wait_for(&rebooted);
    agent.signal(Signal::SIGKILL);
    agent.wait(T).expect("killed");
    assert_eq!(fs::read_to_string(&ran).expect("ran"), "one\n");
    assert_eq!(
        fake.completes().len(),
        2,
        "nothing reported before the reboot"
    );
    assert!(
        s.root()
            .join("ongoing-deployment/d-REBOOT.resume")
            .is_file()
    );

    // After the boot: the next script runs, and the command is reported exactly once.
    let _agent = Daemon::start(&s, &fake, &config, &[]);
    let completes = wait_quiet(&fake, T);
    let start: Vec<_> = completes
        .iter()
        .filter(|c| c.host_command_identifier == "c-start")
        .collect();
    assert_eq!(start.len(), 1, "{completes:?}");
    assert_eq!(start[0].command_status, "Succeeded", "{completes:?}");
    assert_eq!(fs::read_to_string(&ran).expect("ran"), "one\ntwo\n");
    assert!(!s.root().join("ongoing-deployment/d-REBOOT.resume").exists());
    let log = fs::read_to_string(s.root().join("dg/d-REBOOT/logs/scripts.log")).expect("log");
    assert!(log.contains("asked for a reboot"), "{log}");
}
