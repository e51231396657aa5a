//! Zip bundles: a pre-pass over the central directory (names, duplicates, declared total),
//! then one entry at a time through the shared extractor.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use zip::System;
use zip::ZipArchive;
use zip::extra_fields::ExtraField;

use super::fsops::{Meta, Replace};
use super::names::{self, RelPath};
use super::{Cx, Item, Rejection, UnpackError};

const S_IFMT: u32 = libc::S_IFMT;

/// The zip crate's message when an entry inflates past its declared size.
const OVERSIZE_MESSAGE: &str = "larger than its declared uncompressed size";

/// How an entry's type is decided: Unix mode bits when present, else a trailing separator.
enum Kind {
    Dir,
    File,
    Symlink,
    Special(&'static str),
}

struct Facts {
    path: RelPath,
    kind: Kind,
    mode: Option<u32>,
}

fn facts(name: &[u8], system: System, external: u32) -> Result<Facts, Rejection> {
    let dos = system != System::Unix;
    let path = names::normalize(name, dos)?;
    let unix = (system == System::Unix && external >> 16 != 0).then_some(external >> 16);
    let trailing = name.ends_with(b"/") || (dos && name.ends_with(b"\\"));
    let kind = match unix.map(|m| m & S_IFMT) {
        Some(libc::S_IFLNK) => Kind::Symlink,
        Some(libc::S_IFDIR) => Kind::Dir,
        Some(libc::S_IFCHR) => Kind::Special("character device"),
        Some(libc::S_IFBLK) => Kind::Special("block device"),
        Some(libc::S_IFIFO) => Kind::Special("fifo"),
        Some(libc::S_IFSOCK) => Kind::Special("socket"),
        _ if trailing => Kind::Dir,
        _ => Kind::File,
    };
    Ok(Facts {
        path,
        kind,
        mode: unix.map(|m| m & 0o7777),
    })
}

pub(super) fn unpack(cx: &mut Cx<'_>) -> Result<(), UnpackError> {
    let file = File::open(cx.archive).map_err(|source| UnpackError::Open {
        archive: cx.archive.to_owned(),
        source,
    })?;
    let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| cx.corrupt(zip_io(e)))?;
    if zip.len() as u64 > cx.opts.max_entries {
        return Err(UnpackError::TooManyEntries {
            archive: cx.archive.to_owned(),
            limit: cx.opts.max_entries,
        });
    }

    // The zip crate keeps one of several same-named entries; find the name to refuse it.
    if zip.has_duplicate_names() {
        let start = zip.central_directory_start();
        let name = File::open(cx.archive)
            .and_then(|f| duplicate_name(&mut BufReader::new(f), start))
            .map_err(|e| cx.corrupt(e))?
            .unwrap_or_default();
        return Err(cx.reject(&name, Rejection::Duplicate));
    }

    // Pre-pass: every name valid, no duplicates, declared total fits, before any write.
    let mut seen = HashSet::with_capacity(zip.len());
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_data(i).map_err(|e| cx.corrupt(zip_io(e)))?;
        let name = entry.name_raw();
        let f = facts(name, entry.system(), entry.external_attributes())
            .map_err(|r| cx.reject(name, r))?;
        if f.path.is_root() && !matches!(f.kind, Kind::Dir) {
            return Err(cx.reject(name, Rejection::NamesRoot));
        }
        if let Kind::Special(what) = f.kind {
            return Err(cx.reject(name, Rejection::Special(what)));
        }
        if !seen.insert(f.path.to_bytes()) {
            return Err(cx.reject(name, Rejection::Duplicate));
        }
        total = total.saturating_add(entry.size());
    }
    drop(seen);
    cx.check_total(total)?;
    tracing::debug!(
        entries = zip.len(),
        declared_bytes = total,
        "zip central directory checked"
    );

    for i in 0..zip.len() {
        cx.count_entry()?;
        let raw = zip
            .by_index_data(i)
            .map_err(|e| cx.corrupt(zip_io(e)))?
            .name_raw()
            .to_vec();
        let mut entry = zip
            .by_index(i)
            .map_err(|e| cx.entry_data(&raw, zip_io(e)))?;
        let f = facts(&raw, entry.system(), entry.external_attributes())
            .map_err(|r| cx.reject(&raw, r))?;
        let size = entry.size();
        let default_mode = match f.kind {
            Kind::Dir => 0o755,
            Kind::Symlink => 0o777,
            _ => 0o644,
        };
        let meta = Meta {
            mode: cx.mode(f.mode.unwrap_or(default_mode)),
            mtime: mtime_of(&entry),
        };
        let result = match f.kind {
            Kind::Dir => cx.add(&raw, f.path, Item::Dir, meta, Replace::Never),
            Kind::File => cx.add(
                &raw,
                f.path,
                Item::File {
                    data: &mut entry,
                    size,
                },
                meta,
                Replace::Never,
            ),
            Kind::Symlink => {
                let mut link = Vec::new();
                (&mut entry)
                    .take(names::PATH_MAX as u64 + 1)
                    .read_to_end(&mut link)
                    .map_err(|e| cx.entry_data(&raw, e))?;
                if link.len() > names::PATH_MAX {
                    return Err(cx.reject(&raw, Rejection::BadSymlinkTarget));
                }
                cx.add(&raw, f.path, Item::Symlink(link), meta, Replace::Never)
            }
            Kind::Special(what) => Err(cx.reject(&raw, Rejection::Special(what))),
        };
        match result {
            Err(UnpackError::EntryData { source, .. }) if is_oversize(&source) => {
                return Err(cx.reject(&raw, Rejection::LargerThanDeclared { declared: size }));
            }
            other => other?,
        }
    }
    Ok(())
}

/// Walks the raw central directory from `start` and returns the first name seen twice.
fn duplicate_name<R: Read + Seek>(reader: &mut R, start: u64) -> io::Result<Option<Vec<u8>>> {
    const CENTRAL_SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
    reader.seek(SeekFrom::Start(start))?;
    let mut seen = HashSet::new();
    loop {
        let mut fixed = [0u8; 46];
        if reader.read_exact(&mut fixed).is_err() || fixed[..4] != CENTRAL_SIGNATURE {
            return Ok(None);
        }
        let len = |at: usize| u64::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
        let mut name = Vec::new();
        reader.by_ref().take(len(28)).read_to_end(&mut name)?;
        reader.seek(SeekFrom::Current((len(30) + len(32)) as i64))?;
        if !seen.insert(name.clone()) {
            return Ok(Some(name));
        }
    }
}

/// Did reading stop because the entry inflated past its declared size?
fn is_oversize(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData && e.to_string().contains(OVERSIZE_MESSAGE)
}

fn zip_io(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// The Info-ZIP extended timestamp (UTC) if present, else the DOS time read as local time,
/// as `unzip` does.
fn mtime_of<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> Option<i64> {
    for field in entry.extra_data_fields() {
        if let ExtraField::ExtendedTimestamp(ts) = field
            && let Some(t) = ts.mod_time()
        {
            return Some(i64::from(t));
        }
    }
    let dt = entry.last_modified()?;
    local_to_epoch(
        i32::from(dt.year()),
        i32::from(dt.month()),
        i32::from(dt.day()),
        i32::from(dt.hour()),
        i32::from(dt.minute()),
        i32::from(dt.second()),
    )
}

fn local_to_epoch(year: i32, month: i32, day: i32, hour: i32, min: i32, sec: i32) -> Option<i64> {
    // SAFETY: `tm` is plain old data; zeroed is a valid value for every field.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, exclusively borrowed `struct tm`; mktime only reads and
    // normalises it.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}
