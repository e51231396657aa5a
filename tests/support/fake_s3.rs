//! A tiny fake S3 for fault injection: path-style `GET /<bucket>/<key>` on 127.0.0.1 with
//! `Range` and `If-Match`, an MD5 ETag, and faults moto cannot give: bytes that trickle, bodies
//! cut off half way, a wrong ETag, a body that does not match its ETag. Signatures are not
//! checked. Std threads; dropping it stops the server and joins them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// How the fake misbehaves; changeable while it runs.
#[derive(Debug, Clone, Default)]
pub struct S3Faults {
    /// Send bodies `chunk` bytes at a time, sleeping `pause` between chunks.
    pub trickle: Option<(usize, Duration)>,
    /// The next N GETs send half their body (with the full `Content-Length`), then close.
    pub truncate_next: usize,
    /// Answer this ETag instead of the MD5 of the data.
    pub etag_override: Option<String>,
    /// Flip one byte of the data served (the ETag stays the MD5 of the original).
    pub corrupt: bool,
}

/// One GET as the fake saw it.
#[derive(Debug, Clone)]
pub struct S3Request {
    pub path: String,
    pub range: Option<String>,
    pub if_match: Option<String>,
    pub status: u16,
    /// Body bytes written before the answer ended (or broke off).
    pub bytes_sent: usize,
    /// The whole answered body was written.
    pub complete: bool,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Vec<u8>>,
    faults: S3Faults,
    requests: Vec<S3Request>,
    /// Body bytes written so far across all answers (also while they are still streaming).
    bytes_out: usize,
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    stopping: bool,
}

type Shared = super::shared::Shared<State>;

impl super::shared::Stopping for State {
    fn stopping(&self) -> bool {
        self.stopping
    }
}

