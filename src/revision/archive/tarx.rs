//! Tar and tgz bundles.
//!
//! The tar crate is used in raw mode, so GNU long-name and pax records are read here with a
//! size cap instead of being buffered whole (a hostile 10 GiB "long name" must not become a
//! 10 GiB allocation). A plain tar is pre-scanned by seeking past entry data to refuse a bomb
//! before writing; a tgz cannot be, so each entry's declared size is checked against what is
//! left of the free space before it is written.

use std::fs::File;
use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;

use super::fsops::{Meta, Replace};
use super::names::{self, PATH_MAX};
use super::{Cx, Item, Rejection, UnpackError};

/// Largest GNU long-name or long-link record read (longer names are refused anyway).
const MAX_LONG_NAME: u64 = 2 * PATH_MAX as u64;
/// Largest pax extended header read.
const MAX_PAX: u64 = 1 << 20;
/// Most decompressed bytes read after the tar end-of-archive marker of a tgz.
const MAX_TRAILING: u64 = 16 << 20;
/// Read-ahead for the archive file.
const READ_BUFFER: usize = 64 * 1024;

/// Is `h` a 512-byte tar header with a valid checksum (and not all zeros)?
pub(super) fn header_checksum_ok(h: &[u8]) -> bool {
    if h.len() < 512 || h.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &h[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(stored) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
    else {
        return false;
    };
    let sum: u32 = h[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == stored
}

pub(super) fn unpack(cx: &mut Cx<'_>, gzip: bool) -> Result<(), UnpackError> {
    let archive = cx.archive;
    let open = || {
        File::open(archive).map_err(|source| UnpackError::Open {
            archive: archive.to_owned(),
            source,
        })
    };
    // GNU tar, which the AWS agent runs for `tar` bundles, reads gzip data without `-z`, so a
    // gzipped bundle declared as `tar` works there; it does here too.
    let gzip = gzip || starts_with_gzip_magic(&mut open()?).map_err(|e| cx.corrupt(e))?;
    if !gzip {
        prescan(cx, open()?)?;
    }
    let reader = BufReader::with_capacity(READ_BUFFER, open()?);
    if gzip {
        // Decompression runs on its own thread, a few chunks ahead of the extraction, as
        // `tar -xz` runs gzip next to tar.
        let rest = extract(cx, ReadAhead::new(MultiGzDecoder::new(reader)))?;
        drain_gzip(cx, rest)
    } else {
        extract(cx, reader).map(drop)
    }
}

/// Reads a tgz to its end after the tar end-of-archive blocks, so a truncated or corrupt
/// gzip stream (a missing CRC trailer) is noticed as GNU tar notices it. Trailing data beyond
/// [`MAX_TRAILING`] is refused rather than decompressed without end.
/// Size of one chunk the read-ahead thread hands over.
const READ_AHEAD_CHUNK: usize = 256 * 1024;
/// Chunks decoded ahead of the consumer (memory: this many chunks plus one on each side).
const READ_AHEAD_DEPTH: usize = 4;

/// Reads `R` on its own thread, up to [`READ_AHEAD_DEPTH`] chunks ahead of the consumer. The
/// bytes and the errors are the ones `R` produced, in order; after an error the stream ends.
struct ReadAhead {
    rx: Option<std::sync::mpsc::Receiver<io::Result<Vec<u8>>>>,
    chunk: Vec<u8>,
    pos: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    fn new<R: Read + Send + 'static>(mut inner: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD_DEPTH);
        let thread = std::thread::Builder::new()
            .name("unpack-read".into())
            .spawn(move || {
                loop {
                    let mut chunk = vec![0u8; READ_AHEAD_CHUNK];
                    let mut filled = 0;
                    let mut failed = None;
                    while filled < chunk.len() {
                        match inner.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    chunk.truncate(filled);
                    let end = filled < READ_AHEAD_CHUNK;
                    // A consumer that went away (an error on its side) ends the thread.
                    if filled > 0 && tx.send(Ok(chunk)).is_err() {
                        return;
                    }
                    if let Some(e) = failed {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    if end {
                        return;
                    }
                }
            });
        match thread {
            Ok(thread) => Self {
                rx: Some(rx),
                chunk: Vec::new(),
                pos: 0,
                thread: Some(thread),
            },
            // No thread: the error is what the first read returns.
            Err(e) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                Self {
                    rx: Some(rx),
                    chunk: Vec::new(),
                    pos: 0,
                    thread: None,
                }
            }
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                Err(_) => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel first lets a thread blocked on a full channel stop.
        self.rx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn drain_gzip<R: Read>(cx: &Cx<'_>, rest: R) -> Result<(), UnpackError> {
    let mut limited = rest.take(MAX_TRAILING + 1);
    let n = io::copy(&mut limited, &mut io::sink()).map_err(|e| cx.corrupt(e))?;
    if n > MAX_TRAILING {
        return Err(cx.corrupt(io::Error::new(
            io::ErrorKind::InvalidData,
            "more than 16 MiB of data follow the end of the tar archive",
        )));
    }
    Ok(())
}

fn starts_with_gzip_magic(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sums the declared sizes of a plain tar's regular files by seeking from header to header.
fn prescan(cx: &mut Cx<'_>, file: File) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(BufReader::new(file));
    let entries = archive
        .entries_with_seek()
        .map_err(|e| cx.corrupt(e))?
        .raw(true);
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    for entry in entries {
        let entry = entry.map_err(|e| cx.corrupt(e))?;
        count += 1;
        if count > cx.opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                archive: cx.archive.to_owned(),
                limit: cx.opts.max_entries,
            });
        }
        if matches!(entry.header().entry_type().as_byte(), b'0' | 0 | b'7') {
            total = total.saturating_add(entry.size());
        }
    }
    tracing::debug!(
        entries = count,
        declared_bytes = total,
        "tar headers scanned"
    );
    cx.check_total(total)
}

/// Extracts every entry and hands back the reader, positioned after the end-of-archive marker.
fn extract<R: Read>(cx: &mut Cx<'_>, reader: R) -> Result<R, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(|e| cx.corrupt(e))?.raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in &mut entries {
        let mut entry = entry.map_err(|e| cx.corrupt(e))?;
        cx.count_entry()?;
        let ty = entry.header().entry_type().as_byte();
        match ty {
            b'L' => {
                long_name = Some(trim_nuls(read_record(cx, &mut entry, MAX_LONG_NAME)?));
                continue;
            }
            b'K' => {
                long_link = Some(trim_nuls(read_record(cx, &mut entry, MAX_LONG_NAME)?));
                continue;
            }
            b'x' => {
                pax = Some(read_record(cx, &mut entry, MAX_PAX)?);
                continue;
            }
            b'g' | b'V' => {
                tracing::debug!(
                    entry_type = %char::from(ty),
                    "ignoring a tar global header or volume label"
                );
                continue;
            }
            _ => {}
        }
        let pax = match pax.take() {
            Some(data) => parse_pax(&data).map_err(|e| cx.corrupt(e))?,
            None => Vec::new(),
        };
        let get = |key: &[u8]| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_slice())
        };
        let from_long_name = long_name.take();
        let from_long_link = long_link.take();
        let raw: Vec<u8> = match (get(b"path"), from_long_name) {
            (Some(p), _) => p.to_vec(),
            (None, Some(n)) => n,
            (None, None) => entry.path_bytes().into_owned(),
        };
        let link: Option<Vec<u8>> = match (get(b"linkpath"), from_long_link) {
            (Some(p), _) => Some(p.to_vec()),
            (None, Some(n)) => Some(n),
            (None, None) => entry.link_name_bytes().map(|l| l.into_owned()),
        };
        let size = entry.size();
        if let Some(pax_size) = get(b"size")
            && parse_decimal(pax_size) != Some(i128::from(size))
        {
            return Err(cx.reject(
                &raw,
                Rejection::Unsupported(
                    "its size is given only in a pax header, which is not supported; re-create the bundle with GNU tar",
                ),
            ));
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| cx.corrupt(e))?;
        let mtime = match get(b"mtime").and_then(parse_decimal) {
            Some(t) => i64::try_from(t).ok(),
            None => i64::try_from(header.mtime().map_err(|e| cx.corrupt(e))?).ok(),
        };
        // Archive owners are never applied: entries belong to the unpacking user
        // (docs/compatibility.md).
        let meta = Meta {
            mode: cx.mode(mode),
            mtime,
        };
        let path = names::normalize(&raw, false).map_err(|r| cx.reject(&raw, r))?;
        let item = match ty {
            b'0' | 0 | b'7' if raw.ends_with(b"/") => Item::Dir,
            b'0' | 0 | b'7' => Item::File {
                data: &mut entry,
                size,
            },
            b'5' => Item::Dir,
            b'2' => Item::Symlink(link.unwrap_or_default()),
            b'1' => match link {
                Some(l) => Item::HardLink(l),
                None => {
                    return Err(cx.reject(
                        &raw,
                        Rejection::HardLink {
                            target: Vec::new().into(),
                            why: "is missing",
                        },
                    ));
                }
            },
            b'3' => return Err(cx.reject(&raw, Rejection::Special("character device"))),
            b'4' => return Err(cx.reject(&raw, Rejection::Special("block device"))),
            b'6' => return Err(cx.reject(&raw, Rejection::Special("fifo"))),
            b'S' => {
                return Err(cx.reject(
                    &raw,
                    Rejection::Unsupported(
                        "it is a GNU sparse file, which is not supported; re-create the bundle without --sparse",
                    ),
                ));
            }
            _ => {
                return Err(cx.reject(
                    &raw,
                    Rejection::Unsupported("it has an unknown tar entry type"),
                ));
            }
        };
        cx.add(&raw, path, item, meta, Replace::NonDirectory)?;
    }
    if long_name.is_some() || long_link.is_some() || pax.is_some() {
        return Err(cx.corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends with an extension header that describes no entry",
        )));
    }
    Ok(archive.into_inner())
}

