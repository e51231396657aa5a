//! Hostile and well-formed bundles, built at test time, against `revision::archive::unpack`.
//!
//! Every hostile case checks three things: the error names the entry, the target is gone
//! (or untouched when it was not ours), and nothing next to the target changed.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns panic on set-up failures, which is the point"
)]

#[path = "support/require.rs"]
mod require;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use codedeploy_agent::revision::archive::{
    BundleType, UnpackError, UnpackOptions, UnpackSummary, detect, unpack,
};
use flate2::Compression;
use flate2::write::{DeflateEncoder, GzEncoder};

// ---------------------------------------------------------------------------------------------
// Raw tar writer: headers written byte by byte so hostile names and types are possible.

const REG: u8 = b'0';
const HARD: u8 = b'1';
const SYM: u8 = b'2';
const CHR: u8 = b'3';
const DIR: u8 = b'5';
const FIFO: u8 = b'6';

#[derive(Clone)]
struct TarEntry<'a> {
    name: &'a [u8],
    ty: u8,
    mode: u32,
    data: &'a [u8],
    /// Size to declare; defaults to `data.len()`.
    declared: Option<u64>,
    link: &'a [u8],
    mtime: u64,
    uid: u64,
    gid: u64,
    uname: &'a [u8],
    gname: &'a [u8],
}

fn te<'a>(name: &'a [u8], ty: u8, mode: u32, data: &'a [u8]) -> TarEntry<'a> {
    TarEntry {
        name,
        ty,
        mode,
        data,
        declared: None,
        link: b"",
        mtime: 1_600_000_000,
        uid: 0,
        gid: 0,
        uname: b"",
        gname: b"",
    }
}

fn octal(field: &mut [u8], v: u64) {
    let width = field.len() - 1;
    let s = format!("{v:0width$o}");
    assert!(
        s.len() <= width,
        "value {v} too large for a {width}-digit field"
    );
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

fn raw_header(name: &[u8], ty: u8, mode: u32, size: u64, e: &TarEntry<'_>) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], e.uid);
    octal(&mut h[116..124], e.gid);
    if size > 0o77777777777 {
        // GNU base-256 size.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    } else {
        octal(&mut h[124..136], size);
    }
    octal(&mut h[136..148], e.mtime);
    h[156] = ty;
    let l = e.link.len().min(100);
    h[157..157 + l].copy_from_slice(&e.link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..265 + e.uname.len()].copy_from_slice(e.uname);
    h[297..297 + e.gname.len()].copy_from_slice(e.gname);
    set_checksum(&mut h);
    h
}

fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn tar_bytes(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if e.name.len() > 100 {
            let mut long = e.name.to_vec();
            long.push(0);
            let lh = raw_header(b"././@LongLink", b'L', 0o644, long.len() as u64, e);
            out.extend_from_slice(&lh);
            out.extend_from_slice(&long);
            pad(&mut out);
        }
        let size = e.declared.unwrap_or(e.data.len() as u64);
        out.extend_from_slice(&raw_header(e.name, e.ty, e.mode, size, e));
        out.extend_from_slice(e.data);
        pad(&mut out);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw zip writer: stored or deflated entries with any name, mode, declared size or CRC.

struct ZipEntry<'a> {
    name: &'a [u8],
    data: &'a [u8],
    /// Full `st_mode` (type and permissions) for a Unix-made entry; `None` for a DOS entry.
    mode: Option<u32>,
    deflate: bool,
    declared: Option<u32>,
    crc: Option<u32>,
    mtime: Option<u32>,
}

fn ze<'a>(name: &'a [u8], data: &'a [u8], mode: Option<u32>) -> ZipEntry<'a> {
    ZipEntry {
        name,
        data,
        mode,
        deflate: true,
        declared: None,
        crc: None,
        mtime: None,
    }
}

#[derive(Default)]
struct ZipBuilder {
    out: Vec<u8>,
    central: Vec<u8>,
    count: u16,
}

impl ZipBuilder {
    fn add(&mut self, e: &ZipEntry<'_>) {
        let mut crc = flate2::Crc::new();
        crc.update(e.data);
        let body = if e.deflate {
            let mut enc = DeflateEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(e.data).unwrap();
            enc.finish().unwrap()
        } else {
            e.data.to_vec()
        };
        self.add_raw(e, &body, e.crc.unwrap_or(crc.sum()), e.data.len() as u64);
    }

    fn add_raw(&mut self, e: &ZipEntry<'_>, body: &[u8], crc: u32, real_size: u64) {
        let usize_ = e.declared.unwrap_or(u32::try_from(real_size).unwrap());
        let method: u16 = if e.deflate { 8 } else { 0 };
        let extra: Vec<u8> = match e.mtime {
            Some(t) => {
                let mut x = vec![0x55, 0x54, 5, 0, 1];
                x.extend_from_slice(&t.to_le_bytes());
                x
            }
            None => Vec::new(),
        };
        let offset = self.out.len() as u32;
        let (dos_time, dos_date) = (0u16, (40 << 9) | (1 << 5) | 1); // 2020-01-01 00:00
        let mut local = Vec::new();
        local.extend_from_slice(&0x04034b50u32.to_le_bytes());
        local.extend_from_slice(&20u16.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(&method.to_le_bytes());
        local.extend_from_slice(&dos_time.to_le_bytes());
        local.extend_from_slice(&(dos_date as u16).to_le_bytes());
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&(body.len() as u32).to_le_bytes());
        local.extend_from_slice(&usize_.to_le_bytes());
        local.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        local.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        local.extend_from_slice(e.name);
        local.extend_from_slice(&extra);
        self.out.extend_from_slice(&local);
        self.out.extend_from_slice(body);

        let made_by: u16 = if e.mode.is_some() { (3 << 8) | 20 } else { 20 };
        let c = &mut self.central;
        c.extend_from_slice(&0x02014b50u32.to_le_bytes());
        c.extend_from_slice(&made_by.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&method.to_le_bytes());
        c.extend_from_slice(&dos_time.to_le_bytes());
        c.extend_from_slice(&(dos_date as u16).to_le_bytes());
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&(body.len() as u32).to_le_bytes());
        c.extend_from_slice(&usize_.to_le_bytes());
        c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        c.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes()); // comment
        c.extend_from_slice(&0u16.to_le_bytes()); // disk
        c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        let dir_bit = u32::from(e.name.ends_with(b"/")) * 0x10;
        c.extend_from_slice(&((e.mode.unwrap_or(0) << 16) | dir_bit).to_le_bytes());
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(e.name);
        c.extend_from_slice(&extra);
        self.count += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let cd_offset = self.out.len() as u32;
        let cd_size = self.central.len() as u32;
        self.out.extend_from_slice(&self.central);
        self.out.extend_from_slice(&0x06054b50u32.to_le_bytes());
        self.out.extend_from_slice(&0u16.to_le_bytes());
        self.out.extend_from_slice(&0u16.to_le_bytes());
        self.out.extend_from_slice(&self.count.to_le_bytes());
        self.out.extend_from_slice(&self.count.to_le_bytes());
        self.out.extend_from_slice(&cd_size.to_le_bytes());
        self.out.extend_from_slice(&cd_offset.to_le_bytes());
        self.out.extend_from_slice(&0u16.to_le_bytes());
        self.out
    }
}

