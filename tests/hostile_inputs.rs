//! The hostile-input suite (issue 8, item 2): every input is built at test time, every case
//! has one asserted outcome. The table with the outcomes is in `docs/reliability.md`.
//!
//! Cases already covered elsewhere are referenced, not repeated: a hook ignoring TERM
//! (`tests/hooks.rs` `a_script_ignoring_term_is_killed_after_the_grace`), zip/tar slip,
//! absolute paths, devices, hard links (`tests/archive_hostile.rs`).
//!
//! The last test replays every committed fuzz regression and corpus input (`fuzz/regressions`,
//! `fuzz/corpus`) through the fuzz targets' entry points on stable, so a crash the fuzzers
//! found stays fixed on machines without a nightly toolchain.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codedeploy_agent::appspec::{self, Os};
use codedeploy_agent::revision::archive::{BundleType, UnpackError, UnpackOptions, unpack};
use flate2::{Compress, Compression, Crc, FlushCompress};
use support::Sandbox;

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Builders: raw deflate of long zero runs without spending the CPU (one compressed MiB of zeros
// repeated: each copy only refers back into zeros), tar headers, a minimal zip writer.

/// A raw deflate stream (`Vec`), its CRC-32 and length for `prefix` followed by `mib` MiB of
/// zeros. Cost: compressing 1 MiB, whatever `mib` is.
fn deflate_prefix_then_zeros(prefix: &[u8], mib: u64) -> (Vec<u8>, u32, u64) {
    fn sync_chunk(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(data.len() / 100 + 1024);
        c.compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("deflate");
        while c.total_in() < data.len() as u64 {
            out.reserve(64 * 1024);
            let done = usize::try_from(c.total_in()).expect("fits");
            c.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
                .expect("deflate");
        }
        out
    }
    let zeros = vec![0u8; MIB as usize];
    let head = sync_chunk(prefix);
    let chunk = sync_chunk(&zeros);
    let mut tail = Vec::with_capacity(64);
    Compress::new(Compression::fast(), false)
        .compress_vec(&[], &mut tail, FlushCompress::Finish)
        .expect("final block");
    let mut crc = Crc::new();
    crc.update(prefix);
    let mut zcrc = Crc::new();
    zcrc.update(&zeros);
    let mut out = head;
    for _ in 0..mib {
        out.extend_from_slice(&chunk);
        crc.combine(&zcrc);
    }
    out.extend_from_slice(&tail);
    (out, crc.sum(), prefix.len() as u64 + mib * MIB)
}

fn gzip_wrap(deflate: &[u8], crc: u32, len: u64) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend_from_slice(deflate);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&((len & 0xffff_ffff) as u32).to_le_bytes());
    out
}

const REG: u8 = b'0';
const DIR: u8 = b'5';
const SYM: u8 = b'2';

fn octal(field: &mut [u8], v: u64) {
    let w = field.len() - 1;
    let s = format!("{v:0w$o}");
    field[..w].copy_from_slice(s.as_bytes());
}

/// A ustar header; `name` may be up to 100 bytes, or longer split into prefix/name.
fn tar_header(name: &[u8], ty: u8, mode: u32, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(
        name.len() <= 100,
        "longer names go through tar()'s GNU long-name record"
    );
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_600_000_000);
    h[156] = ty;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// (name, type, mode, data, link target).
type TarEntry<'a> = (&'a [u8], u8, u32, &'a [u8], &'a [u8]);

