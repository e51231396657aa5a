//! A Debian 12 machine with systemd for system tests: the package installed by `dpkg`/`apt`,
//! the agent run by systemd, everything driven from the test process. Root only.
//!
//! ```ignore
//! let netns = Netns::new()?;                        // loopback only; nothing else exists in it
//! let fake = netns.start(FakeService::start);       // listens (and is dropped) in that namespace
//! let mut m = Machine::new("system", netns)?;       // a fresh copy of the cached root
//! m.offline("apt-get install -y --no-download /root/pkg.deb").ok();  // "image build": no systemd
//! m.write("/etc/codedeploy-agent/conf/codedeployagent.yml", &agent_config(&fake.url()), 0o644);
//! m.write(ONPREM_PATH, &onprem_config(HOST, &fake.credentials()), 0o600);
//! m.assert_loopback_only();                         // before systemd may start the agent
//! m.boot()?;                                        // systemd-nspawn --boot; waits for "running"
//! m.sh("systemctl is-active codedeploy-agent").ok();
//! ```
//!
//! * **The root** ([`base_root`]): `debootstrap --variant=minbase` of bookworm from
//!   <http://deb.debian.org/debian> with systemd, systemd-sysv, dbus and procps, plus apt's
//!   package lists and the `.deb`s of `ca-certificates` (and `openssl`) in apt's cache but NOT
//!   installed, so `apt-get install --no-download ./codedeploy-agent.deb` resolves the
//!   package's declared dependencies without any network. Built once (about 2 minutes) into
//!   `${XDG_CACHE_HOME:-~/.cache}/codedeploy-agent-ci/bookworm-<key>.tar`; later runs only
//!   unpack it (a few seconds). Delete the file to rebuild.
//! * **The network** ([`Netns`]): a network namespace of its own with only `lo` up, made by the
//!   test process before the machine exists; the machine is booted into it
//!   (`--network-namespace-path`) and fakes are started in it with [`Netns::run`] (a thread
//!   that joins the namespace, so listeners bound there are the machine's 127.0.0.1). Nothing
//!   but loopback can be reached from inside: a request to 169.254.169.254 fails at once.
//!   The agent is pointed at the fakes by configuration ([`agent_config`], [`onprem_config`]):
//!   on-premises credentials, `deploy_control_endpoint` on 127.0.0.1; [`Machine::assert_loopback_only`]
//!   checks that before the agent may start.
//! * **Booting** ([`Machine::boot`]): `systemd-nspawn --boot --register=no --keep-unit`
//!   (no machined here), PID 1 found as nspawn's child, then `systemctl is-system-running --wait`.
//!   Commands run inside with `nsenter -t <pid 1> -a` ([`Machine::sh`]), with a clean environment.
//!   `machinectl`/`systemd-run --machine` do not work without registration.
//! * **Without systemd** ([`Machine::offline`]): `systemd-nspawn` without `--boot`: the command
//!   is PID 1, `/run/systemd/system` does not exist, as in an image build or a chroot.
//! * **Teardown**: dropping the machine halts it (SIGTERM to nspawn, which halts the container)
//!   and deletes its directory.
//!
//! Needs: root, `debootstrap`, `systemd-container` (systemd-nspawn), `nsenter` (util-linux),
//! `tar`. [`require`] says what is missing (fails under CI=true, skips otherwise).
#![allow(dead_code)]

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian mirror (the one the host's apt uses).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// The release.
pub const SUITE: &str = "bookworm";
/// Installed into the base root.
pub const INCLUDE: &str = "systemd,systemd-sysv,dbus,procps";
/// Downloaded into the root's apt cache, not installed: what the package must declare.
pub const DOWNLOAD_ONLY: &str = "ca-certificates";
/// Where the on-premises configuration goes in the machine.
pub const ONPREM_PATH: &str = "/etc/codedeploy-agent/conf/codedeploy.onpremises.yml";
/// The agent configuration in the machine.
pub const CONFIG_PATH: &str = "/etc/codedeploy-agent/conf/codedeployagent.yml";
/// PATH for commands run inside.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The tools the harness needs, or why it cannot run: `Err` names what is missing and how to
/// get it. Under `CI=true` the caller must fail on `Err`; elsewhere it may skip.
pub fn require() -> Result<(), String> {
    if !super::is_root() {
        return Err("system tests need root (systemd-nspawn, debootstrap)".into());
    }
    let mut missing = Vec::new();
    for (tool, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("tar", "tar"),
    ] {
        if !on_path(tool) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing {}: apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        ))
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The cache directory: `${XDG_CACHE_HOME:-~/.cache}/codedeploy-agent-ci`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("codedeploy-agent-ci")
}

