//! Shared helpers for integration tests: a sandbox with its own deployment root, log dir and
//! config file, bundle builders, and a runner for the real binary.
#![allow(dead_code)]

pub mod daemon;
pub mod fake_codedeploy;
pub mod fake_service;
pub mod moto;
pub mod require;
pub mod shared;
pub mod signing;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_codedeploy-agent"))
}

/// `tar czf out` of `dir`'s contents (no top directory).
pub fn tgz(dir: &Path, out: &Path) {
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("tar");
    assert!(ok.success(), "tar czf {}", out.display());
}

/// A temporary world: `root/` (deployment root), `log/`, `dest/` (where bundles install),
/// `conf.yml` pointing at them.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Self { dir };
        fs::create_dir_all(s.dest()).expect("mkdir dest");
        s.write_config("");
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    pub fn dest(&self) -> PathBuf {
        self.path().join("dest")
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("conf.yml")
    }

    /// Writes the config with `extra` lines appended.
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            ":root_dir: {}\n:log_dir: {}\n:verbose: true\n{extra}",
            self.root().display(),
            self.path().join("log").display()
        );
        fs::write(self.config(), text).expect("write config");
    }

    /// A bundle directory `name` under the sandbox, with files given as (relative path, content).
    /// Paths under `scripts/` are made executable.
    pub fn bundle(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path().join("bundles").join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("clear bundle");
        }
        for (rel, content) in files {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, content).expect("write");
            if rel.starts_with("scripts/") {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
        dir
    }

    /// Runs `codedeploy-agent local -c <config> <args>`.
    pub fn local(&self, args: &[&str]) -> Run {
        let out = Command::new(bin())
            .arg("local")
            .arg("-c")
            .arg(self.config())
            .args(args)
            .env("CODEDEPLOY_LOG", "debug")
            .output()
            .expect("run binary");
        Run::from(out)
    }

    /// Deploys a bundle directory into `group`.
    pub fn deploy(&self, bundle: &Path, group: &str, extra: &[&str]) -> Run {
        let mut args = vec!["-l", bundle.to_str().expect("utf8"), "-g", group];
        args.extend_from_slice(extra);
        self.local(&args)
    }

    /// The deployment directory a run printed ("Starting to execute deployment from within
    /// folder <dir>").
    pub fn deployment_dir(run: &Run) -> PathBuf {
        let line = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Starting to execute deployment from within folder "))
            .unwrap_or_else(|| panic!("no deployment folder in output:\n{}", run.stdout));
        PathBuf::from(line)
    }

    pub fn instructions(&self, file: &str) -> String {
        fs::read_to_string(self.root().join("deployment-instructions").join(file))
            .unwrap_or_default()
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout
                .contains("AppSpec file valid. Local deployment successful"),
            "{}",
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn assert_failed_with(&self, message: &str) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.contains(message),
            "expected {message:?} in output\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// True when the tests run as root (CI does). A test that needs root asks [`require::root`],
/// which skips or (under `CI=true`) fails; this only probes.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
pub mod container;
pub mod fake_imds;
pub mod fake_s3;
pub mod journal;
pub mod tmpfs;
