//! The bundle to upload: a directory is validated (`validate::check`: appspec and bundle
//! checks) and packed into a tgz, tar or zip in a private temporary directory; an existing
//! archive is validated the same way and uploaded as is. Packing streams file by file, so
//! memory does not grow with the bundle.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::{BundleKind, PushError};
use crate::appspec::Os;
use crate::revision::archive::{self, BundleType};
use crate::validate::{self, ScratchDir};

/// A bundle ready to upload.
pub struct Prepared {
    pub kind: BundleKind,
    /// Where the archive is: the packed file in `scratch`, or the user's archive.
    path: PathBuf,
    /// Files packed (None for an archive taken as is).
    pub files: Option<u64>,
    pub size: u64,
    source: PathBuf,
    _scratch: Option<ScratchDir>,
}

impl Prepared {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line for the user: what will be uploaded.
    pub fn summary(&self) -> String {
        match self.files {
            Some(n) => format!(
                "Bundled {} ({}, {n} entries, {} bytes)",
                self.source.display(),
                self.kind.as_str(),
                self.size
            ),
            None => format!(
                "Using the archive {} as is ({}, {} bytes)",
                self.source.display(),
                self.kind.as_str(),
                self.size
            ),
        }
    }
}

/// Validates `source` (a bundle directory or archive) for `os`, and packs a directory as
/// `kind` (default tgz). Warnings go to stderr; any error is a usage error listing them all.
pub fn prepare(
    source: &Path,
    kind: Option<BundleKind>,
    os: Os,
    ignore_hidden: bool,
) -> Result<Prepared, PushError> {
    let meta = fs::metadata(source).map_err(|e| {
        PushError::Usage(format!("cannot read the bundle {}: {e}", source.display()))
    })?;
    let archive_kind = if meta.is_dir() {
        None
    } else if ignore_hidden {
        return Err(PushError::Usage(format!(
            "--ignore-hidden-files applies to a directory; {} is an archive and is uploaded as is",
            source.display()
        )));
    } else {
        let detected = archive::detect(source).map_err(|e| {
            PushError::Usage(format!("cannot read the bundle {}: {e}", source.display()))
        })?;
        let detected = match detected {
            Some(BundleType::Tgz) => BundleKind::Tgz,
            Some(BundleType::Tar) => BundleKind::Tar,
            Some(BundleType::Zip) => BundleKind::Zip,
            None => {
                return Err(PushError::Usage(format!(
                    "{} is neither a directory nor a zip, tar or tgz archive",
                    source.display()
                )));
            }
        };
        if let Some(k) = kind.filter(|k| *k != detected) {
            return Err(PushError::Usage(format!(
                "--bundle-type {} does not match {}, which is a {} archive",
                k.as_str(),
                source.display(),
                detected.as_str()
            )));
        }
        Some(detected)
    };

    check(source, os)?;

    if let Some(kind) = archive_kind {
        return Ok(Prepared {
            kind,
            path: source.to_path_buf(),
            files: None,
            size: meta.len(),
            source: source.to_path_buf(),
            _scratch: None,
        });
    }
    let kind = kind.unwrap_or(BundleKind::Tgz);
    let scratch = ScratchDir::new()
        .map_err(|e| PushError::Usage(format!("cannot create a temporary directory: {e}")))?;
    let path = scratch.path().join(format!("bundle.{}", kind.as_str()));
    if !ignore_hidden && source.join(".git").exists() {
        crate::errln!(
            "note: packing {}/.git too (--ignore-hidden-files leaves hidden files and \
             directories out)",
            source.display()
        );
    }
    let entries = walk(source, ignore_hidden).map_err(|e| {
        PushError::Usage(format!("cannot read the bundle {}: {e}", source.display()))
    })?;
    pack(&entries, kind, &path).map_err(|e| {
        PushError::Usage(format!(
            "packing {} into {} failed: {e}",
            source.display(),
            path.display()
        ))
    })?;
    let size = fs::metadata(&path)
        .map_err(|e| PushError::Usage(format!("cannot read {}: {e}", path.display())))?
        .len();
    Ok(Prepared {
        kind,
        path,
        files: Some(entries.len() as u64),
        size,
        source: source.to_path_buf(),
        _scratch: Some(scratch),
    })
}

