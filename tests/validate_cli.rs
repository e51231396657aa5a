//! `codedeploy-agent validate` through the real binary: directories, archives, appspec files,
//! text and JSON output, exit codes.

mod support;

use std::fs;
use std::process::Command;

use support::{Run, Sandbox, bin};

fn validate(args: &[&str]) -> Run {
    Run::from(
        Command::new(bin())
            .arg("validate")
            .args(args)
            .output()
            .expect("run"),
    )
}

#[test]
fn the_sample_bundle_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-app");
    let run = validate(&[sample]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);
}

#[test]
fn every_problem_is_listed_with_its_position() {
    let s = Sandbox::new();
    let b = s.bundle(
        "bad",
        &[(
            "appspec.yml",
            "version: 1.0\nos: Linux\nfiles:\n  - source: app\nhooks:\n  ApplicationStart:\n    - location: scripts/missing.sh\n      timeout: 0\n",
        )],
    );
    let run = validate(&[b.to_str().expect("utf8")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "appspec.yml:1:10: error: The deployment failed because an invalid version value (1.0)"
        )),
        "{}",
        run.stdout
    );
    assert!(lines.iter().any(|l| l.starts_with("appspec.yml:2:5: error: The deployment failed because the application specification file specifies an unsupported operating system (Linux).")), "{}", run.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("error: The deployment failed because an invalid timeout value")),
        "{}",
        run.stdout
    );
    assert!(lines.iter().any(|l| l.contains("error: The deployment failed because the application specification file specifies only a source file (app).")), "{}", run.stdout);
    assert!(
        lines.last().is_some_and(|l| l.contains("4 errors")),
        "{}",
        run.stdout
    );
}

#[test]
fn bundle_checks_sources_scripts_and_duplicate_destinations() {
    let s = Sandbox::new();
    let spec = "version: 0.0\nos: linux\nfiles:\n  - source: a/x.txt\n    destination: /srv/d\n  - source: b/x.txt\n    destination: /srv/d\n  - source: nope\n    destination: /srv/e\nhooks:\n  ApplicationStart:\n    - location: scripts/missing.sh\n    - location: scripts/plain.sh\n";
    let b = s.bundle(
        "b",
        &[
            ("appspec.yml", spec),
            ("a/x.txt", "1"),
            ("b/x.txt", "2"),
            ("plain.sh", ""),
        ],
    );
    fs::create_dir_all(b.join("scripts")).expect("mkdir");
    fs::write(b.join("scripts/plain.sh"), "#!/bin/sh\n").expect("write");
    let run = validate(&[b.to_str().expect("utf8")]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("error: Script does not exist at specified location: scripts/missing.sh"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("warning: Script at specified location: scripts/plain.sh is not executable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("specifies two source files named"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("nope"), "{}", run.stdout);
}

#[test]
fn archives_are_detected_by_content_and_json_output_works() {
    let s = Sandbox::new();
    let b = s.bundle("app", &[("appspec.yml", "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"), ("scripts/start.sh", "#!/bin/sh\n")]);
    // A tgz with a misleading name, and a single top-level directory.
    let archive = s.path().join("bundle.zip");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(b.parent().expect("parent"))
        .arg("app")
        .status()
        .expect("tar");
    assert!(ok.success());
    let run = validate(&[archive.to_str().expect("utf8"), "--format", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(v, serde_json::json!([]));

    // A bare appspec file.
    let f = s.path().join("appspec.yml");
    fs::write(
        &f,
        "version: 0.0\nos: windows\npermissions:\n  - object: /x\n",
    )
    .expect("write");
    let run = validate(&[
        f.to_str().expect("utf8"),
        "--os",
        "windows",
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(v[0]["severity"], "error");
    assert!(
        v[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("specifiles")),
        "{v}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = validate(&["/no/such/path"]);
    assert_eq!(run.code, 2);
    let run = validate(&["--format", "xml"]);
    assert_eq!(run.code, 2);
}

#[test]
fn version_and_argv0_dispatch() {
    let out = Command::new(bin()).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("codedeploy-agent "));
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("codedeploy-local");
    std::os::unix::fs::symlink(bin(), &link).expect("symlink");
    let out = Command::new(&link).arg("--version").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        env!("CARGO_PKG_VERSION")
    );
    let out = Command::new(&link)
        .args(["-t", "rar"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ERROR: type rar is not a valid type. Must be one of tgz,tar,zip,directory")
    );
}
