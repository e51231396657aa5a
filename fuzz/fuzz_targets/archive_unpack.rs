//! The bundle unpacker: the input is written to a file and unpacked as zip, tar and tgz, each
//! into a fresh target inside its own directory. After every attempt the directory must hold
//! exactly the target (success) or nothing (error: the target is removed), and a sentinel
//! next to it must be untouched. `detect` runs on the same file.
#![no_main]
use std::fs;
use std::path::Path;

use codedeploy_agent::revision::archive::{BundleType, UnpackOptions, detect, unpack};
use libfuzzer_sys::fuzz_target;

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: the fuzzer creates and removes thousands of trees a second.
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().expect("a temp dir"),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read the scratch dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let work = scratch();
    let bundle = work.path().join("bundle");
    fs::write(&bundle, data).expect("write the bundle");
    let _ = detect(&bundle);
    let opts = UnpackOptions {
        // Keep each run cheap: 64 MiB of "disk" and 10k entries.
        available_bytes: Some(64 << 20),
        max_entries: 10_000,
        ..UnpackOptions::default()
    };
    for kind in [BundleType::Zip, BundleType::Tar, BundleType::Tgz] {
        let site = work.path().join(format!("site-{kind}"));
        let sentinel = site.join("sentinel");
        fs::create_dir_all(&sentinel).expect("mkdir sentinel");
        fs::write(sentinel.join("keep"), b"keep").expect("write sentinel");
        let target = site.join("deployment-archive");
        let result = unpack(&bundle, kind, &target, &opts);
        let left = names(&site);
        match &result {
            Ok(_) => assert_eq!(
                left,
                ["deployment-archive", "sentinel"],
                "{kind}: extra files next to the target"
            ),
            Err(e) => assert_eq!(
                left,
                ["sentinel"],
                "{kind}: target left behind after error {e}"
            ),
        }
        assert_eq!(names(&sentinel), ["keep"], "{kind}: sentinel dir changed");
        assert_eq!(fs::read(sentinel.join("keep")).expect("sentinel"), b"keep");
        assert_eq!(
            names(work.path())
                .iter()
                .filter(|n| !n.starts_with("site-") && *n != "bundle")
                .count(),
            0,
            "{kind}: something written next to the site"
        );
        fs::remove_dir_all(&site).expect("clear the site");
    }
});
