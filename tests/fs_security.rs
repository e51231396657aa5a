//! Issue 12 items 1, 2 and 7 through the real binary: the appspec is opened inside the bundle
//! only (one lookup for `validate`, `plan`, `local` and the daemon), destination paths are
//! walked through directory descriptors (a swapping non-root user cannot redirect a chmod or
//! a removal outside), and the agent's own tree is never writable by other users. The attacks
//! and outcomes are listed in docs/reliability.md.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Run, Sandbox};

fn run_bin(s: &Sandbox, args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(support::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    // Bounded: a reader that never stops (the /dev/zero appspec) must not hang the suite.
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{args:?} still running after {limit:?} (killed)\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = s;
    Run::from(child.wait_with_output().expect("wait"))
}

fn local(s: &Sandbox, bundle: &Path, extra: &[&str]) -> Run {
    let config = s.config();
    let mut args = vec![
        "local",
        "-c",
        config.to_str().expect("utf8"),
        "-l",
        bundle.to_str().expect("utf8"),
        "-g",
        "dg",
    ];
    args.extend_from_slice(extra);
    run_bin(s, &args, Duration::from_secs(60))
}

fn plan(s: &Sandbox, bundle: &Path, extra: &[&str]) -> Run {
    let config = s.config();
    let mut args = vec![
        "plan",
        "-c",
        config.to_str().expect("utf8"),
        "-l",
        bundle.to_str().expect("utf8"),
        "-g",
        "dg",
    ];
    args.extend_from_slice(extra);
    run_bin(s, &args, Duration::from_secs(60))
}

fn validate(s: &Sandbox, bundle: &Path) -> Run {
    run_bin(
        s,
        &["validate", bundle.to_str().expect("utf8")],
        Duration::from_secs(60),
    )
}

fn all_text(r: &Run) -> String {
    format!("{}\n{}", r.stdout, r.stderr)
}

/// Item 1: an appspec that is a symlink out of the bundle (to `/dev/zero`, or to an outside
/// file whose hooks would run), or named with `..` by `-A`, gets the same refusal from
/// `validate`, `plan` and `local`, at once, and nothing outside is read or run.
#[test]
fn an_appspec_leading_out_of_the_bundle_is_refused_alike_by_every_command() {
    let s = Sandbox::new();
    let marker = s.path().join("outside-hook-ran");
    let outside = s.path().join("outside");
    fs::create_dir_all(outside.join("scripts")).expect("mkdir");
    fs::write(
        outside.join("scripts/run.sh"),
        format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    )
    .expect("write");
    fs::set_permissions(
        outside.join("scripts/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let outside_spec = "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/run.sh\nSECRET-LINE-THAT-MUST-NOT-BE-ECHOED: [\n";
    fs::write(outside.join("appspec.yml"), outside_spec).expect("write");

    for target in [
        Path::new("/dev/zero").to_path_buf(),
        outside.join("appspec.yml"),
    ] {
        let b = s.bundle("b", &[("scripts/run.sh", "#!/bin/sh\n")]);
        symlink(&target, b.join("appspec.yml")).expect("symlink");
        let tgz = s.path().join("b.tgz");
        support::tgz(&b, &tgz);
        for r in [
            local(&s, &b, &[]),
            local(&s, &tgz, &["-t", "tgz"]),
            plan(&s, &b, &[]),
            plan(&s, &tgz, &["-t", "tgz"]),
            validate(&s, &b),
            validate(&s, &tgz),
        ] {
            let text = all_text(&r);
            assert_ne!(r.code, 0, "{}: {text}", target.display());
            assert!(
                text.contains("is a symlink that leads out of the bundle"),
                "{}: {text}",
                target.display()
            );
            assert!(!text.contains("SECRET-LINE"), "{text}");
        }
    }
    // `-A` with `..` or an absolute name.
    let b = s.bundle(
        "named",
        &[("appspec.yml", "version: 0.0\nos: linux\n"), ("x", "")],
    );
    let up = "../../outside/appspec.yml".to_owned();
    assert!(b.join(&up).exists());
    let abs = outside.join("appspec.yml").display().to_string();
    for name in [up.as_str(), abs.as_str()] {
        for r in [local(&s, &b, &["-A", name]), plan(&s, &b, &["-A", name])] {
            let text = all_text(&r);
            assert_ne!(r.code, 0, "{name}: {text}");
            assert!(
                text.contains("is not a path inside the bundle"),
                "{name}: {text}"
            );
            assert!(!text.contains("SECRET-LINE"), "{text}");
        }
    }
    assert!(!marker.exists(), "the outside appspec's hook ran");
}

/// Item 1: an appspec over the size cap is refused with a clear message by every command, and
/// a symlink that stays inside the bundle still works.
#[test]
fn a_huge_appspec_is_refused_and_an_inside_symlink_works() {
    let s = Sandbox::new();
    let b = s.bundle("big", &[("x", "")]);
    let f = fs::File::create(b.join("appspec.yml")).expect("create");
    f.set_len(5 << 20).expect("len");
    for r in [local(&s, &b, &[]), plan(&s, &b, &[]), validate(&s, &b)] {
        let text = all_text(&r);
        assert_ne!(r.code, 0, "{text}");
        assert!(text.contains("is larger than 4 MiB"), "{text}");
    }
    let b = s.bundle(
        "inside",
        &[("conf/appspec.yml", "version: 0.0\nos: linux\n")],
    );
    symlink("conf/appspec.yml", b.join("appspec.yml")).expect("symlink");
    local(&s, &b, &[]).assert_ok();
    assert_eq!(plan(&s, &b, &[]).code, 0);
    assert_eq!(validate(&s, &b).code, 0);
}

/// Every path under `dir` (itself included) that another user could write: group or other
/// write, or an owner other than the agent's.
fn writable_by_others(dir: &Path) -> Vec<String> {
    let me = unsafe { libc::geteuid() };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).expect("lstat");
        if m.file_type().is_symlink() {
            continue;
        }
        if m.mode() & 0o022 != 0 || m.uid() != me {
            out.push(format!(
                "{} mode {:o} uid {}",
                p.display(),
                m.mode() & 0o7777,
                m.uid()
            ));
        }
        if m.is_dir() {
            stack.extend(
                fs::read_dir(&p)
                    .expect("read_dir")
                    .map(|e| e.expect("entry").path()),
            );
        }
    }
    out
}

/// Item 7: a tar whose `./` is 0777 and owned by a host uid, with a world-writable scripts
/// directory and script, leaves nothing in the agent's deployment-archive that another user
/// could write (so nobody can replace the script the next ApplicationStop runs).
#[test]
fn a_world_writable_or_foreign_owned_tar_leaves_the_agents_tree_unwritable_by_others() {
    let s = Sandbox::new();
    let b = s.bundle(
        "ww",
        &[
            (
                "appspec.yml",
                "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n",
            ),
            ("scripts/stop.sh", "#!/bin/sh\n"),
        ],
    );
    let tgz = s.path().join("ww.tgz");
    let ok = Command::new("tar")
        .args([
            "--owner=4242",
            "--group=4242",
            "--numeric-owner",
            "--mode=a+rwX",
            "-czf",
        ])
        .arg(&tgz)
        .arg("-C")
        .arg(&b)
        .arg(".")
        .status()
        .expect("tar");
    assert!(ok.success());
    let r = local(&s, &tgz, &["-t", "tgz"]);
    r.assert_ok();
    let archive = Sandbox::deployment_dir(&r).join("deployment-archive");
    let bad = writable_by_others(&archive);
    assert!(bad.is_empty(), "writable by others:\n{}", bad.join("\n"));
    // Same for a zip with 0777 entries.
    let zip = s.path().join("ww.zip");
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && chmod -R a+rwX . && zip -qr '{}' .",
            b.display(),
            zip.display()
        ))
        .status()
        .expect("zip");
    assert!(ok.success());
    let r = local(&s, &zip, &["-t", "zip"]);
    r.assert_ok();
    let archive = Sandbox::deployment_dir(&r).join("deployment-archive");
    let bad = writable_by_others(&archive);
    assert!(bad.is_empty(), "writable by others:\n{}", bad.join("\n"));
}