/// A tar of entries with the end-of-archive blocks.
fn tar(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, ty, mode, data, link) in entries {
        let name: &[u8] = if name.len() > 100 {
            let mut long = name.to_vec();
            long.push(0);
            out.extend_from_slice(&tar_header(
                b"././@LongLink",
                b'L',
                0o644,
                long.len() as u64,
                b"",
            ));
            out.extend_from_slice(&long);
            out.resize(out.len().next_multiple_of(512), 0);
            &name[..100]
        } else {
            name
        };
        out.extend_from_slice(&tar_header(name, *ty, *mode, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// A minimal zip writer: stored or pre-deflated bodies, Unix modes, honest or lying sizes.
#[derive(Default)]
struct Zip {
    out: Vec<u8>,
    central: Vec<u8>,
    count: u32,
}

struct ZipItem<'a> {
    name: &'a [u8],
    body: &'a [u8],
    deflated: bool,
    crc: u32,
    size: u32,
    mode: u32,
}

impl Zip {
    fn stored(&mut self, name: &[u8], data: &[u8], mode: u32) {
        let mut crc = Crc::new();
        crc.update(data);
        self.add(&ZipItem {
            name,
            body: data,
            deflated: false,
            crc: crc.sum(),
            size: u32::try_from(data.len()).expect("small"),
            mode,
        });
    }

    fn add(&mut self, it: &ZipItem<'_>) {
        let offset = u32::try_from(self.out.len()).expect("under 4 GiB");
        let method: u16 = if it.deflated { 8 } else { 0 };
        let csize = u32::try_from(it.body.len()).expect("under 4 GiB");
        let name_len = u16::try_from(it.name.len()).expect("short name");
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // time
            v.extend_from_slice(&0x5021u16.to_le_bytes()); // date 2020-01-01
            v.extend_from_slice(&it.crc.to_le_bytes());
            v.extend_from_slice(&csize.to_le_bytes());
            v.extend_from_slice(&it.size.to_le_bytes());
            v.extend_from_slice(&name_len.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        self.out.extend_from_slice(b"PK\x03\x04");
        common(&mut self.out);
        self.out.extend_from_slice(it.name);
        self.out.extend_from_slice(it.body);
        self.central.extend_from_slice(b"PK\x01\x02");
        self.central.extend_from_slice(&0x031eu16.to_le_bytes()); // made by Unix
        common(&mut self.central);
        self.central.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
        self.central
            .extend_from_slice(&(it.mode << 16).to_le_bytes());
        self.central.extend_from_slice(&offset.to_le_bytes());
        self.central.extend_from_slice(it.name);
        self.count += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        let cd_offset = u32::try_from(self.out.len()).expect("under 4 GiB");
        let cd_len = u32::try_from(self.central.len()).expect("under 4 GiB");
        self.out.extend_from_slice(&self.central);
        let count = u16::try_from(self.count).unwrap_or(u16::MAX);
        if self.count > u32::from(u16::MAX) {
            // Zip64 end of central directory record and locator.
            let z64 = self.out.len() as u64;
            self.out.extend_from_slice(b"PK\x06\x06");
            self.out.extend_from_slice(&44u64.to_le_bytes());
            self.out.extend_from_slice(&45u16.to_le_bytes());
            self.out.extend_from_slice(&45u16.to_le_bytes());
            self.out.extend_from_slice(&[0; 8]);
            self.out
                .extend_from_slice(&u64::from(self.count).to_le_bytes());
            self.out
                .extend_from_slice(&u64::from(self.count).to_le_bytes());
            self.out.extend_from_slice(&u64::from(cd_len).to_le_bytes());
            self.out
                .extend_from_slice(&u64::from(cd_offset).to_le_bytes());
            self.out.extend_from_slice(b"PK\x06\x07");
            self.out.extend_from_slice(&0u32.to_le_bytes());
            self.out.extend_from_slice(&z64.to_le_bytes());
            self.out.extend_from_slice(&1u32.to_le_bytes());
        }
        self.out.extend_from_slice(b"PK\x05\x06");
        self.out.extend_from_slice(&[0; 4]);
        self.out.extend_from_slice(&count.to_le_bytes());
        self.out.extend_from_slice(&count.to_le_bytes());
        self.out.extend_from_slice(&cd_len.to_le_bytes());
        self.out.extend_from_slice(&cd_offset.to_le_bytes());
        self.out.extend_from_slice(&0u16.to_le_bytes());
        self.out
    }
}

const FILE_644: u32 = 0o100644;

// ---------------------------------------------------------------------------------------------
// Harness: `site/` holds the target and a sentinel; `outside/` is where escapes would land.

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let s = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        fs::create_dir_all(s.site().join("sentinel")).expect("mkdir sentinel");
        fs::create_dir_all(s.outside()).expect("mkdir outside");
        s
    }
    fn site(&self) -> PathBuf {
        self.dir.path().join("site")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn target(&self) -> PathBuf {
        self.site().join("deployment-archive")
    }
    fn bundle(&self, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("bundle");
        fs::write(&p, bytes).expect("write bundle");
        p
    }
    fn unpack(&self, bytes: &[u8], kind: BundleType, o: &UnpackOptions) -> Result<(), UnpackError> {
        let r = unpack(&self.bundle(bytes), kind, &self.target(), o).map(|_| ());
        self.assert_contained(r.is_ok());
        r
    }
    /// Nothing next to the target, nothing outside; the target only when the unpack succeeded.
    fn assert_contained(&self, ok: bool) {
        let mut names: Vec<String> = fs::read_dir(self.site())
            .expect("read site")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want: &[&str] = if ok {
            &["deployment-archive", "sentinel"]
        } else {
            &["sentinel"]
        };
        assert_eq!(names, want);
        assert_eq!(
            fs::read_dir(self.site().join("sentinel"))
                .expect("read")
                .count(),
            0
        );
        assert_eq!(
            fs::read_dir(self.outside()).expect("read").count(),
            0,
            "escaped"
        );
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions::default()
}

fn rejected(r: Result<(), UnpackError>) -> String {
    match r {
        Err(e @ UnpackError::Rejected { .. }) => e.to_string(),
        other => panic!("expected a rejected entry, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Archive bombs.

#[test]
fn zip_ratio_bomb_is_refused_before_writing() {
    // 512 MiB of zeros in ~0.5 MiB, declared honestly; 16 MiB "free".
    let (body, crc, len) = deflate_prefix_then_zeros(b"", 512);
    assert!(
        body.len() < (MIB as usize),
        "a real bomb: {} bytes",
        body.len()
    );
    let mut z = Zip::default();
    z.add(&ZipItem {
        name: b"bomb.bin",
        body: &body,
        deflated: true,
        crc,
        size: u32::try_from(len).expect("fits"),
        mode: FILE_644,
    });
    let small = UnpackOptions {
        available_bytes: Some(16 * MIB),
        ..opts()
    };
    let site = Site::new();
    let start = Instant::now();
    let err = site
        .unpack(&z.finish(), BundleType::Zip, &small)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::NoSpace { needed, .. } if needed >= 512 * MIB),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refused from the directory, not by inflating"
    );
}

#[test]
fn zip_bomb_lying_about_its_size_stops_at_the_declared_size() {
    // Declares 1 KiB, inflates to 512 MiB: refused once it passes 1 KiB, target removed.
    let (body, crc, _) = deflate_prefix_then_zeros(b"", 512);
    let mut z = Zip::default();
    z.add(&ZipItem {
        name: b"liar.bin",
        body: &body,
        deflated: true,
        crc,
        size: 1024,
        mode: FILE_644,
    });
    let site = Site::new();
    let start = Instant::now();
    let msg = rejected(site.unpack(&z.finish(), BundleType::Zip, &opts()));
    assert!(msg.contains("more data than the 1024 bytes"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn gzip_ratio_bomb_is_refused_before_filling_the_disk() {
    // A tgz of one 1 GiB entry of zeros (about 1 MiB compressed); 16 MiB "free".
    let header = tar_header(b"zeros.bin", REG, 0o644, 1 << 30, b"");
    let (body, crc, len) = deflate_prefix_then_zeros(&header, 1024 + 1);
    let tgz = gzip_wrap(&body, crc, len);
    assert!(tgz.len() < 2 * MIB as usize);
    let small = UnpackOptions {
        available_bytes: Some(16 * MIB),
        ..opts()
    };
    let site = Site::new();
    let start = Instant::now();
    let err = site.unpack(&tgz, BundleType::Tgz, &small).unwrap_err();
    assert!(
        matches!(&err, UnpackError::NoSpace { needed, entry: Some(_), .. } if *needed >= 1 << 30),
        "{err}"
    );
    assert!(err.to_string().contains("zeros.bin"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "refused from the header"
    );
}

#[test]
fn many_entries_bombs_are_refused_by_the_entry_cap() {
    let capped = UnpackOptions {
        max_entries: 1000,
        ..opts()
    };
    // Zip: 300,000 empty entries (zip64 count), refused from the central directory.
    let mut z = Zip::default();
    for i in 0..300_000u32 {
        z.stored(format!("e{i:06}").as_bytes(), b"", FILE_644);
    }
    let site = Site::new();
    let start = Instant::now();
    let err = site
        .unpack(&z.finish(), BundleType::Zip, &capped)
        .unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 1000, .. }),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );

    // Tar: 100,000 empty entries (50 MB of headers), refused at entry 1001 while streaming.
    let mut t = Vec::with_capacity(100_000 * 512 + 1024);
    for i in 0..100_000u32 {
        t.extend_from_slice(&tar_header(
            format!("e{i:06}").as_bytes(),
            REG,
            0o644,
            0,
            b"",
        ));
    }
    t.extend_from_slice(&[0; 1024]);
    let start = Instant::now();
    let err = site.unpack(&t, BundleType::Tar, &capped).unwrap_err();
    assert!(
        matches!(err, UnpackError::TooManyEntries { limit: 1000, .. }),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn paths_deeper_than_the_limit_are_refused() {
    // 300 levels (600 bytes, under PATH_MAX) against a depth limit of 256.
    let deep = format!("{}f", "d/".repeat(300));
    let site = Site::new();
    let msg = rejected(site.unpack(
        &tar(&[(deep.as_bytes(), REG, 0o644, b"x", b"")]),
        BundleType::Tar,
        &opts(),
    ));
    assert!(msg.contains("directories deep"), "{msg}");
    let mut z = Zip::default();
    z.stored(deep.as_bytes(), b"x", FILE_644);
    let msg = rejected(site.unpack(&z.finish(), BundleType::Zip, &opts()));
    assert!(msg.contains("directories deep"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Symlink and name tricks.

#[test]
fn a_file_through_a_symlink_planted_earlier_in_the_bundle_is_refused() {
    let site = Site::new();
    let out = site.outside();
    let out = out.as_os_str().as_encoded_bytes();
    let bundle = tar(&[
        (b"link", SYM, 0o777, b"", out),
        (b"link/pwned", REG, 0o644, b"x", b""),
    ]);
    let msg = rejected(site.unpack(&bundle, BundleType::Tar, &opts()));
    assert!(msg.contains("through the symlink \"link\""), "{msg}");
    // Relative form, and through a directory entry instead of a file.
    let bundle = tar(&[
        (b"a/", DIR, 0o755, b"", b""),
        (b"a/up", SYM, 0o777, b"", b"../../../outside"),
        (b"a/up/sub/", DIR, 0o755, b"", b""),
        (b"a/up/sub/pwned", REG, 0o644, b"x", b""),
    ]);
    let msg = rejected(site.unpack(&bundle, BundleType::Tar, &opts()));
    assert!(msg.contains("through the symlink \"a/up\""), "{msg}");
}

#[test]
fn a_symlink_replacing_a_directory_created_during_extraction_is_refused() {
    // `dir/` is made (explicitly, then implied by a file), then the bundle tries to swap it for
    // a symlink to the outside and write through it.
    let site = Site::new();
    let out = site.outside();
    let out = out.as_os_str().as_encoded_bytes();
    let bundle = tar(&[
        (b"dir/first", REG, 0o644, b"1", b""),
        (b"dir", SYM, 0o777, b"", out),
        (b"dir/second", REG, 0o644, b"2", b""),
    ]);
    let msg = rejected(site.unpack(&bundle, BundleType::Tar, &opts()));
    assert!(msg.contains("\"dir\""), "{msg}");
}

#[test]
fn case_folding_names_are_different_names_on_linux() {
    let site = Site::new();
    let bundle = tar(&[
        (b"A/x", REG, 0o644, b"upper", b""),
        (b"a/x", REG, 0o644, b"lower", b""),
        (b"README", REG, 0o644, b"1", b""),
        (b"readme", REG, 0o644, b"2", b""),
    ]);
    site.unpack(&bundle, BundleType::Tar, &opts())
        .expect("unpacks");
    let t = site.target();
    assert_eq!(fs::read(t.join("A/x")).expect("A/x"), b"upper");
    assert_eq!(fs::read(t.join("a/x")).expect("a/x"), b"lower");
    assert_eq!(fs::read(t.join("README")).expect("README"), b"1");
    assert_eq!(fs::read(t.join("readme")).expect("readme"), b"2");
    assert_eq!(fs::read_dir(&t).expect("read").count(), 4);
}

#[test]
fn setuid_and_setgid_bits_are_cleared_unless_allowed() {
    let bundle = tar(&[
        (b"suid", REG, 0o4755, b"x", b""),
        (b"sgid", REG, 0o2755, b"x", b""),
        (b"both", REG, 0o6777, b"x", b""),
        (b"gdir/", DIR, 0o2775, b"", b""),
    ]);
    let mut z = Zip::default();
    z.stored(b"suid", b"x", 0o104755);
    z.stored(b"sgid", b"x", 0o102755);
    z.stored(b"both", b"x", 0o106777);
    let zip = z.finish();
    let mode =
        |site: &Site, n: &str| fs::metadata(site.target().join(n)).expect("meta").mode() & 0o7777;
    for (bytes, kind) in [(&bundle, BundleType::Tar), (&zip, BundleType::Zip)] {
        let site = Site::new();
        site.unpack(bytes, kind, &opts()).expect("unpacks");
        assert_eq!(mode(&site, "suid"), 0o755, "{kind}");
        assert_eq!(mode(&site, "sgid"), 0o755, "{kind}");
        // Group/other write is clamped too (issue 12 item 7).
        assert_eq!(mode(&site, "both"), 0o755, "{kind}");
        if kind == BundleType::Tar {
            assert_eq!(mode(&site, "gdir"), 0o755);
        }
        let site = Site::new();
        let allow = UnpackOptions {
            allow_setuid: true,
            ..opts()
        };
        site.unpack(bytes, kind, &allow).expect("unpacks");
        assert_eq!(mode(&site, "suid"), 0o4755, "{kind}");
        assert_eq!(mode(&site, "sgid"), 0o2755, "{kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// Appspecs.

fn appspec_errors(text: &str) -> Vec<String> {
    match appspec::parse(text, Os::Linux) {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics.iter().map(|d| d.message.clone()).collect(),
    }
}

#[test]
fn a_10_mb_appspec_of_many_values_is_refused_quickly() {
    let mut text = String::from("version: 0.0\nos: linux\nfiles:\n");
    while text.len() < 10 << 20 {
        text.push_str("  - source: a\n    destination: /b\n");
    }
    let start = Instant::now();
    let errors = appspec_errors(&text);
    assert!(errors.iter().any(|m| m.contains("too large")), "{errors:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_10_mb_appspec_of_one_long_value_parses_in_linear_time() {
    // One 10 MB comment and one 10 MB scalar: a few values, accepted like the AWS agent does.
    let big = "x".repeat(10 << 20);
    let text = format!(
        "# {big}\nversion: 0.0\nos: linux\nfiles:\n  - source: a\n    destination: /{big}\n"
    );
    let start = Instant::now();
    let parsed = appspec::parse(&text, Os::Linux).expect("valid");
    assert_eq!(parsed.spec.files.len(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn deeply_nested_yaml_is_refused() {
    for text in [
        // Flow: the scanner's own limit.
        format!(
            "version: 0.0\nos: linux\nfiles: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "version: 0.0\nos: linux\nfiles: {}{}\n",
            "{a: ".repeat(10_000),
            "}".repeat(10_000)
        ),
        // Block: indentation 1000 levels deep.
        {
            let mut t = String::from("version: 0.0\nos: linux\nhooks:\n");
            for depth in 1..1000 {
                t.push_str(&" ".repeat(depth));
                t.push_str("k:\n");
            }
            t
        },
    ] {
        let start = Instant::now();
        let errors = appspec_errors(&text);
        assert!(
            errors
                .iter()
                .any(|m| m.contains("nested too deeply") || m.contains("recursion limit")),
            "{errors:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn billion_laughs_aliases_are_refused_without_expansion() {
    let mut text = String::from(
        "version: 0.0\nos: linux\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..=9 {
        let p = i - 1;
        text.push_str(&format!(
            "x{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("files:\n  - source: *a9\n    destination: /x\n");
    let start = Instant::now();
    let errors = appspec_errors(&text);
    assert!(
        errors.iter().any(|m| m.contains("aliases are not allowed")),
        "{errors:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn timeouts_of_2_pow_63_and_beyond_are_accepted_and_saturated() {
    for (text, want) in [
        ("9223372036854775808", 1u64 << 63),
        ("18446744073709551615", u64::MAX),
        ("1180591620717411303424", u64::MAX), // 2^70
        ("99999999999999999999999999999999999999999", u64::MAX),
    ] {
        let spec = format!(
            "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: s.sh\n      timeout: {text}\n"
        );
        let parsed = appspec::parse(&spec, Os::Linux).unwrap_or_else(|e| panic!("{text}: {e}"));
        let scripts = &parsed.spec.hooks[0].1;
        assert_eq!(scripts[0].timeout, want, "{text}");
    }
    // Running such a hook: tests/hooks.rs `a_huge_timeout_does_not_overflow` (u64::MAX).
}

// ---------------------------------------------------------------------------------------------
// Through the real binary (`codedeploy-agent local`).

fn spec(s: &Sandbox, body: &str) -> String {
    format!(
        "version: 0.0\nos: linux\n{}",
        body.replace("{dest}", s.dest().to_str().expect("utf8"))
    )
}

#[test]
fn hook_locations_outside_the_archive_are_refused_by_the_hook_runner() {
    let s = Sandbox::new();
    let marker = s.path().join("ran");
    let evil = s.path().join("evil.sh");
    fs::write(&evil, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).expect("write");
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o755)).expect("chmod");
    // `..` out of the archive, and a symlink in the bundle pointing at the same script.
    for location in ["../../../../evil.sh", "scripts/link.sh"] {
        let text = spec(
            &s,
            &format!("hooks:\n  ApplicationStart:\n    - location: {location}\n"),
        );
        let b = s.bundle(
            "b",
            &[("appspec.yml", &text), ("scripts/ok.sh", "#!/bin/sh\n")],
        );
        symlink(&evil, b.join("scripts/link.sh")).expect("symlink");
        let run = s.deploy(&b, "dg", &[]);
        assert_eq!(run.code, 1, "{location}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("outside the deployment archive"),
            "{location}: {}",
            run.stdout
        );
        assert!(!marker.exists(), "{location}: the outside script ran");
    }
}

#[test]
fn permissions_through_a_symlink_the_bundle_planted_are_refused_at_plan_time() {
    let s = Sandbox::new();
    let outside = s.path().join("outside");
    fs::create_dir_all(outside.join("sub")).expect("mkdir");
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).expect("chmod");
    for object in ["{dest}/app/link/sub", "{dest}/app/link"] {
        let text = spec(
            &s,
            &format!(
                "files:\n  - source: app\n    destination: {{dest}}/app\npermissions:\n  - object: {object}\n    mode: 777\n"
            ),
        );
        let b = s.bundle("b", &[("appspec.yml", &text), ("app/index.html", "x")]);
        symlink(&outside, b.join("app/link")).expect("symlink");
        let run = s.deploy(&b, "dg", &[]);
        assert_eq!(run.code, 1, "{object}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("symbolic link"),
            "{object}: {}",
            run.stdout
        );
        // Refused before Install copied anything, and nothing outside changed.
        assert!(
            !s.dest().join("app/index.html").exists(),
            "{object}: installed anyway"
        );
        let mode = |p: &Path| fs::metadata(p).expect("meta").mode() & 0o7777;
        assert_eq!(mode(&outside), 0o700);
        assert_eq!(mode(&outside.join("sub")), 0o755);
    }
}

/// Runs the binary and returns (exit code, stdout, the agent's peak RSS in KiB).
///
/// The peak is `VmHWM` from `/proc/<pid>/status`, polled until the process exits (the
/// high-water mark only grows). Not `wait4`'s `ru_maxrss`: after a vfork-style spawn that
/// starts from the *test* process's high-water mark, which the other tests here inflate.
fn run_measured(s: &Sandbox, args: &[&str]) -> (i32, String, u64) {
    let out = s.path().join("stdout.txt");
    let mut child = Command::new(support::bin())
        .arg("local")
        .arg("-c")
        .arg(s.config())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    (status.code().unwrap_or(-1), stdout, peak_kib)
}

#[test]
fn enormous_hook_output_keeps_the_agent_memory_bounded() {
    // 200 MB on stdout without a newline. The agent tails it to scripts.log in bounded lines;
    // its peak RSS (and that of anything it waited for) stays under 100 MB.
    let s = Sandbox::new();
    let text = spec(
        &s,
        "hooks:\n  ApplicationStart:\n    - location: scripts/flood.sh\n      timeout: 300\n",
    );
    let b = s.bundle(
        "flood",
        &[
            ("appspec.yml", &text),
            (
                "scripts/flood.sh",
                "#!/bin/sh\nhead -c 200000000 /dev/zero | tr '\\0' x\necho\necho flood-done\n",
            ),
        ],
    );
    let (code, stdout, peak_kib) = run_measured(&s, &["-l", b.to_str().expect("utf8"), "-g", "dg"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(peak_kib > 0, "VmHWM was read");
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
    let dir = Sandbox::deployment_dir(&support::Run {
        code,
        stdout,
        stderr: String::new(),
    });
    // Disk stays bounded too (scripts_log_max_size, default 64 MiB): scripts.log rotates, and
    // the hook's captured output file has its old output punched out. What reaches scripts.log
    // depends on how far the agent's reader keeps up; a punched stretch is noted there.
    const CAP: u64 = 64 << 20;
    let log = dir.join("logs/scripts.log");
    let size = fs::metadata(&log).expect("scripts.log").len();
    assert!(size <= CAP + 4096, "scripts.log rotates at the cap: {size}");
    let mut listing = Vec::new();
    let mut stack = vec![dir.join("logs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read logs") {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                listing.push(format!(
                    "{} {} {}",
                    e.path().display(),
                    m.len(),
                    m.blocks() * 512
                ));
            }
        }
    }
    let hook_output: u64 = listing
        .iter()
        .filter(|l| l.contains("/hooks/"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        hook_output <= CAP + CAP / 4 + (1 << 20),
        "the hook's output file keeps at most about the cap on disk: {listing:#?}"
    );
    // Every scripts.log file (live and rotated, at most scripts_log_max_files of them) is
    // within the cap, so the logs' disk use is bounded whatever a hook prints.
    for line in listing.iter().filter(|l| l.contains("/scripts.log")) {
        let bytes: u64 = line
            .rsplit(' ')
            .nth(1)
            .and_then(|b| b.parse().ok())
            .expect("size");
        assert!(bytes <= CAP + 4096, "{line}: over the cap: {listing:#?}");
    }
    let rotated = listing
        .iter()
        .filter(|l| l.contains("/scripts.log."))
        .count();
    assert!(
        (1..=8).contains(&rotated),
        "scripts.log rotated and kept at most 8: {listing:#?}"
    );
    let tail = {
        let mut f = fs::File::open(&log).expect("open");
        use std::io::{Read, Seek, SeekFrom};
        f.seek(SeekFrom::End(-64)).expect("seek");
        let mut t = String::new();
        f.read_to_string(&mut t).expect("read");
        t
    };
    assert!(tail.ends_with("[stdout]flood-done\n"), "{tail:?}");
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose: it holds no resources but its pid.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn a_fork_bombing_hook_is_bounded_by_its_timeout_and_its_group_is_gone() {
    // The hook spawns 300 sleepers (with `ulimit -u` set, as an operator would) and never
    // ends; the 2 s timeout TERMs then KILLs the whole process group.
    let s = Sandbox::new();
    let pids = s.path().join("pids");
    let script = format!(
        "#!/bin/sh\nulimit -u 4096 2>/dev/null\nn=0\nwhile [ $n -lt 300 ]; do sleep 300 & echo $! >> '{}'; n=$((n+1)); done\nwhile :; do sleep 1; done\n",
        pids.display()
    );
    let text = spec(
        &s,
        "hooks:\n  ApplicationStart:\n    - location: scripts/bomb.sh\n      timeout: 2\n",
    );
    let b = s.bundle(
        "bomb",
        &[("appspec.yml", &text), ("scripts/bomb.sh", &script)],
    );
    let start = Instant::now();
    let run = s.deploy(&b, "dg", &[]);
    let elapsed = start.elapsed();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("failed to complete in 2 seconds"),
        "{}",
        run.stdout
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let spawned: Vec<i32> = fs::read_to_string(&pids)
        .expect("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(spawned.len() > 10, "the bomb ran: {}", spawned.len());
    // Orphans are reaped by init/a subreaper; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<i32> = spawned.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for &p in &left {
                // SAFETY: cleaning up processes this test started.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            panic!("{} children outlived the timeout: {left:?}", left.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz regressions and corpora, replayed on stable through the fuzz targets' entry points.

fn replay_files(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(rd) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(rd.map(|e| e.expect("entry").path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

fn as_text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

const FUZZ_TARGETS: [&str; 7] = [
    "appspec",
    "spec_envelope",
    "pkcs7_verify",
    "acl_selinux",
    "agent_config",
    "onprem_config",
    "archive_unpack",
];

/// One input through one fuzz target's entry point, as `fuzz/fuzz_targets/<target>.rs` runs it.
/// The unpacker runs against `site` and must leave it holding the target or nothing.
fn run_fuzz_target(target: &str, data: &[u8], site: &Site) {
    use codedeploy_agent::appspec::fuzzing;
    use codedeploy_agent::config::Config;
    use codedeploy_agent::control::onprem;
    use codedeploy_agent::revision::archive::detect;
    use codedeploy_agent::spec::{self, pkcs7};

    match target {
        "appspec" => {
            if let Some(t) = as_text(data) {
                let _ = appspec::parse(t, Os::Linux);
            }
        }
        "spec_envelope" => {
            if let Some((&sel, rest)) = data.split_first()
                && let Some(payload) = as_text(rest)
            {
                let format = [Some("TEXT/JSON"), Some("PKCS7/JSON"), None, Some("XML")]
                    [usize::from(sel % 4)];
                let _ = spec::parse_envelope(format, payload, sel & 0x80 == 0);
            }
        }
        "pkcs7_verify" => {
            let _ = pkcs7::verify_signed_der(data);
            if let Some(t) = as_text(data) {
                let _ = pkcs7::verify_signed_content(t);
            }
        }
        "acl_selinux" => {
            if let Some(t) = as_text(data) {
                let _ = fuzzing::parse_ace(t);
                let _ = fuzzing::parse_range(t);
            }
        }
        "agent_config" => {
            if let Some(t) = as_text(data) {
                let _ = Config::parse(t, Path::new("codedeployagent.yml"));
            }
        }
        "onprem_config" => {
            if let Some(t) = as_text(data) {
                let _ = onprem::parse(t, Path::new("codedeploy.onpremises.yml"));
            }
        }
        "archive_unpack" => {
            let capped = UnpackOptions {
                available_bytes: Some(64 * MIB),
                max_entries: 10_000,
                ..opts()
            };
            let bundle = site.bundle(data);
            let _ = detect(&bundle);
            for kind in [BundleType::Zip, BundleType::Tar, BundleType::Tgz] {
                let r = unpack(&bundle, kind, &site.target(), &capped);
                site.assert_contained(r.is_ok());
                if r.is_ok() {
                    fs::remove_dir_all(site.target()).expect("remove the unpacked target");
                }
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn fuzz_regressions_and_corpora_replay_without_panics() {
    let site = Site::new();
    let mut replayed = 0;
    for target in FUZZ_TARGETS {
        for path in replay_files(target) {
            run_fuzz_target(target, &fs::read(&path).expect("read"), &site);
            replayed += 1;
        }
    }
    assert!(replayed > 50, "the committed corpora are there: {replayed}");
    let _ = std::io::stderr().write_all(format!("replayed {replayed} fuzz inputs\n").as_bytes());
}

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that make parsers take their edge paths: lengths, signs, YAML and path punctuation.
const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff:-/\\.*&!|>'\"\n\t #%@[]{}0";

/// One to four libFuzzer-style mutations: bit flips, interesting bytes, inserted, deleted and
/// duplicated runs, and splices from another corpus input.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const MAX_LEN: usize = 64 * 1024;
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let byte = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(i..i, std::iter::repeat_n(byte, n));
            }
            3 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            4 if len > 1 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let run: Vec<u8> = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, run);
            }
            5 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                // A multi-byte integer at a random place: lengths and counts in binary formats.
                let i = rng.below(len);
                let v = [0u32, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, u32::MAX][rng.below(7)];
                for (k, b) in v.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = out.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            _ => out.push(INTERESTING[rng.below(INTERESTING.len())]),
        }
    }
    out.truncate(MAX_LEN);
    out
}

/// The bounded fuzzing CI runs on stable (issue 8, item 1): every fuzz target gets
/// `FUZZ_STABLE_SECONDS` (default 3) of random mutations of its committed corpus. Not coverage
/// guided like `cargo fuzz` (nightly, opt-in in scripts/test), but it runs on every CI build with
/// no instrumented build. A panicking input is written out with the seed that reproduces it
/// (`FUZZ_STABLE_SEED`).
#[test]
fn fuzz_targets_survive_random_mutations_for_a_bounded_time() {
    let seconds: u64 = std::env::var("FUZZ_STABLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("FUZZ_STABLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let site = Site::new();
    let mut report = format!("fuzz_stable seed {seed}, {seconds}s per target:");
    for target in FUZZ_TARGETS {
        let corpus: Vec<Vec<u8>> = replay_files(target)
            .iter()
            .map(|p| fs::read(p).expect("read corpus"))
            .collect();
        assert!(!corpus.is_empty(), "{target} has a committed corpus");
        let mut rng = Rng(seed ^ target.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut runs = 0u64;
        while Instant::now() < deadline {
            let input = &corpus[rng.below(corpus.len())];
            let other = &corpus[rng.below(corpus.len())];
            let data = mutate(&mut rng, input, other);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_fuzz_target(target, &data, &site)
            }));
            if let Err(panic) = outcome {
                let saved = std::env::temp_dir().join(format!("fuzz-stable-{target}-{seed}"));
                let _ = fs::write(&saved, &data);
                eprintln!(
                    "{target} panicked on {} (FUZZ_STABLE_SEED={seed}); add it to \
                     fuzz/regressions/{target}/",
                    saved.display()
                );
                std::panic::resume_unwind(panic);
            }
            runs += 1;
        }
        report.push_str(&format!(" {target} {runs}"));
    }
    let _ = std::io::stderr().write_all(format!("{report}\n").as_bytes());
}