fn zip_bytes(entries: &[ZipEntry<'_>]) -> Vec<u8> {
    let mut b = ZipBuilder::default();
    for e in entries {
        b.add(e);
    }
    b.finish()
}

const F644: Option<u32> = Some(0o100644);
const F755: Option<u32> = Some(0o100755);
const D755: Option<u32> = Some(0o040755);
const L777: Option<u32> = Some(0o120777);

// ---------------------------------------------------------------------------------------------
// Harness.

/// A deployment directory: `root/deployment-archive` (the target), a sentinel directory and a
/// file next to it that no bundle may touch.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir(root.join("sentinel")).unwrap();
        fs::write(root.join("sentinel/keep.txt"), b"keep").unwrap();
        fs::write(root.join("next-to-target.txt"), b"next").unwrap();
        Site { _tmp: tmp, root }
    }

    fn target(&self) -> PathBuf {
        self.root.join("deployment-archive")
    }

    fn bundle(&self, bytes: &[u8]) -> PathBuf {
        let p = self.root.join("bundle.tar");
        fs::write(&p, bytes).unwrap();
        p
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        snap(&self.root, &self.root, &mut out);
        out
    }
}

fn snap(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let md = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(base).unwrap().to_path_buf();
        let desc = format!("{:o} {} {}", md.mode(), md.len(), md.mtime());
        out.insert(rel, desc);
        if md.is_dir() {
            snap(base, &path, out);
        }
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

/// Runs a hostile bundle: it must fail, name `entry`, leave no target and change nothing else.
fn hostile(site: &Site, bytes: &[u8], kind: BundleType, o: &UnpackOptions, entry: &str) -> String {
    let bundle = site.bundle(bytes);
    let before = site.snapshot();
    let err = unpack(&bundle, kind, &site.target(), o).expect_err("hostile bundle was accepted");
    let msg = err.to_string();
    eprintln!("refused as expected: {msg}");
    assert!(
        msg.contains(entry),
        "error does not name entry {entry}: {msg}"
    );
    assert!(
        fs::symlink_metadata(site.target()).is_err(),
        "target left behind after: {msg}"
    );
    assert_eq!(
        site.snapshot(),
        before,
        "something changed next to the target: {msg}"
    );
    msg
}

fn ok(site: &Site, bytes: &[u8], kind: BundleType) -> UnpackSummary {
    let bundle = site.bundle(bytes);
    unpack(&bundle, kind, &site.target(), &opts()).unwrap()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------------
// Hostile table.

#[test]
fn zip_slip_is_refused() {
    let site = Site::new();
    let zip = zip_bytes(&[
        ze(b"ok.txt", b"fine", F644),
        ze(b"../sentinel/evil.txt", b"evil", F644),
    ]);
    let msg = hostile(
        &site,
        &zip,
        BundleType::Zip,
        &opts(),
        r#""../sentinel/evil.txt""#,
    );
    assert!(msg.contains(".."), "{msg}");
}

#[test]
fn zip_slip_with_backslashes_from_dos_is_refused() {
    let site = Site::new();
    let zip = zip_bytes(&[ze(b"..\\sentinel\\evil.txt", b"evil", None)]);
    hostile(
        &site,
        &zip,
        BundleType::Zip,
        &opts(),
        r#""..\\sentinel\\evil.txt""#,
    );
}

#[test]
fn tar_slip_is_refused_for_tar_and_tgz() {
    for kind in [BundleType::Tar, BundleType::Tgz] {
        let site = Site::new();
        let tar = tar_bytes(&[
            te(b"ok.txt", REG, 0o644, b"fine"),
            te(b"../sentinel/evil.txt", REG, 0o644, b"evil"),
        ]);
        let bytes = if kind == BundleType::Tgz {
            gzip(&tar)
        } else {
            tar
        };
        hostile(&site, &bytes, kind, &opts(), r#""../sentinel/evil.txt""#);
    }
}

#[test]
fn dotdot_that_stays_inside_is_still_refused() {
    let site = Site::new();
    let tar = tar_bytes(&[te(b"a/../b.txt", REG, 0o644, b"x")]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""a/../b.txt""#);
}

#[test]
fn absolute_paths_are_refused() {
    let site = Site::new();
    let abs = site.root.join("sentinel/abs.txt");
    let name = abs.as_os_str().as_bytes().to_vec();
    let tar = tar_bytes(&[te(&name, REG, 0o644, b"evil")]);
    let msg = hostile(&site, &tar, BundleType::Tar, &opts(), "sentinel/abs.txt");
    assert!(msg.contains("absolute"), "{msg}");
    let zip = zip_bytes(&[ze(&name, b"evil", F644)]);
    hostile(&site, &zip, BundleType::Zip, &opts(), "sentinel/abs.txt");
}

#[test]
fn writing_through_a_planted_symlink_is_refused() {
    let site = Site::new();
    let outside = site.root.join("sentinel");
    let link = outside.as_os_str().as_bytes();
    let mut sym = te(b"link", SYM, 0o777, b"");
    sym.link = link;
    let tar = tar_bytes(&[sym, te(b"link/evil.txt", REG, 0o644, b"evil")]);
    let msg = hostile(&site, &tar, BundleType::Tar, &opts(), r#""link/evil.txt""#);
    assert!(msg.contains("symlink"), "{msg}");

    // The same with a symlink to a directory inside the bundle: still never written through.
    let mut inside = te(b"in", SYM, 0o777, b"");
    inside.link = b"real";
    let tar = tar_bytes(&[
        te(b"real/", DIR, 0o755, b""),
        inside,
        te(b"in/x.txt", REG, 0o644, b"x"),
    ]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""in/x.txt""#);

    let zip = zip_bytes(&[ze(b"link", link, L777), ze(b"link/evil.txt", b"evil", F644)]);
    hostile(&site, &zip, BundleType::Zip, &opts(), r#""link/evil.txt""#);
}

#[test]
fn a_file_replacing_a_planted_symlink_does_not_write_through_it() {
    // Tar "last wins" replaces the symlink itself; the file it pointed to is untouched.
    let site = Site::new();
    let outside = site.root.join("sentinel/keep.txt");
    let mut sym = te(b"f.txt", SYM, 0o777, b"");
    sym.link = outside.as_os_str().as_bytes();
    let tar = tar_bytes(&[sym, te(b"f.txt", REG, 0o644, b"new")]);
    let before = site.snapshot();
    ok(&site, &tar, BundleType::Tar);
    assert_eq!(fs::read(site.target().join("f.txt")).unwrap(), b"new");
    assert_eq!(fs::read(&outside).unwrap(), b"keep");
    let mut after = site.snapshot();
    after.retain(|p, _| !p.starts_with("deployment-archive") && p != Path::new("bundle.tar"));
    let mut before = before;
    before.retain(|p, _| p != Path::new("bundle.tar"));
    assert_eq!(after, before);
}

#[test]
fn a_target_that_is_a_symlink_is_never_followed() {
    let site = Site::new();
    let elsewhere = site.root.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, site.target()).unwrap();
    let bundle = site.bundle(&tar_bytes(&[te(b"a.txt", REG, 0o644, b"a")]));
    let before = site.snapshot();
    let err = unpack(&bundle, BundleType::Tar, &site.target(), &opts()).unwrap_err();
    assert!(matches!(err, UnpackError::TargetIsSymlink { .. }), "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(site.snapshot(), before);
    assert!(fs::read_dir(&elsewhere).unwrap().next().is_none());
}

#[test]
fn a_non_empty_target_is_refused_and_left_alone() {
    let site = Site::new();
    fs::create_dir(site.target()).unwrap();
    fs::write(site.target().join("old.txt"), b"old").unwrap();
    let bundle = site.bundle(&tar_bytes(&[te(b"a.txt", REG, 0o644, b"a")]));
    let err = unpack(&bundle, BundleType::Tar, &site.target(), &opts()).unwrap_err();
    assert!(matches!(err, UnpackError::TargetNotEmpty { .. }), "{err}");
    assert_eq!(fs::read(site.target().join("old.txt")).unwrap(), b"old");
}

#[test]
fn hard_links_outside_or_to_nothing_are_refused() {
    let site = Site::new();
    let mut passwd = te(b"pw", HARD, 0o644, b"");
    passwd.link = b"/etc/passwd";
    let tar = tar_bytes(&[te(b"a.txt", REG, 0o644, b"a"), passwd]);
    let msg = hostile(&site, &tar, BundleType::Tar, &opts(), r#""pw""#);
    assert!(msg.contains("/etc/passwd"), "{msg}");

    let mut up = te(b"up", HARD, 0o644, b"");
    up.link = b"../sentinel/keep.txt";
    hostile(
        &site,
        &tar_bytes(&[up]),
        BundleType::Tar,
        &opts(),
        r#""up""#,
    );

    let mut later = te(b"early", HARD, 0o644, b"");
    later.link = b"late.txt";
    let tar = tar_bytes(&[later, te(b"late.txt", REG, 0o644, b"x")]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""early""#);

    let mut to_dir = te(b"d2", HARD, 0o644, b"");
    to_dir.link = b"d";
    let tar = tar_bytes(&[te(b"d/", DIR, 0o755, b""), to_dir]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""d2""#);
}

#[test]
fn devices_and_fifos_are_refused() {
    let site = Site::new();
    let msg = hostile(
        &site,
        &tar_bytes(&[te(b"dev/null", CHR, 0o666, b"")]),
        BundleType::Tar,
        &opts(),
        r#""dev/null""#,
    );
    assert!(msg.contains("character device"), "{msg}");
    hostile(
        &site,
        &tar_bytes(&[te(b"pipe", FIFO, 0o644, b"")]),
        BundleType::Tar,
        &opts(),
        r#""pipe""#,
    );
    hostile(
        &site,
        &zip_bytes(&[ze(b"pipe", b"", Some(0o010644))]),
        BundleType::Zip,
        &opts(),
        r#""pipe""#,
    );
}

const TEN_GIB: u64 = 10 << 30;

fn ten_gib_tar() -> Vec<u8> {
    let mut big = te(b"huge.bin", REG, 0o644, b"");
    big.declared = Some(TEN_GIB);
    // The data is absent: a tar pre-scan or the tgz entry check refuses before reading it.
    let mut out = tar_bytes(&[te(b"small.txt", REG, 0o644, b"small")]);
    out.truncate(out.len() - 1024);
    out.extend_from_slice(&raw_header(b"huge.bin", REG, 0o644, TEN_GIB, &big));
    out
}

fn ten_gib_zip() -> Vec<u8> {
    let mut b = ZipBuilder::default();
    for name in [&b"a.bin"[..], b"b.bin", b"c.bin"] {
        let mut e = ze(name, b"", F644);
        e.deflate = false;
        e.declared = Some(0xF000_0000);
        b.add(&e);
    }
    b.finish()
}

#[test]
fn ten_gib_declared_on_a_small_disk_is_refused_before_writing() {
    let small = UnpackOptions {
        available_bytes: Some(1 << 20),
        ..opts()
    };
    let site = Site::new();
    let msg = hostile(
        &site,
        &ten_gib_tar(),
        BundleType::Tar,
        &small,
        "10737418245 bytes",
    );
    assert!(msg.contains("1048576"), "{msg}");
    let msg = hostile(
        &site,
        &gzip(&ten_gib_tar()),
        BundleType::Tgz,
        &small,
        r#""huge.bin""#,
    );
    assert!(msg.contains("free"), "{msg}");
    let msg = hostile(&site, &ten_gib_zip(), BundleType::Zip, &small, "free");
    assert!(msg.contains(&(3 * 0xF000_0000u64).to_string()), "{msg}");
}

/// A real 16 MiB tmpfs, unmounted on drop whatever happens.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn bombs_are_refused_on_a_real_16_mib_tmpfs() {
    if !require::root() {
        return;
    }
    let Some(fs16) = Tmpfs::mount() else {
        require::missing("a tmpfs mount", "mount -t tmpfs must work for root");
        return;
    };
    let base = fs16.dir.path();
    let bundle_dir = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 20 << 20];
    let honest_tgz = gzip(&tar_bytes(&[te(b"twenty.bin", REG, 0o644, &zeros)]));
    let cases: Vec<(&str, Vec<u8>, BundleType, &str)> = vec![
        ("tar", ten_gib_tar(), BundleType::Tar, "free"),
        (
            "tgz",
            gzip(&ten_gib_tar()),
            BundleType::Tgz,
            r#""huge.bin""#,
        ),
        ("zip", ten_gib_zip(), BundleType::Zip, "free"),
        ("tgz20", honest_tgz, BundleType::Tgz, r#""twenty.bin""#),
    ];
    for (name, bytes, kind, needle) in cases {
        let bundle = bundle_dir.path().join(name);
        fs::write(&bundle, bytes).unwrap();
        let target = base.join(format!("{name}-archive"));
        let err = unpack(&bundle, kind, &target, &opts()).unwrap_err();
        assert!(matches!(err, UnpackError::NoSpace { .. }), "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
        assert!(!target.exists(), "{name}: target left behind");
    }

    // Declared sizes that lie about fitting (override says plenty is free): the real disk
    // fills up mid-entry, which is reported as such and cleaned up.
    let bundle = bundle_dir.path().join("tgz20");
    let target = base.join("full-archive");
    let roomy = UnpackOptions {
        available_bytes: Some(u64::MAX),
        ..opts()
    };
    let err = unpack(&bundle, BundleType::Tgz, &target, &roomy).unwrap_err();
    assert!(matches!(err, UnpackError::DiskFull { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("The disk is (or was) full during extraction."),
        "{err}"
    );
    assert!(!target.exists());
    assert!(fs::read_dir(base).unwrap().next().is_none());
    drop(fs16);
}

#[test]
fn a_zip_entry_inflating_past_its_declared_size_is_refused() {
    let site = Site::new();
    let zeros = vec![0u8; 1 << 20];
    let mut liar = ze(b"liar.bin", &zeros, F644);
    liar.declared = Some(1000);
    let msg = hostile(
        &site,
        &zip_bytes(&[liar]),
        BundleType::Zip,
        &opts(),
        r#""liar.bin""#,
    );
    assert!(msg.contains("1000 bytes"), "{msg}");
}

#[test]
fn a_truncated_gzip_is_refused() {
    let site = Site::new();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let tgz = gzip(&tar_bytes(&[te(b"data.bin", REG, 0o644, &data)]));
    let cut = &tgz[..tgz.len() / 2];
    let msg = hostile(&site, cut, BundleType::Tgz, &opts(), r#""data.bin""#);
    assert!(
        msg.contains("corrupt") || msg.contains("truncated"),
        "{msg}"
    );
    // Cut inside the gzip trailer: data complete, CRC and length missing.
    let site = Site::new();
    let bundle = site.bundle(&tgz[..tgz.len() - 4]);
    let err = unpack(&bundle, BundleType::Tgz, &site.target(), &opts()).unwrap_err();
    assert!(!site.target().exists(), "{err}");
}

#[test]
fn a_bad_tar_checksum_is_refused() {
    let site = Site::new();
    let mut tar = tar_bytes(&[
        te(b"a.txt", REG, 0o644, b"a"),
        te(b"b.txt", REG, 0o644, b"b"),
    ]);
    tar[1024 + 1] ^= 0x20; // second header's name, checksum not updated
    let bundle = site.bundle(&tar);
    let before = site.snapshot();
    let err = unpack(&bundle, BundleType::Tar, &site.target(), &opts()).unwrap_err();
    assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(!site.target().exists());
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_bad_zip_crc_is_refused() {
    let site = Site::new();
    let mut e = ze(b"a.txt", b"hello world", F644);
    e.crc = Some(0xdead_beef);
    hostile(
        &site,
        &zip_bytes(&[e]),
        BundleType::Zip,
        &opts(),
        r#""a.txt""#,
    );
}

#[test]
fn duplicate_zip_names_are_refused() {
    let site = Site::new();
    let zip = zip_bytes(&[ze(b"a.txt", b"1", F644), ze(b"a.txt", b"2", F644)]);
    let msg = hostile(&site, &zip, BundleType::Zip, &opts(), r#""a.txt""#);
    assert!(msg.contains("same name"), "{msg}");
    let zip = zip_bytes(&[ze(b"a.txt", b"1", F644), ze(b"./a.txt", b"2", F644)]);
    hostile(&site, &zip, BundleType::Zip, &opts(), r#""./a.txt""#);
}

#[test]
fn files_and_directories_never_replace_each_other() {
    let site = Site::new();
    let tar = tar_bytes(&[te(b"d/", DIR, 0o755, b""), te(b"d", REG, 0o644, b"x")]);
    let msg = hostile(&site, &tar, BundleType::Tar, &opts(), r#""d""#);
    assert!(msg.contains("directory"), "{msg}");
    let tar = tar_bytes(&[te(b"f", REG, 0o644, b"x"), te(b"f/", DIR, 0o755, b"")]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""f/""#);
    let tar = tar_bytes(&[te(b"f", REG, 0o644, b"x"), te(b"f/g.txt", REG, 0o644, b"y")]);
    hostile(&site, &tar, BundleType::Tar, &opts(), r#""f/g.txt""#);
    let zip = zip_bytes(&[ze(b"d/x.txt", b"x", F644), ze(b"d", b"y", F644)]);
    hostile(&site, &zip, BundleType::Zip, &opts(), r#""d""#);
}

#[test]
fn names_that_are_empty_or_hold_nul_are_refused() {
    let site = Site::new();
    let zip = zip_bytes(&[ze(b"a\0b", b"x", F644)]);
    hostile(&site, &zip, BundleType::Zip, &opts(), r#""a\x00b""#);
    let zip = zip_bytes(&[ze(b"", b"x", F644)]);
    let msg = hostile(&site, &zip, BundleType::Zip, &opts(), r#""""#);
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn symlinks_are_refused_when_configured() {
    let site = Site::new();
    let mut sym = te(b"l", SYM, 0o777, b"");
    sym.link = b"a.txt";
    let strict = UnpackOptions {
        reject_symlinks: true,
        ..opts()
    };
    let tar = tar_bytes(&[te(b"a.txt", REG, 0o644, b"a"), sym]);
    let msg = hostile(&site, &tar, BundleType::Tar, &strict, r#""l""#);
    assert!(msg.contains("reject_symlinks_in_bundle"), "{msg}");
}

#[test]
fn the_entry_cap_is_enforced() {
    let site = Site::new();
    let capped = UnpackOptions {
        max_entries: 2,
        ..opts()
    };
    let entries: Vec<_> = [&b"a"[..], b"b", b"c"]
        .iter()
        .map(|n| te(n, REG, 0o644, b"x"))
        .collect();
    let bundle = site.bundle(&tar_bytes(&entries));
    let err = unpack(&bundle, BundleType::Tar, &site.target(), &capped).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 2, .. }),
        "{err}"
    );
    let bundle = site.bundle(&gzip(&tar_bytes(&entries)));
    let err = unpack(&bundle, BundleType::Tgz, &site.target(), &capped).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");
    let zip = zip_bytes(&[
        ze(b"a", b"", F644),
        ze(b"b", b"", F644),
        ze(b"c", b"", F644),
    ]);
    let bundle = site.bundle(&zip);
    let err = unpack(&bundle, BundleType::Zip, &site.target(), &capped).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");
    assert!(!site.target().exists());
}

#[test]
fn a_huge_gnu_long_name_is_not_buffered() {
    // A long-name record declaring 1 GiB: refused from its header, never read into memory.
    let site = Site::new();
    let e = te(b"x", REG, 0o644, b"");
    let mut tar = raw_header(b"././@LongLink", b'L', 0o644, 1 << 30, &e).to_vec();
    tar.extend_from_slice(&[b'a'; 4096]);
    let bundle = site.bundle(&gzip(&tar));
    let err = unpack(&bundle, BundleType::Tgz, &site.target(), &opts()).unwrap_err();
    assert!(err.to_string().contains("implausibly large"), "{err}");
    assert!(!site.target().exists());
}

// ---------------------------------------------------------------------------------------------
// Good bundles.

/// The same tree in every format: nested dirs, modes, symlinks in and out, mtimes, a
/// non-UTF-8 name.
const NON_UTF8: &[u8] = b"caf\xe9/\xff\xfe-bin";

fn check_tree(target: &Path, summary: &UnpackSummary) {
    assert_eq!(
        fs::read(target.join("app/bin/run.sh")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(mode_of(&target.join("app/bin/run.sh")), 0o755);
    assert_eq!(mode_of(&target.join("app/conf/secret.conf")), 0o600);
    assert_eq!(mode_of(&target.join("app/conf")), 0o750);
    assert_eq!(
        fs::read_link(target.join("app/current")).unwrap(),
        Path::new("bin/run.sh")
    );
    assert_eq!(
        fs::read_link(target.join("app/hostname")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        fs::metadata(target.join("app/bin/run.sh")).unwrap().mtime(),
        1_600_000_000
    );
    let odd = target.join(std::ffi::OsStr::from_bytes(NON_UTF8));
    assert_eq!(fs::read(&odd).unwrap(), b"bytes");
    let names: Vec<Vec<u8>> = fs::read_dir(target.join(std::ffi::OsStr::from_bytes(b"caf\xe9")))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(names, vec![b"\xff\xfe-bin".to_vec()]);
    assert_eq!(summary.files, 4);
    assert_eq!(summary.symlinks, 2);
    assert!(!summary.stripped_top_level);
    assert_eq!(summary.bytes, 10 + 6 + 5 + 3);
}

fn good_tar() -> Vec<u8> {
    let mut current = te(b"app/current", SYM, 0o777, b"");
    current.link = b"bin/run.sh";
    let mut host = te(b"app/hostname", SYM, 0o777, b"");
    host.link = b"/etc/hostname";
    tar_bytes(&[
        te(b"./", DIR, 0o755, b""),
        te(b"./app/", DIR, 0o755, b""),
        te(b"./app/bin/run.sh", REG, 0o755, b"#!/bin/sh\n"),
        te(b"app/conf/", DIR, 0o750, b""),
        te(b"app/conf/secret.conf", REG, 0o600, b"secret"),
        current,
        host,
        te(NON_UTF8, REG, 0o644, b"bytes"),
        te(b"app/readme", REG, 0o644, b"old"),
        te(b"app/readme", REG, 0o644, b"new"),
    ])
}

#[test]
fn a_good_tar_and_tgz_unpack_faithfully() {
    for kind in [BundleType::Tar, BundleType::Tgz] {
        let site = Site::new();
        let bytes = if kind == BundleType::Tgz {
            gzip(&good_tar())
        } else {
            good_tar()
        };
        let summary = ok(&site, &bytes, kind);
        // The overwritten readme counts twice: "last wins" like GNU tar.
        let mut expect = summary.clone();
        expect.files -= 1;
        expect.bytes -= 3;
        check_tree(&site.target(), &expect);
        assert_eq!(fs::read(site.target().join("app/readme")).unwrap(), b"new");
    }
}

#[test]
fn a_good_zip_unpacks_faithfully() {
    let site = Site::new();
    let mut run = ze(b"app/bin/run.sh", b"#!/bin/sh\n", F755);
    run.mtime = Some(1_600_000_000);
    let zip = zip_bytes(&[
        ze(b"app/", b"", D755),
        run,
        ze(b"app/conf/", b"", Some(0o040750)),
        ze(b"app/conf/secret.conf", b"secret", Some(0o100600)),
        ze(b"app/current", b"bin/run.sh", L777),
        ze(b"app/hostname", b"/etc/hostname", L777),
        ze(NON_UTF8, b"bytes", F644),
        ze(b"app/readme", b"new", None),
    ]);
    let summary = ok(&site, &zip, BundleType::Zip);
    check_tree(&site.target(), &summary);
    // No Unix mode recorded: the default.
    assert_eq!(mode_of(&site.target().join("app/readme")), 0o644);
}

#[test]
fn good_hard_links_share_the_file() {
    let site = Site::new();
    let mut link = te(b"b/same.txt", HARD, 0o644, b"");
    link.link = b"a/orig.txt";
    ok(
        &site,
        &tar_bytes(&[te(b"a/orig.txt", REG, 0o644, b"data"), link]),
        BundleType::Tar,
    );
    let a = fs::metadata(site.target().join("a/orig.txt")).unwrap();
    let b = fs::metadata(site.target().join("b/same.txt")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn long_names_round_trip() {
    let site = Site::new();
    let long: Vec<u8> = [&b"d/"[..], &[b'n'; 150], b".txt"].concat();
    ok(
        &site,
        &tar_bytes(&[te(&long, REG, 0o644, b"long")]),
        BundleType::Tar,
    );
    let p = site.target().join(std::ffi::OsStr::from_bytes(&long));
    assert_eq!(fs::read(p).unwrap(), b"long");
}

#[test]
fn setuid_bits_are_cleared_unless_allowed() {
    let tar = tar_bytes(&[
        te(b"suid", REG, 0o4755, b"x"),
        te(b"sticky/", DIR, 0o1777, b""),
    ]);
    let site = Site::new();
    ok(&site, &tar, BundleType::Tar);
    assert_eq!(mode_of(&site.target().join("suid")), 0o755);
    assert_eq!(mode_of(&site.target().join("sticky")), 0o755); // group/other write clamped (issue 12 item 7)

    let site = Site::new();
    let bundle = site.bundle(&tar);
    let allow = UnpackOptions {
        allow_setuid: true,
        ..opts()
    };
    unpack(&bundle, BundleType::Tar, &site.target(), &allow).unwrap();
    assert_eq!(mode_of(&site.target().join("suid")), 0o4755);
    assert_eq!(mode_of(&site.target().join("sticky")), 0o1755);

    let site = Site::new();
    let zip = zip_bytes(&[ze(b"suid", b"x", Some(0o104755))]);
    ok(&site, &zip, BundleType::Zip);
    assert_eq!(mode_of(&site.target().join("suid")), 0o755);
}

#[test]
fn tar_owners_are_not_applied_in_the_agents_own_tree() {
    // Issue 12 item 7: an entry owned by a host user would let that user rewrite a hook
    // script a root agent runs; every entry keeps the unpacking user (docs/compatibility.md).
    if !require::root() {
        return;
    }
    let mut by_id = te(b"by-id", REG, 0o644, b"x");
    by_id.uid = 12345;
    by_id.gid = 23456;
    by_id.uname = b"no-such-user-here";
    by_id.gname = b"no-such-group-here";
    let mut by_name = te(b"by-name", REG, 0o644, b"x");
    by_name.uid = 999_999;
    by_name.gid = 999_999;
    by_name.uname = b"root";
    by_name.gname = b"root";
    let mut dir = te(b"dir/", DIR, 0o755, b"");
    dir.uid = 4242;
    dir.gid = 4343;
    let mut sym = te(b"sym", SYM, 0o777, b"");
    sym.link = b"by-id";
    sym.uid = 777;
    sym.gid = 778;
    let site = Site::new();
    ok(
        &site,
        &tar_bytes(&[by_id, by_name, dir, sym]),
        BundleType::Tar,
    );
    let t = site.target();
    let own = |p: &str| {
        let m = fs::symlink_metadata(t.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(own("by-id"), (0, 0));
    assert_eq!(own("by-name"), (0, 0));
    assert_eq!(own("dir"), (0, 0));
    assert_eq!(own("sym"), (0, 0));

    // Zip entries keep root.
    let site = Site::new();
    ok(&site, &zip_bytes(&[ze(b"z", b"x", F644)]), BundleType::Zip);
    assert_eq!(fs::metadata(site.target().join("z")).unwrap().uid(), 0);
}

#[test]
fn an_existing_empty_target_is_used() {
    let site = Site::new();
    fs::create_dir(site.target()).unwrap();
    let summary = ok(
        &site,
        &tar_bytes(&[te(b"a", REG, 0o644, b"a")]),
        BundleType::Tar,
    );
    assert_eq!(summary.files, 1);
}

// ---------------------------------------------------------------------------------------------
// Strip rule (agent-behaviour.md §6.5, §10.2 item 26).

#[test]
fn a_single_top_directory_with_an_appspec_is_stripped() {
    let site = Site::new();
    let zip = zip_bytes(&[
        ze(b"myapp/", b"", D755),
        ze(b"myapp/appspec.yml", b"version: 0.0\n", F644),
        ze(b"myapp/scripts/start.sh", b"#!/bin/sh\n", F755),
    ]);
    let summary = ok(&site, &zip, BundleType::Zip);
    assert!(summary.stripped_top_level);
    let t = site.target();
    assert_eq!(fs::read(t.join("appspec.yml")).unwrap(), b"version: 0.0\n");
    assert_eq!(mode_of(&t.join("scripts/start.sh")), 0o755);
    assert!(!t.join("myapp").exists());
    assert!(!site.root.join("deployment-archive-temp").exists());

    // GitHub-style tarball (`git archive` puts a pax global header first), `AppSpec.YML`
    // spelled differently: /appspec/i still matches.
    let site = Site::new();
    let global = pax_record("comment", b"0123456789abcdef0123456789abcdef01234567");
    let tar = tar_bytes(&[
        te(b"pax_global_header", b'g', 0o666, &global),
        te(b"owner-repo-abc123/", DIR, 0o775, b""),
        te(b"owner-repo-abc123/AppSpec.YML", REG, 0o644, b"v"),
        te(b"owner-repo-abc123/src/main.c", REG, 0o644, b"c"),
    ]);
    assert!(ok(&site, &gzip(&tar), BundleType::Tgz).stripped_top_level);
    assert!(site.target().join("src/main.c").exists());
}

#[test]
fn a_top_directory_next_to_a_readme_is_not_stripped() {
    let site = Site::new();
    let zip = zip_bytes(&[
        ze(b"myapp/", b"", D755),
        ze(b"myapp/appspec.yml", b"version: 0.0\n", F644),
        ze(b"README", b"read me", F644),
    ]);
    let summary = ok(&site, &zip, BundleType::Zip);
    assert!(!summary.stripped_top_level);
    assert!(site.target().join("myapp/appspec.yml").exists());
    assert!(!site.target().join("appspec.yml").exists());
}

#[test]
fn a_single_top_directory_without_an_appspec_is_not_stripped() {
    let site = Site::new();
    let tar = tar_bytes(&[
        te(b"only/", DIR, 0o755, b""),
        te(b"only/x", REG, 0o644, b"x"),
    ]);
    let summary = ok(&site, &tar, BundleType::Tar);
    assert!(!summary.stripped_top_level);
    assert!(site.target().join("only/x").exists());
}

#[test]
fn a_single_top_symlink_is_not_stripped() {
    let site = Site::new();
    let mut sym = te(b"top", SYM, 0o777, b"");
    sym.link = b"/etc";
    let summary = ok(&site, &tar_bytes(&[sym]), BundleType::Tar);
    assert!(!summary.stripped_top_level);
    assert!(
        fs::symlink_metadata(site.target().join("top"))
            .unwrap()
            .is_symlink()
    );
}

// ---------------------------------------------------------------------------------------------
// Detection and size.

#[test]
fn detect_reads_content_not_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    };
    let tar = tar_bytes(&[te(b"a", REG, 0o644, b"a")]);
    let mut v7 = tar.clone();
    v7[257..265].fill(0);
    let mut hdr: [u8; 512] = v7[..512].try_into().unwrap();
    set_checksum(&mut hdr);
    v7[..512].copy_from_slice(&hdr);
    let cases = [
        ("bundle.zip", tar.clone(), Some(BundleType::Tar)),
        ("bundle.tar", gzip(&tar), Some(BundleType::Tgz)),
        (
            "bundle.tgz",
            zip_bytes(&[ze(b"a", b"a", F644)]),
            Some(BundleType::Zip),
        ),
        (
            "empty.tar",
            ZipBuilder::default().finish(),
            Some(BundleType::Zip),
        ),
        ("v7", v7, Some(BundleType::Tar)),
        ("text.zip", b"hello, not an archive".to_vec(), None),
        ("zeros", vec![0u8; 1024], None),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(detect(&write(name, &bytes)).unwrap(), want, "{name}");
    }
    assert!(detect(&dir.path().join("missing")).is_err());
}

const FIFTY_MIB: usize = 50 << 20;

#[test]
fn fifty_mib_of_zeros_streams_through_tgz_and_zip() {
    let chunk = vec![0u8; 1 << 20];

    // tgz: header, 50 MiB of zeros, end blocks, compressed on the fly.
    let site = Site::new();
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&raw_header(
        b"zeros.bin",
        REG,
        0o644,
        FIFTY_MIB as u64,
        &te(b"zeros.bin", REG, 0o644, b""),
    ))
    .unwrap();
    for _ in 0..50 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let summary = ok(&site, &gz.finish().unwrap(), BundleType::Tgz);
    assert_eq!(summary.bytes, FIFTY_MIB as u64);
    assert_eq!(
        fs::metadata(site.target().join("zeros.bin")).unwrap().len(),
        FIFTY_MIB as u64
    );

    // zip: one deflated entry, CRC computed chunk by chunk.
    let site = Site::new();
    let mut crc = flate2::Crc::new();
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::fast());
    for _ in 0..50 {
        crc.update(&chunk);
        enc.write_all(&chunk).unwrap();
    }
    let body = enc.finish().unwrap();
    let mut b = ZipBuilder::default();
    b.add_raw(
        &ze(b"zeros.bin", b"", F644),
        &body,
        crc.sum(),
        FIFTY_MIB as u64,
    );
    let summary = ok(&site, &b.finish(), BundleType::Zip);
    assert_eq!(summary.bytes, FIFTY_MIB as u64);
}

#[test]
fn a_gzipped_bundle_declared_as_tar_unpacks_like_gnu_tar() {
    let site = Site::new();
    let tgz = gzip(&tar_bytes(&[te(b"a.txt", REG, 0o644, b"a")]));
    let summary = ok(&site, &tgz, BundleType::Tar);
    assert_eq!(summary.files, 1);
    assert_eq!(fs::read(site.target().join("a.txt")).unwrap(), b"a");
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len += 1;
    }
    [
        len.to_string().as_bytes(),
        b" ",
        key.as_bytes(),
        b"=",
        value,
        b"\n",
    ]
    .concat()
}

#[test]
fn pax_headers_set_path_mtime_and_are_checked() {
    let site = Site::new();
    let name: Vec<u8> = [&b"pax/"[..], &[b'p'; 120], b"\xff.txt"].concat();
    let pax = [
        pax_record("path", &name),
        pax_record("mtime", b"1234567890.5"),
    ]
    .concat();
    let tar = tar_bytes(&[
        te(b"PaxHeaders/x", b'x', 0o644, &pax),
        te(b"short-name", REG, 0o644, b"pax"),
    ]);
    ok(&site, &tar, BundleType::Tar);
    let p = site.target().join(std::ffi::OsStr::from_bytes(&name));
    assert_eq!(fs::read(&p).unwrap(), b"pax");
    assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_234_567_890);
    assert!(!site.target().join("short-name").exists());

    // A pax path is checked like any other name.
    let site = Site::new();
    let pax = pax_record("path", b"../sentinel/pax-evil");
    let tar = tar_bytes(&[
        te(b"PaxHeaders/x", b'x', 0o644, &pax),
        te(b"innocent", REG, 0o644, b"evil"),
    ]);
    hostile(
        &site,
        &tar,
        BundleType::Tar,
        &opts(),
        r#""../sentinel/pax-evil""#,
    );
}

// ---------------------------------------------------------------------------------------------
// Interoperability with the tools people build bundles with (skipped where absent, except
// under CI=true: see tests/support/require.rs).

/// A tree with everything a real bundle has: nested dirs, modes, a symlink, a long name, a
/// non-UTF-8 name, an empty directory.
fn real_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let long = "l".repeat(120);
    fs::create_dir_all(dir.join("app/bin")).unwrap();
    fs::create_dir_all(dir.join("app/empty")).unwrap();
    fs::create_dir_all(dir.join(format!("app/{long}"))).unwrap();
    fs::write(dir.join("appspec.yml"), b"version: 0.0\nos: linux\n").unwrap();
    fs::write(dir.join("app/bin/start.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::write(dir.join(format!("app/{long}/{long}.txt")), b"long").unwrap();
    fs::write(
        dir.join(std::ffi::OsStr::from_bytes(b"app/caf\xe9.txt")),
        b"latin1",
    )
    .unwrap();
    symlink("bin/start.sh", dir.join("app/start")).unwrap();
    let set = |p: &str, m: u32| {
        fs::set_permissions(dir.join(p), fs::Permissions::from_mode(m)).unwrap();
    };
    set("app/bin/start.sh", 0o755);
    set("appspec.yml", 0o640);
    set("app/empty", 0o750);
    for p in ["appspec.yml", "app/bin/start.sh"] {
        let f = fs::File::options().write(true).open(dir.join(p)).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000))
            .unwrap();
    }
}

fn listing(root: &Path) -> BTreeMap<Vec<u8>, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let md = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let desc = if md.is_symlink() {
                format!("link {:?}", fs::read_link(&path).unwrap())
            } else if md.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", md.mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {} {:?}",
                    md.mode() & 0o7777,
                    md.mtime(),
                    fs::read(&path).unwrap()
                )
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn tool(cmd: &mut Command) -> bool {
    match cmd.status() {
        Ok(s) if s.success() => true,
        Ok(s) => panic!("{cmd:?} failed: {s}"),
        Err(_) => false,
    }
}

#[test]
fn bundles_made_by_gnu_tar_and_info_zip_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    real_tree(&src);
    let want = listing(&src);
    assert_eq!(want.len(), 9, "{want:#?}");
    let cases: Vec<(&str, BundleType, Vec<&str>)> = vec![
        ("gnu.tar", BundleType::Tar, vec!["tar", "-cf", "{out}", "."]),
        (
            "pax.tgz",
            BundleType::Tgz,
            vec!["tar", "--format=pax", "-czf", "{out}", "."],
        ),
        (
            "info.zip",
            BundleType::Zip,
            vec!["zip", "-q", "-r", "-y", "{out}", "."],
        ),
    ];
    for (name, kind, argv) in cases {
        let out = work.path().join(name);
        let args: Vec<String> = argv[1..]
            .iter()
            .map(|a| a.replace("{out}", out.to_str().unwrap()))
            .collect();
        if !tool(Command::new(argv[0]).args(&args).current_dir(&src)) {
            require::missing(
                &format!("the {} command for {name}", argv[0]),
                "apt-get install -y tar zip",
            );
            continue;
        }
        assert_eq!(detect(&out).unwrap(), Some(kind), "{name}");
        let target = work.path().join(format!("{name}-archive"));
        let summary = unpack(&out, kind, &target, &opts()).unwrap();
        assert!(!summary.stripped_top_level, "{name}");
        assert_eq!(listing(&target), want, "{name}");
    }
}