/// A system user created for one test and removed afterwards.
struct TestUser(String);

impl TestUser {
    fn create(tag: &str) -> Self {
        let name = format!("cdfs{tag}{}", std::process::id());
        let status = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", "-d", "/nonexistent-cdfs", &name])
            .status()
            .expect("useradd runs");
        assert!(status.success(), "useradd {name}");
        TestUser(name)
    }

    fn uid(&self) -> u32 {
        nix::unistd::User::from_name(&self.0)
            .expect("getpwnam")
            .expect("user")
            .uid
            .as_raw()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).status();
    }
}

fn needs_root() -> bool {
    if support::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI=true: this test must run as root"
    );
    println!("skipped: needs root (useradd, a root-owned secret)");
    false
}

/// Item 2: a non-root user who owns the destination directory keeps swapping an installed
/// file for a symlink to a root-owned 0600 file outside, and the installed directory for a
/// symlink to an outside directory, while 30 deployments run (each one cleaning up the
/// previous install, copying, making directories, and applying mode, owner and ACL). Nothing
/// outside changes: not the secret's mode, owner or content, not the outside directory's file.
#[test]
fn a_swapping_user_cannot_redirect_permissions_or_cleanup_outside_the_destination() {
    if !needs_root() {
        return;
    }
    let s = Sandbox::new();
    let user = TestUser::create("r");
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = s.path().join("secret");
    fs::write(&secret, "root only\n").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let outdir = s.path().join("outdir");
    fs::create_dir(&outdir).expect("mkdir");
    fs::write(outdir.join("victim"), "keep me\n").expect("write");
    fs::set_permissions(outdir.join("victim"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let app = s.dest().join("app");
    fs::create_dir(&app).expect("mkdir");
    nix::unistd::chown(&app, Some(user.uid().into()), None).expect("chown");

    let text = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {app}\n\
         permissions:\n  - object: {app}\n    mode: 666\n    owner: {u}\n    acls:\n      - u:{u}:rw\n    type:\n      - file\n\
         \x20 - object: {app}\n    mode: 777\n    owner: {u}\n    type:\n      - directory\n",
        app = app.display(),
        u = user.0
    );
    let b = s.bundle(
        "race",
        &[
            ("appspec.yml", &text),
            ("app/index.html", "x"),
            ("app/sub/victim", "y"),
        ],
    );
    let attack = format!(
        "end=$(($(date +%s) + 120)); while [ $(date +%s) -lt $end ]; do \
           ln -sf '{secret}' '{app}/index.html' 2>/dev/null; \
           mv '{app}/sub' '{app}/sub.old' 2>/dev/null && ln -s '{outdir}' '{app}/sub' 2>/dev/null; \
           rm -rf '{app}/sub.old' 2>/dev/null; \
         done",
        secret = secret.display(),
        app = app.display(),
        outdir = outdir.display()
    );
    let mut attacker = Command::new("su")
        .args(["-s", "/bin/sh", &user.0, "-c", &attack])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn attacker");
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..30 {
        let r = local(&s, &b, &[]);
        if r.code == 0 { ok += 1 } else { failed += 1 }
    }
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &user.0])
        .status();
    let _ = attacker.kill();
    let _ = attacker.wait();
    println!("{ok} deployments succeeded, {failed} refused or failed");
    let m = fs::metadata(&secret).expect("secret");
    assert_eq!(m.mode() & 0o7777, 0o600, "the secret's mode changed");
    assert_eq!(m.uid(), 0, "the secret's owner changed");
    assert_eq!(fs::read_to_string(&secret).expect("read"), "root only\n");
    let v = fs::metadata(outdir.join("victim")).expect("the outside file was deleted");
    assert_eq!(v.mode() & 0o7777, 0o600, "the outside file's mode changed");
    assert_eq!(v.uid(), 0, "the outside file's owner changed");
    assert_eq!(
        fs::read_to_string(outdir.join("victim")).expect("read"),
        "keep me\n"
    );
    assert!(
        fs::read_dir(&outdir).expect("ls").count() == 1,
        "something was written outside"
    );
}