pub struct FakeS3 {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// The hex MD5 of `data`: the ETag of a single-part upload.
pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeS3 {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::new(State::default()));
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fake-s3-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn acceptor")
        };
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>`: use as `s3_endpoint_override`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores an object; returns its (unquoted) ETag.
    pub fn put(&self, bucket: &str, key: &str, data: Vec<u8>) -> String {
        let etag = md5_hex(&data);
        self.shared
            .lock()
            .objects
            .insert(format!("/{bucket}/{key}"), data);
        etag
    }

    pub fn set_faults(&self, faults: S3Faults) {
        self.shared.lock().faults = faults;
        self.shared.changed.notify_all();
    }

    pub fn requests(&self) -> Vec<S3Request> {
        self.shared.lock().requests.clone()
    }

    /// Waits up to `timeout` until at least `n` requests were answered (or broke off); returns
    /// them. A client can finish reading an answer just before the fake records it.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<S3Request> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.requests.len() < n && Instant::now() < deadline {
            state = self
                .shared
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.requests.clone()
    }

    /// Body bytes sent so far, including answers still streaming.
    pub fn bytes_out(&self) -> usize {
        self.shared.lock().bytes_out
    }
}

impl Drop for FakeS3 {
    fn drop(&mut self) {
        let streams = {
            let mut state = self.shared.lock();
            state.stopping = true;
            std::mem::take(&mut state.streams)
        };
        self.shared.changed.notify_all();
        for s in &streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut state = shared.lock();
        if state.stopping {
            return;
        }
        state.threads.retain(|t| !t.is_finished());
        if let Ok(clone) = stream.try_clone() {
            state.streams.push(clone);
        }
        let conn = Arc::clone(shared);
        let handle = std::thread::Builder::new()
            .name("fake-s3-conn".into())
            .spawn(move || serve(stream, &conn))
            .expect("spawn");
        state.threads.push(handle);
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    // GETs carry no body; anything else is answered 405 below without reading one.
    Some(Request {
        method,
        path,
        headers,
    })
}

/// `bytes=a-b` / `bytes=a-` against `len`: the inclusive range, clamped.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.parse().ok()?;
    let end: usize = if b.is_empty() {
        len.checked_sub(1)?
    } else {
        b.parse::<usize>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

fn head(status: u16, extra: &str, len: usize) -> String {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        412 => "Precondition Failed",
        416 => "Requested Range Not Satisfiable",
        _ => "Method Not Allowed",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nx-amz-request-id: fake-s3\r\nLast-Modified: Sun, 22 Nov 2026 05:00:00 GMT\r\nAccept-Ranges: bytes\r\n{extra}Content-Length: {len}\r\n\r\n"
    )
}

fn error(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    )
}

fn serve(stream: TcpStream, shared: &Arc<Shared>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let mut record = S3Request {
            path: request.path.clone(),
            range: request.header("range").map(str::to_owned),
            if_match: request.header("if-match").map(str::to_owned),
            status: 0,
            bytes_sent: 0,
            complete: false,
        };
        let (object, faults) = {
            let mut state = shared.lock();
            let object = state.objects.get(&request.path).cloned();
            let faults = state.faults.clone();
            if state.faults.truncate_next > 0 && object.is_some() && request.method == "GET" {
                state.faults.truncate_next -= 1;
            }
            (object, faults)
        };
        let keep_going = if request.method != "GET" {
            let body = error("MethodNotAllowed");
            record.status = 405;
            writer
                .write_all(format!("{}{body}", head(405, "", body.len())).as_bytes())
                .is_ok()
        } else if let Some(mut data) = object {
            let etag = faults
                .etag_override
                .clone()
                .unwrap_or_else(|| md5_hex(&data));
            if faults.corrupt
                && let Some(b) = data.first_mut()
            {
                *b ^= 0xff;
            }
            let quoted = format!("\"{etag}\"");
            if record
                .if_match
                .as_deref()
                .is_some_and(|m| m.trim_matches('"') != etag)
            {
                let body = error("PreconditionFailed");
                record.status = 412;
                writer
                    .write_all(format!("{}{body}", head(412, "", body.len())).as_bytes())
                    .is_ok()
            } else {
                let range = record.range.as_deref().map(|r| parse_range(r, data.len()));
                let (status, start, end, extra) = match range {
                    None => (
                        200,
                        0,
                        data.len(),
                        format!("ETag: {quoted}\r\nContent-Type: binary/octet-stream\r\n"),
                    ),
                    Some(Some((a, b))) => (
                        206,
                        a,
                        b + 1,
                        format!(
                            "ETag: {quoted}\r\nContent-Type: binary/octet-stream\r\nContent-Range: bytes {a}-{b}/{}\r\n",
                            data.len()
                        ),
                    ),
                    Some(None) => (416, 0, 0, String::new()),
                };
                record.status = status;
                if status == 416 {
                    let body = error("InvalidRange");
                    writer
                        .write_all(format!("{}{body}", head(416, "", body.len())).as_bytes())
                        .is_ok()
                } else {
                    let body = &data[start..end];
                    let cut = if faults.truncate_next > 0 {
                        body.len() / 2
                    } else {
                        body.len()
                    };
                    let ok = send_body(
                        &mut writer,
                        shared,
                        &head(status, &extra, body.len()),
                        &body[..cut],
                        faults.trickle,
                        &mut record,
                    );
                    record.complete = ok && cut == body.len();
                    ok && cut == body.len()
                }
            }
        } else {
            let body = error("NoSuchKey");
            record.status = 404;
            writer
                .write_all(format!("{}{body}", head(404, "", body.len())).as_bytes())
                .is_ok()
        };
        shared.lock().requests.push(record);
        shared.changed.notify_all();
        if !keep_going {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Writes the head and `body` (in trickled chunks if asked); false when the client went away
/// or the fake is stopping.
fn send_body(
    writer: &mut TcpStream,
    shared: &Shared,
    head: &str,
    body: &[u8],
    trickle: Option<(usize, Duration)>,
    record: &mut S3Request,
) -> bool {
    if writer.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let (chunk, pause) = trickle.unwrap_or((body.len().max(1), Duration::ZERO));
    let parts = body.chunks(chunk.max(1)).count();
    for (i, part) in body.chunks(chunk.max(1)).enumerate() {
        if writer.write_all(part).is_err() || writer.flush().is_err() {
            return false;
        }
        record.bytes_sent += part.len();
        shared.lock().bytes_out += part.len();
        if i + 1 < parts && !pause.is_zero() && !shared.sleep(pause) {
            return false;
        }
    }
    writer.flush().is_ok()
}