/// Where machines are unpacked (not /tmp: often a small tmpfs).
fn machines_dir() -> PathBuf {
    PathBuf::from("/var/tmp/codedeploy-agent-ci")
}

/// The cached root tarball, built first if missing (about 2 minutes, needs the mirror).
pub fn base_root() -> Result<PathBuf, String> {
    let key = format!(
        "{SUITE}-minbase-{}-dl-{}",
        INCLUDE.replace(',', "+"),
        DOWNLOAD_ONLY
    );
    let dir = cache_dir();
    let tarball = dir.join(format!("{key}.tar"));
    if tarball.is_file() {
        return Ok(tarball);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // One builder at a time (parallel test binaries): an exclusive lock on a sibling file.
    let lock = fs::File::create(dir.join(format!("{key}.lock")))
        .map_err(|e| format!("cannot create the lock in {}: {e}", dir.display()))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", io::Error::last_os_error()));
    }
    if tarball.is_file() {
        return Ok(tarball);
    }
    let started = Instant::now();
    let work = machines_dir().join(format!("build-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let root = work.join("root");
    eprintln!(
        "system tests: building the {SUITE} root (debootstrap, once; cached in {})",
        tarball.display()
    );
    let steps: Vec<(String, Command)> = vec![
        ("debootstrap".into(), {
            let mut c = Command::new("debootstrap");
            c.args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
                .arg(&root)
                .arg(MIRROR);
            c
        }),
        (
            "apt-get update".into(),
            chroot(&root, "apt-get -o Acquire::Languages=none update -qq"),
        ),
        ("apt-get clean".into(), chroot(&root, "apt-get clean")),
        (
            format!("apt-get install --download-only {DOWNLOAD_ONLY}"),
            chroot(
                &root,
                &format!(
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only {DOWNLOAD_ONLY}"
                ),
            ),
        ),
        ("tar".into(), {
            let mut c = Command::new("tar");
            let partial = tarball.with_extension("tar.partial");
            c.arg("-C")
                .arg(&root)
                .args(["--numeric-owner", "--xattrs", "-cf"])
                .arg(partial)
                .arg(".");
            c
        }),
    ];
    for (what, mut cmd) in steps {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the system-test root: {what} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    fs::rename(tarball.with_extension("tar.partial"), &tarball)
        .map_err(|e| format!("rename into {}: {e}", tarball.display()))?;
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "system tests: root built in {} s",
        started.elapsed().as_secs()
    );
    Ok(tarball)
}

fn chroot(root: &Path, script: &str) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args(["/bin/sh", "-c", script])
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C");
    c
}

/// A network namespace with only `lo`, up. Fakes started with [`Netns::run`] listen there;
/// a [`Machine`] boots into it.
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    pub fn new() -> io::Result<Self> {
        std::thread::spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare affects only this (short-lived) thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            Ok(OwnedFd::from(fs::File::open("/proc/thread-self/ns/net")?))
        })
        .join()
        .map_err(|_| io::Error::other("the netns thread panicked"))?
        .map(|fd| Self { fd })
    }

    /// A path naming this namespace for other processes (nspawn, nsenter).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// Runs `f` on a thread inside the namespace: sockets it binds and processes it spawns
    /// are in it (the process's other threads are not).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this thread only, with a valid namespace fd.
                let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
        })
    }
}

impl Netns {
    /// Like [`Netns::run`], for a value that must also be dropped inside the namespace (a
    /// fake whose drop connects to its own listener to wake it): derefs to the value.
    pub fn start<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> InNetns<T> {
        InNetns {
            value: Some(self.run(f)),
            fd: self.fd.try_clone().expect("dup the netns fd"),
        }
    }
}

/// A value made in a [`Netns`] and dropped there ([`Netns::start`]).
pub struct InNetns<T: Send + 'static> {
    value: Option<T>,
    fd: OwnedFd,
}

impl<T: Send + 'static> std::ops::Deref for InNetns<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("value")
    }
}

impl<T: Send + 'static> Drop for InNetns<T> {
    fn drop(&mut self) {
        let Some(value) = self.value.take() else {
            return;
        };
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on this thread only, with a valid namespace fd.
                unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                drop(value);
            });
        });
    }
}