/// Item 2, compatibility: symlinks that existed before the deployment and are owned by root
/// (the destination root itself, `shared -> /mnt/efs`) keep working as with the AWS agent;
/// one owned by another user is refused with a message naming it, and nothing is written
/// through it.
#[test]
fn pre_existing_root_owned_destination_symlinks_are_followed_and_foreign_ones_refused() {
    let s = Sandbox::new();
    let real = s.path().join("real-app");
    let efs = s.path().join("efs");
    fs::create_dir_all(&real).expect("mkdir");
    fs::create_dir_all(&efs).expect("mkdir");
    symlink(&real, s.dest().join("app")).expect("link root");
    symlink(&efs, real.join("shared")).expect("link shared");
    let text = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}\n\
         permissions:\n  - object: {}\n    mode: 640\n    type:\n      - file\n",
        s.dest().join("app").display(),
        s.dest().join("app").display()
    );
    let b = s.bundle(
        "trusted",
        &[
            ("appspec.yml", &text),
            ("app/index.html", "x"),
            ("app/shared/data.txt", "d"),
        ],
    );
    local(&s, &b, &[]).assert_ok();
    assert_eq!(
        fs::read_to_string(real.join("index.html")).expect("read"),
        "x"
    );
    assert_eq!(fs::read_to_string(efs.join("data.txt")).expect("read"), "d");
    assert_eq!(
        fs::metadata(efs.join("data.txt")).expect("meta").mode() & 0o777,
        0o640
    );
    // The second deployment cleans the first up through the same links, and the links stay.
    local(&s, &b, &[]).assert_ok();
    assert!(
        fs::symlink_metadata(real.join("shared"))
            .expect("shared")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(efs.join("data.txt")).expect("read"), "d");

    if !needs_root() {
        return;
    }
    let user = TestUser::create("t");
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &real.join("shared"),
        Some(user.uid().into()),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .expect("chown -h");
    fs::remove_file(efs.join("data.txt")).ok();
    let r = local(&s, &b, &[]);
    r.assert_failed_with("refusing to follow the symlink");
    assert!(r.stdout.contains("owned by uid"), "{}", r.stdout);
    assert!(
        !efs.join("data.txt").exists(),
        "written through a foreign symlink"
    );
}