/// Reads a long-name or pax record of at most `limit` bytes.
fn read_record<R: Read>(
    cx: &Cx<'_>,
    entry: &mut tar::Entry<'_, R>,
    limit: u64,
) -> Result<Vec<u8>, UnpackError> {
    let what = entry.path_bytes().into_owned();
    if entry.size() > limit {
        return Err(cx.reject(
            &what,
            Rejection::Unsupported("its long-name or pax record is implausibly large"),
        ));
    }
    let mut data = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| cx.entry_data(&what, e))?;
    if (data.len() as u64) < entry.size() {
        return Err(cx.corrupt(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a long-name or pax record is truncated",
        )));
    }
    Ok(data)
}

fn trim_nuls(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Parses pax records `"<len> <key>=<value>\n"`.
fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed pax extended header");
    let mut out = Vec::new();
    while !data.is_empty() && !data.iter().all(|b| *b == 0) {
        let space = data.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// The integer part of a pax decimal value such as `1700000000.25` or `-3`.
fn parse_decimal(v: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(v).ok()?;
    let int = s.split('.').next()?;
    int.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_parse() {
        let data = b"18 path=a/b\xffc.txt\n13 mtime=5.5\n";
        let recs = parse_pax(data).unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a/b\xffc.txt".to_vec()));
        assert_eq!(parse_decimal(&recs[1].1), Some(5));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x").is_err());
    }

    #[test]
    fn checksum_of_a_zero_block_is_not_valid() {
        assert!(!header_checksum_ok(&[0u8; 512]));
    }
}