/// `ip link set lo up` for the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket and two ioctls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The outcome of a command run in the machine.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(what: &str, out: Output) -> Self {
        Self {
            what: what.to_owned(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Stdout, panicking with everything when the command failed.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code, 0,
            "in the machine: `{}` exited {}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self.stdout.clone()
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }
}

struct Booted {
    nspawn: Child,
    leader: i32,
}

/// A machine: a fresh copy of the cached root in its own directory, booted or not.
pub struct Machine {
    pub name: String,
    pub dir: PathBuf,
    netns: Netns,
    booted: Option<Booted>,
    boots: u32,
}

impl Machine {
    /// Unpacks the cached root (building it first if needed) into a new directory.
    pub fn new(name: &str, netns: Netns) -> Result<Self, String> {
        let tarball = base_root()?;
        let dir = machines_dir().join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .args(["--numeric-owner", "--xattrs", "-xf"])
            .arg(&tarball)
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "unpacking {} failed: {}",
                tarball.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        fs::write(dir.join("etc/hostname"), format!("{name}\n")).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_owned(),
            dir,
            netns,
            booted: None,
            boots: 0,
        })
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The host path of `path` inside the machine.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// Writes a file inside the machine (parents created).
    pub fn write(&self, path: &str, content: &str, mode: u32) {
        let p = self.host_path(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir in machine");
        fs::write(&p, content).expect("write in machine");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod in machine");
    }

    /// Copies a host file into the machine.
    /// A booted machine may have a tmpfs on `/tmp` (and other paths) that the host does not
    /// see: the file is staged under `/var/lib` on disk and moved into place inside.
    pub fn copy_in(&self, from: &Path, to: &str) {
        let (stage, p) = if self.booted.is_some() {
            let stage = "/var/lib/container-copy-in/file";
            (Some(stage), self.host_path(stage))
        } else {
            (None, self.host_path(to))
        };
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir in machine");
        fs::copy(from, &p)
            .unwrap_or_else(|e| panic!("copy {} into the machine: {e}", from.display()));
        if let Some(stage) = stage {
            let out = self.sh(&format!(
                "mkdir -p \"$(dirname '{to}')\" && mv -f '{stage}' '{to}'"
            ));
            assert!(out.success(), "move into {to} inside the machine: {out:?}");
        }
    }

    pub fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.host_path(path)).ok()
    }

    pub fn is_booted(&self) -> bool {
        self.booted.is_some()
    }

    /// Runs `script` with `/bin/sh -c` in the machine while it is NOT booted (no systemd: an
    /// image build, a chroot), in its network namespace.
    pub fn offline(&self, script: &str) -> Out {
        assert!(self.booted.is_none(), "offline() on a booted machine");
        let out = Command::new("systemd-nspawn")
            .args(["--quiet", "--register=no", "--keep-unit", "--pipe"])
            .arg(format!(
                "--network-namespace-path={}",
                self.netns.path().display()
            ))
            .arg("-D")
            .arg(&self.dir)
            .args([
                "--setenv=PATH=".to_owned() + PATH,
                "--setenv=DEBIAN_FRONTEND=noninteractive".to_owned(),
            ])
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("systemd-nspawn");
        Out::from(script, out)
    }

    /// Boots the machine (`systemd-nspawn --boot`) and waits until systemd says the system is
    /// up (`running` or `degraded`; the boot's failed units are in the error otherwise).
    pub fn boot(&mut self) -> Result<(), String> {
        assert!(self.booted.is_none(), "boot() on a booted machine");
        self.boots += 1;
        let log = self.dir.with_extension(format!("boot{}.log", self.boots));
        let log_file = fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
        ])
        .arg(format!("--machine={}", self.name))
        .arg(format!(
            "--network-namespace-path={}",
            self.netns.path().display()
        ))
        .arg("-D")
        .arg(&self.dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);
        // If the test process dies, nspawn gets SIGTERM and halts the machine.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let mut nspawn = cmd.spawn().map_err(|e| format!("systemd-nspawn: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if let Ok(Some(status)) = nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn exited ({status}) while booting:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if let Some(pid) = init_child(nspawn.id()) {
                break pid;
            }
            if Instant::now() > deadline {
                let _ = nspawn.kill();
                return Err("systemd-nspawn started no systemd within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.booted = Some(Booted { nspawn, leader });
        // Right after exec, systemd's bus is not up yet and systemctl fails at once without
        // printing a state: retry until it prints one (after waiting for the boot to finish).
        let deadline = Instant::now() + Duration::from_secs(120);
        let (state, out) = loop {
            let out = self.sh("timeout 120 systemctl is-system-running --wait");
            let state = out.stdout.trim().to_owned();
            if !state.is_empty() || Instant::now() > deadline {
                break (state, out);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if state != "running" && state != "degraded" {
            let failed =
                self.sh("systemctl --failed --no-legend; journalctl -b --no-pager | tail -n 50");
            return Err(format!(
                "the machine did not come up (state {state:?}; {}):\n{}{}",
                out.stderr.trim(),
                failed.stdout,
                failed.stderr
            ));
        }
        Ok(())
    }

    /// The host PID of the machine's systemd.
    pub fn leader(&self) -> i32 {
        self.booted.as_ref().expect("booted").leader
    }

    /// Runs `script` with `/bin/sh -c` in the booted machine (all its namespaces, a clean
    /// environment).
    pub fn sh(&self, script: &str) -> Out {
        let leader = self.leader();
        let out = Command::new("nsenter")
            .args(["-t", &leader.to_string(), "-a", "--", "/usr/bin/env", "-i"])
            .arg(format!("PATH={PATH}"))
            .args(["LANG=C", "HOME=/root", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter");
        Out::from(script, out)
    }

    /// Polls `script` until it succeeds (exit 0), up to `timeout`; returns its last outcome.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> Out {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.sh(script);
            if out.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Halts the machine and waits for nspawn to exit.
    pub fn halt(&mut self) {
        let Some(mut b) = self.booted.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(b.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = b.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = b.nspawn.kill();
        let _ = b.nspawn.wait();
    }

    /// Halts and boots again (a reboot of the root).
    pub fn reboot(&mut self) -> Result<(), String> {
        self.halt();
        self.boot()
    }

    /// Asserts the agent can only talk to loopback: the configuration names a 127.0.0.1
    /// control endpoint and an on-premises file with credentials (so IMDS is never asked),
    /// and the machine's network namespace has nothing but `lo`.
    #[track_caller]
    pub fn assert_loopback_only(&self) {
        let conf = self.read(CONFIG_PATH).unwrap_or_default();
        let endpoint = conf
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(":deploy_control_endpoint:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned();
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "{CONFIG_PATH} must point :deploy_control_endpoint: at 127.0.0.1, has {endpoint:?}"
        );
        let onprem = self.read(ONPREM_PATH).unwrap_or_default();
        assert!(
            onprem.contains("aws_access_key_id:") && onprem.contains("region:"),
            "{ONPREM_PATH} must hold on-premises credentials, or the agent asks IMDS: {onprem:?}"
        );
        let devices = self
            .netns
            .run(|| fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default());
        let names: Vec<&str> = devices
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(
            names,
            ["lo"],
            "the machine's network namespace must have only lo"
        );
    }
}

/// The PID of nspawn's child running systemd (the machine's PID 1), once it runs systemd.
fn init_child(nspawn: u32) -> Option<i32> {
    let children = fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd")
        })
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.halt();
        if std::env::var_os("CODEDEPLOY_SYSTEM_TEST_KEEP").is_some() {
            eprintln!("system tests: kept {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
        for boot in 1..=self.boots {
            let _ = fs::remove_file(self.dir.with_extension(format!("boot{boot}.log")));
        }
    }
}

/// codedeployagent.yml for the machine: the fake's endpoint (on the machine's loopback), one
/// second between polls, no jitter, verbose, then `extra`.
pub fn agent_config(fake_url: &str, extra: &str) -> String {
    format!(
        "---\n:log_aws_wire: false\n:log_dir: '/var/log/aws/codedeploy-agent/'\n:pid_dir: '/opt/codedeploy-agent/state/.pid/'\n:program_name: codedeploy-agent\n:root_dir: '/opt/codedeploy-agent/deployment-root'\n:verbose: true\n:wait_between_runs: 1\n:startup_jitter_ms: 0\n:max_revisions: 5\n:deploy_control_endpoint: {fake_url}\n{extra}"
    )
}

/// An on-premises configuration with IAM user credentials: `host` is the host identifier.
pub fn onprem_config(host: &str, access_key: &str, secret_key: &str) -> String {
    format!(
        "---\nregion: us-east-1\niam_user_arn: {host}\naws_access_key_id: {access_key}\naws_secret_access_key: {secret_key}\n"
    )
}