/// Runs the `validate` command's checks; warnings to stderr, errors fail.
fn check(source: &Path, os: Os) -> Result<(), PushError> {
    let findings = validate::check(source, os).map_err(|e| PushError::Usage(e.to_string()))?;
    let mut errors = Vec::new();
    for f in &findings {
        let at = match (f.line, f.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", f.file),
            _ => f.file.clone(),
        };
        let line = format!("{at}: {}: {}", f.severity, f.message);
        if f.severity == "error" {
            errors.push(line);
        } else {
            crate::errln!("{line}");
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(PushError::Usage(format!(
        "the bundle {} is not valid (nothing was uploaded):\n  {}",
        source.display(),
        errors.join("\n  ")
    )))
}

/// One thing to pack: its name in the archive and where it is.
struct Entry {
    name: String,
    path: PathBuf,
    meta: fs::Metadata,
}

/// Every directory, file and symlink under `root`, parents before children, names sorted,
/// symlinks not followed; with `ignore_hidden`, none whose name starts with a dot (nor what is
/// below such a directory).
fn walk(root: &Path, ignore_hidden: bool) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut names = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let text = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a UTF-8 file name", dir.join(&name).display()),
                )
            })?;
            if ignore_hidden && text.starts_with('.') {
                continue;
            }
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path)?;
            let rel = format!("{prefix}{text}");
            if meta.is_dir() {
                subdirs.push((path.clone(), format!("{rel}/")));
            } else if !meta.is_file() && !meta.file_type().is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a regular file, directory or symlink",
                        path.display()
                    ),
                ));
            }
            out.push(Entry {
                name: rel,
                path,
                meta,
            });
        }
        // Depth-first, in name order: push in reverse so the first name is visited first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

fn pack(entries: &[Entry], kind: BundleKind, dest: &Path) -> io::Result<()> {
    let file = BufWriter::new(File::create(dest)?);
    match kind {
        BundleKind::Tgz => {
            let gz = pack_tar(entries, GzEncoder::new(file, Compression::default()))?;
            gz.finish()?
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()
        }
        BundleKind::Tar => pack_tar(entries, file)?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all(),
        BundleKind::Zip => pack_zip(entries, file)?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all(),
    }
}

fn pack_tar<W: Write>(entries: &[Entry], out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for e in entries {
        if e.meta.is_dir() {
            tar.append_dir(&e.name, &e.path)?;
        } else {
            tar.append_path_with_name(&e.path, &e.name)?;
        }
    }
    tar.into_inner()
}

