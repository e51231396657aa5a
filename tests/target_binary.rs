//! One binary executed as operators run it (issue #14 item 6): `--version`, `validate` of the
//! example, full `codedeploy-local` deployments of the sample bundle with its hooks (directory,
//! tgz and zip), and hostile bundles refused through the binary.
//!
//! By default the binary is this build's (`CARGO_BIN_EXE_codedeploy-agent`), so the checks run
//! in every `cargo test`. `scripts/aarch64-check` runs them against the aarch64 static release
//! binary under qemu-user:
//!
//! ```sh
//! CODEDEPLOY_AGENT_TARGET_BIN=target/aarch64-unknown-linux-musl/release/codedeploy-agent \
//! CODEDEPLOY_AGENT_TARGET_RUNNER=qemu-aarch64-static \
//! CODEDEPLOY_AGENT_TARGET_ARCH=aarch64 cargo test --test target_binary
//! ```
//!
//! `CODEDEPLOY_AGENT_TARGET_RUNNER` is a command put before the binary (an emulator);
//! `CODEDEPLOY_AGENT_TARGET_ARCH` (`x86_64` | `aarch64`) asserts the binary's ELF machine, so
//! a run can never test the host binary by mistake. Without binfmt_misc (not registrable in
//! this container) qemu-user emulates only the agent: the hooks it starts (`/bin/sh` scripts,
//! the host's shell and tools) are exec'd by the kernel natively, as on a Graviton host whose
//! shell is aarch64 too. What is emulated is the agent's own code: appspec parsing, archive
//! reading, file installation, process spawning, timeouts and logs.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Run, Sandbox};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-app");

/// The binary under test and the command that runs it.
struct Target {
    bin: PathBuf,
    runner: Option<String>,
}

