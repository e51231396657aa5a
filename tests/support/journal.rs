//! A stand-in for journald: a Unix datagram socket in a temporary directory that collects
//! native-protocol records (`KEY=VALUE` lines and the binary `KEY\n<len><value>\n` form).
//! Point the agent at it with `CODEDEPLOY_JOURNAL_SOCKET`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One record: field name to value (the last one wins for repeated names).
pub type Entry = BTreeMap<String, String>;

/// Collects records until dropped.
pub struct FakeJournal {
    path: PathBuf,
    entries: Arc<Mutex<Vec<Entry>>>,
    raw: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Parses one native-protocol datagram.
pub fn parse(datagram: &[u8]) -> Entry {
    let mut out = Entry::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &rest[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            rest = &rest[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let after = &rest[nl + 1..];
            let len = u64::from_le_bytes(after[..8].try_into().expect("length")) as usize;
            let value = &after[8..8 + len];
            out.insert(key, String::from_utf8_lossy(value).into_owned());
            rest = &after[8 + len + 1..];
        }
    }
    out
}

impl FakeJournal {
    /// Binds `<dir>/journal.socket`.
    pub fn start(dir: &Path) -> Self {
        let path = dir.join("journal.socket");
        let socket = UnixDatagram::bind(&path).expect("bind the fake journal socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let entries = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (entries, raw, stop) = (Arc::clone(&entries), Arc::clone(&raw), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        entries.lock().expect("entries").push(parse(&buf[..n]));
                        raw.lock().expect("raw").push(buf[..n].to_vec());
                    }
                }
            })
        };
        Self {
            path,
            entries,
            raw,
            stop,
            thread: Some(thread),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().expect("entries").clone()
    }

    /// Every datagram as received, for grepping.
    pub fn raw_text(&self) -> String {
        self.raw
            .lock()
            .expect("raw")
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until some record satisfies `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Entry) -> bool) -> Option<Entry> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.entries().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