fn pack_zip<W: Write + io::Seek>(entries: &[Entry], out: W) -> io::Result<W> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(out);
    for e in entries {
        let mode = e.meta.permissions().mode() & 0o7777;
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode)
            .large_file(e.meta.size() >= u64::from(u32::MAX));
        if e.meta.is_dir() {
            zip.add_directory(&e.name, options)
                .map_err(io::Error::other)?;
        } else if e.meta.file_type().is_symlink() {
            let target = fs::read_link(&e.path)?;
            let target = target.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the target of the symlink {} is not UTF-8",
                        e.path.display()
                    ),
                )
            })?;
            zip.add_symlink(&e.name, target, options)
                .map_err(io::Error::other)?;
        } else {
            zip.start_file(&e.name, options).map_err(io::Error::other)?;
            io::copy(&mut File::open(&e.path)?, &mut zip)?;
        }
    }
    zip.finish().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::archive::UnpackOptions;

    fn sample(root: &Path) {
        fs::create_dir_all(root.join("scripts")).expect("mkdir");
        fs::create_dir_all(root.join("site/css")).expect("mkdir");
        fs::write(
            root.join("appspec.yml"),
            "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: /tmp/x\nhooks:\n  AfterInstall:\n    - location: scripts/after.sh\n",
        )
        .expect("write");
        fs::write(root.join("scripts/after.sh"), "#!/bin/sh\necho hi\n").expect("write");
        fs::set_permissions(
            root.join("scripts/after.sh"),
            fs::Permissions::from_mode(0o750),
        )
        .expect("chmod");
        fs::write(root.join("site/index.html"), "<h1>hi</h1>").expect("write");
        fs::write(root.join("site/css/a.css"), "h1{}").expect("write");
        std::os::unix::fs::symlink("index.html", root.join("site/home.html")).expect("symlink");
    }

    #[test]
    fn packs_every_kind_so_that_the_agent_unpacks_the_same_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        sample(&src);
        for kind in [BundleKind::Tgz, BundleKind::Tar, BundleKind::Zip] {
            let prepared = prepare(&src, Some(kind), Os::Linux, false).expect("prepare");
            assert_eq!(prepared.files, Some(8), "{}", prepared.summary());
            let detected = archive::detect(prepared.path())
                .expect("read")
                .expect("archive");
            let out = dir.path().join(format!("out-{}", kind.as_str()));
            archive::unpack(prepared.path(), detected, &out, &UnpackOptions::default())
                .expect("unpack");
            assert_eq!(
                fs::read_to_string(out.join("site/index.html")).expect("read"),
                "<h1>hi</h1>"
            );
            assert_eq!(
                fs::read_to_string(out.join("site/css/a.css")).expect("read"),
                "h1{}"
            );
            let mode = fs::metadata(out.join("scripts/after.sh"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o750, "{kind:?}");
            assert_eq!(
                fs::read_link(out.join("site/home.html")).expect("symlink"),
                PathBuf::from("index.html"),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn invalid_appspec_is_a_usage_error_listing_every_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("appspec.yml"),
            "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: missing.sh\n      timeout: lots\n",
        )
        .expect("write");
        let Err(PushError::Usage(message)) = prepare(dir.path(), None, Os::Linux, false) else {
            panic!("expected a usage error");
        };
        assert!(message.contains("nothing was uploaded"), "{message}");
        assert!(message.contains("appspec.yml:"), "{message}");
    }

    #[test]
    fn archive_is_taken_as_is_and_its_type_must_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        sample(&src);
        let packed = prepare(&src, Some(BundleKind::Zip), Os::Linux, false).expect("prepare");
        let archive = dir.path().join("bundle.zip");
        fs::copy(packed.path(), &archive).expect("copy");
        let again = prepare(&archive, None, Os::Linux, false).expect("archive");
        assert_eq!(again.kind, BundleKind::Zip);
        assert_eq!(again.path(), archive);
        assert_eq!(again.files, None);
        let Err(PushError::Usage(message)) =
            prepare(&archive, Some(BundleKind::Tgz), Os::Linux, false)
        else {
            panic!("expected a usage error");
        };
        assert!(message.contains("which is a zip archive"), "{message}");
    }

    #[test]
    fn hidden_files_are_left_out_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join(".git/objects")).expect("mkdir");
        fs::write(src.join(".git/config"), "[core]\n").expect("write");
        fs::write(src.join(".env"), "SECRET=1\n").expect("write");
        fs::write(src.join("appspec.yml"), "version: 0.0\nos: linux\n").expect("write");
        let names = |ignore| -> Vec<String> {
            walk(&src, ignore)
                .expect("walk")
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        assert_eq!(names(true), ["appspec.yml"]);
        assert_eq!(
            names(false),
            [".env", ".git", "appspec.yml", ".git/config", ".git/objects"]
        );
        let archive = dir.path().join("b.tgz");
        let packed = prepare(&src, Some(BundleKind::Tgz), Os::Linux, true).expect("prepare");
        fs::copy(packed.path(), &archive).expect("copy");
        assert_eq!(packed.files, Some(1));
        let Err(PushError::Usage(message)) = prepare(&archive, None, Os::Linux, true) else {
            panic!("--ignore-hidden-files with an archive is a usage error");
        };
        assert!(message.contains("applies to a directory"), "{message}");
    }
}