fn target() -> Target {
    let bin = std::env::var_os("CODEDEPLOY_AGENT_TARGET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(support::bin);
    assert!(bin.is_file(), "{} is not a file", bin.display());
    let runner = std::env::var("CODEDEPLOY_AGENT_TARGET_RUNNER")
        .ok()
        .filter(|r| !r.is_empty());
    Target { bin, runner }
}

impl Target {
    /// `[runner] <path> args…`, with `path` the binary or a link to it (argv[0] dispatch).
    fn command_as(&self, path: &Path) -> Command {
        match &self.runner {
            Some(r) => {
                let mut c = Command::new(r);
                c.arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn command(&self) -> Command {
        self.command_as(&self.bin)
    }

    /// `codedeploy-local` (a symlink to the binary, as the packages install it) with the
    /// sandbox's configuration; the sample's state directory under the sandbox.
    fn local(&self, s: &Sandbox, args: &[&str]) -> Run {
        let link = s.path().join("codedeploy-local");
        if !link.exists() {
            std::os::unix::fs::symlink(fs::canonicalize(&self.bin).expect("bin"), &link)
                .expect("symlink");
        }
        let out = self
            .command_as(&link)
            .arg("-c")
            .arg(s.config())
            .args(args)
            .env("XDG_STATE_HOME", s.path().join("state"))
            .env("CODEDEPLOY_LOG", "debug")
            .stdin(Stdio::null())
            .output()
            .expect("run codedeploy-local");
        Run::from(out)
    }
}

/// The ELF machine of `bin` (e_machine at byte 18, little-endian).
fn elf_machine(bin: &Path) -> &'static str {
    let bytes = fs::read(bin).expect("read binary");
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", bin.display());
    match u16::from_le_bytes([bytes[18], bytes[19]]) {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        other => panic!("{}: ELF machine {other:#x}", bin.display()),
    }
}

#[test]
fn the_binary_is_the_named_architecture() {
    let t = target();
    let machine = elf_machine(&t.bin);
    let want = std::env::var("CODEDEPLOY_AGENT_TARGET_ARCH")
        .unwrap_or_else(|_| std::env::consts::ARCH.to_owned());
    assert_eq!(machine, want, "{}", t.bin.display());
    // A binary of another architecture needs the emulator (and then did not run natively).
    if machine != std::env::consts::ARCH {
        assert!(
            t.runner.is_some(),
            "{machine} needs CODEDEPLOY_AGENT_TARGET_RUNNER"
        );
    }
}

#[test]
fn version_names_this_release() {
    let t = target();
    for args in [&["--version"][..], &["local", "--version"][..]] {
        let run = Run::from(t.command().args(args).output().expect("run"));
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains(env!("CARGO_PKG_VERSION")),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn validate_accepts_the_example_and_lists_a_broken_ones_problems() {
    let t = target();
    let run = Run::from(
        t.command()
            .args(["validate", SAMPLE])
            .output()
            .expect("run"),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);
    let json = Run::from(
        t.command()
            .args(["validate", "--format", "json", SAMPLE])
            .output()
            .expect("run"),
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert!(json.stdout.trim() == "[]", "no findings: {}", json.stdout);

    let s = Sandbox::new();
    let bad = s.bundle(
        "bad",
        &[(
            "appspec.yml",
            "version: 1.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/missing.sh\n",
        )],
    );
    let run = Run::from(t.command().arg("validate").arg(&bad).output().expect("run"));
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("appspec.yml:1:10: error:"),
        "{}",
        run.stdout
    );
}

/// The sample's scripts.log of the deployment `run` printed.
fn scripts_log(run: &Run) -> String {
    fs::read_to_string(Sandbox::deployment_dir(run).join("logs/scripts.log")).expect("scripts.log")
}

/// Stops the sample's background heartbeat (started by its ApplicationStart hook).
fn stop_sample_app(s: &Sandbox) {
    let pid = s.path().join("state/codedeploy-hello-app/hello.pid");
    if let Ok(pid) = fs::read_to_string(pid) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

#[test]
fn codedeploy_local_deploys_the_sample_with_its_hooks_from_a_directory_tgz_and_zip() {
    let t = target();
    let s = Sandbox::new();
    // The same revision as the directory, a tgz and a zip: each is unpacked by the binary.
    let tgz = s.path().join("hello-app.tgz");
    support::tgz(Path::new(SAMPLE), &tgz);
    let zip = s.path().join("hello-app.zip");
    let zipped = Command::new("zip")
        .args(["-q", "-r"])
        .arg(&zip)
        .arg(".")
        .current_dir(SAMPLE)
        .status()
        .is_ok_and(|st| st.success());
    if !zipped {
        support::require::missing("the zip command", "apt-get install -y zip");
        return;
    }
    let rounds = [
        (SAMPLE.to_owned(), "directory"),
        (tgz.display().to_string(), "tgz"),
        (zip.display().to_string(), "zip"),
    ];
    for (round, (location, kind)) in rounds.iter().enumerate() {
        let run = t.local(
            &s,
            &[
                "-l",
                location,
                "-t",
                kind,
                "-a",
                "hello-app",
                "-d",
                "Target",
            ],
        );
        run.assert_ok();
        let log = scripts_log(&run);
        for event in [
            "BeforeInstall",
            "AfterInstall",
            "ApplicationStart",
            "ValidateService",
        ] {
            assert!(
                log.contains(&format!("LifecycleEvent - {event}")),
                "{kind}: {event} did not run:\n{log}"
            );
        }
        // The hooks got the deployment's environment and saw the installed revision.
        assert!(
            log.contains("[stdout]deploying hello-app (d-") && log.contains("to group Target"),
            "{kind}: {log}"
        );
        assert!(log.contains("site/index.html"), "{kind}: {log}");
        assert!(log.contains("[stdout]hello-app is up"), "{kind}: {log}");
        if round == 0 {
            assert!(!log.contains("LifecycleEvent - ApplicationStop"), "{log}");
        } else {
            // ApplicationStop ran the previous revision's stop.sh, which found its app running.
            assert!(
                log.contains("[stdout]stopping hello-app (pid "),
                "{kind}: {log}"
            );
        }
        let heartbeat = s.path().join("state/codedeploy-hello-app/heartbeat");
        assert!(
            heartbeat.is_file(),
            "{kind}: the app started by the hook wrote nothing"
        );
    }
    stop_sample_app(&s);
}

// ---------------------------------------------------------------------------------------------
// Hostile bundles through the binary. tests/archive_hostile.rs has the whole table against the
// library (scripts/aarch64-check also runs it compiled for aarch64 under qemu); these prove the
// binary under test refuses the classic escapes end to end.

/// One ustar entry: header written byte by byte, so any name and type is possible.
fn tar_entry(out: &mut Vec<u8>, name: &str, ty: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode = if ty == b'5' { 0o755 } else { 0o644 };
    for (range, value) in [
        (100..108, mode),
        (108..116, 0),
        (116..124, 0),
        (124..136, data.len() as u64),
        (136..148, 1_600_000_000),
    ] {
        let width = range.len() - 1;
        let text = format!("{value:0width$o}");
        h[range.start..range.start + width].copy_from_slice(text.as_bytes());
    }
    h[156] = ty;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

const APPSPEC: &str = "version: 0.0\nos: linux\n";

#[test]
fn hostile_bundles_are_refused_and_nothing_lands_outside() {
    let t = target();
    let s = Sandbox::new();
    let outside = s.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let outside_str = outside.display().to_string();
    let passwd_links = fs::metadata("/etc/passwd").expect("passwd").nlink();
    let slip = format!("../../../../../../../..{outside_str}/slip.txt");
    let absolute = format!("{outside_str}/absolute.txt");
    // (what, entries after the appspec, the entry the error names)
    type Entries<'a> = Vec<(&'a str, u8, &'a str, &'a [u8])>;
    let cases: Vec<(&str, Entries<'_>, &str)> = vec![
        ("tar slip", vec![(&slip, b'0', "", b"pwned")], "slip.txt"),
        (
            "absolute path",
            vec![(&absolute, b'0', "", b"pwned")],
            "absolute.txt",
        ),
        (
            "write through a symlink",
            vec![
                ("link", b'2', &outside_str, b""),
                ("link/through.txt", b'0', "", b"pwned"),
            ],
            "link/through.txt",
        ),
        (
            "hard link to a file outside",
            vec![("hard", b'1', "/etc/passwd", b"")],
            "hard",
        ),
        ("device node", vec![("dev", b'3', "", b"")], "dev"),
    ];
    for (i, (what, entries, named)) in cases.iter().enumerate() {
        let mut bytes = Vec::new();
        tar_entry(&mut bytes, "appspec.yml", b'0', "", APPSPEC.as_bytes());
        for (name, ty, link, data) in entries {
            tar_entry(&mut bytes, name, *ty, link, data);
        }
        bytes.extend_from_slice(&[0u8; 1024]);
        let bundle = s.path().join(format!("hostile-{i}.tar"));
        fs::write(&bundle, &bytes).expect("write bundle");
        let run = t.local(
            &s,
            &[
                "-l",
                bundle.to_str().expect("utf8"),
                "-t",
                "tar",
                "-g",
                &format!("hostile-{i}"),
            ],
        );
        assert_eq!(
            run.code, 1,
            "{what}: not refused\n{}\n{}",
            run.stdout, run.stderr
        );
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(named),
            "{what}: the error does not name {named}:\n{said}"
        );
        let landed: Vec<_> = fs::read_dir(&outside)
            .expect("read outside")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(landed.is_empty(), "{what}: wrote {landed:?}");
    }
    // No hard link to /etc/passwd was made (the sandbox still holds every deployment).
    assert_eq!(
        fs::metadata("/etc/passwd").expect("passwd").nlink(),
        passwd_links
    );
}
