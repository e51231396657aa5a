//! A fake EC2 instance metadata service on 127.0.0.1: a real HTTP/1.1 server on its own std
//! threads (usable from sync and tokio tests). It serves the IMDSv2 token, the metadata paths
//! the agent reads, and `iam/security-credentials/<role>` for the SDK's IMDS credentials
//! provider. Tests switch failures on and off through [`FakeImds::set`] and read back every
//! request it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// `X-aws-ec2-metadata-token`.
    pub token: Option<String>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub ttl: Option<String>,
}

/// Instance-profile credentials served under `iam/security-credentials/<role>`.
#[derive(Debug, Clone)]
pub struct FakeCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    pub expiration: SystemTime,
}

/// Everything the fake answers, and the failures it injects. Change it with [`FakeImds::set`].
#[derive(Debug, Clone)]
pub struct ImdsState {
    /// `Some(code)`: the token PUT answers `code` (503, 404, 403, ...).
    pub token_status: Option<u16>,
    /// Tokenless GETs are answered (IMDSv1); otherwise they get 401.
    pub v1_allowed: bool,
    /// The next N GETs that carry a token get 401, and every issued token is revoked.
    pub unauthorized_gets: u32,
    /// Accept connections, read the request, close without answering.
    pub down: bool,
    /// Pad every metadata body with whitespace and newlines.
    pub pad_bodies: bool,
    /// The next request to each path listed (`*`: any path) is answered 200 with a promised
    /// 1 MB body, then one byte every 200 ms until the client hangs up; one entry is used up
    /// per request.
    pub trickle: Vec<String>,
    /// Trickled answers the client hung up on.
    pub trickles_given_up: u32,
    pub partition: String,
    pub domain: String,
    pub region: String,
    pub account_id: String,
    pub instance_id: String,
    /// Replaces the generated identity document.
    pub document_override: Option<String>,
    pub role: String,
    pub credentials: FakeCredentials,
    issued_tokens: Vec<String>,
    next_token: u32,
    seen: Vec<SeenRequest>,
}

impl Default for ImdsState {
    fn default() -> Self {
        Self {
            token_status: None,
            v1_allowed: true,
            unauthorized_gets: 0,
            down: false,
            pad_bodies: false,
            trickle: Vec::new(),
            trickles_given_up: 0,
            partition: "aws".into(),
            domain: "amazonaws.com".into(),
            region: "us-west-2".into(),
            account_id: "111122223333".into(),
            instance_id: "i-0123456789abcdef0".into(),
            document_override: None,
            role: "agent-role".into(),
            credentials: FakeCredentials {
                access_key_id: "ASIAFIRST".into(),
                secret_access_key: "secret-first".into(),
                token: "session-first".into(),
                expiration: SystemTime::now() + Duration::from_secs(6 * 3600),
            },
            issued_tokens: Vec::new(),
            next_token: 0,
            seen: Vec::new(),
        }
    }
}

/// The running server. Dropping it stops accepting connections.
pub struct FakeImds {
    addr: SocketAddr,
    state: Arc<Mutex<ImdsState>>,
    stop: Arc<AtomicBool>,
}

impl FakeImds {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake IMDS");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(ImdsState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Self { addr, state, stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the server does from now on.
    pub fn set(&self, f: impl FnOnce(&mut ImdsState)) {
        f(&mut self.state.lock().expect("state"));
    }

    /// Serves new instance-profile credentials from now on.
    pub fn rotate_credentials(&self, access_key_id: &str, expires_in: Duration) {
        self.set(|s| {
            s.credentials = FakeCredentials {
                access_key_id: access_key_id.into(),
                secret_access_key: format!("secret-{access_key_id}"),
                token: format!("session-{access_key_id}"),
                expiration: SystemTime::now() + expires_in,
            }
        });
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.state.lock().expect("state").seen.clone()
    }

    /// Waits up to `timeout` until the client hung up on `n` trickled answers
    /// ([`ImdsState::trickle`]); returns how many it hung up on.
    pub fn wait_trickles_given_up(&self, n: u32, timeout: Duration) -> u32 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let given_up = self.state.lock().expect("state").trickles_given_up;
            if given_up >= n || std::time::Instant::now() >= deadline {
                return given_up;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn clear_requests(&self) {
        self.state.lock().expect("state").seen.clear();
    }

    /// How many token PUTs arrived.
    pub fn token_puts(&self) -> usize {
        self.count("PUT", "/latest/api/token")
    }

    /// How many requests with this method and path arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, state: &Mutex<ImdsState>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut token = None;
    let mut ttl = None;
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim().to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "x-aws-ec2-metadata-token" => token = Some(value),
                "x-aws-ec2-metadata-token-ttl-seconds" => ttl = Some(value),
                "content-length" => content_length = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; content_length];
    let _ = reader.read_exact(&mut body);

    let (status, extra_headers, body, down) = {
        let mut s = state.lock().expect("state");
        s.seen.push(SeenRequest {
            method: method.clone(),
            path: path.clone(),
            token: token.clone(),
            ttl: ttl.clone(),
        });
        if let Some(i) = s.trickle.iter().position(|p| p == &path || p == "*") {
            s.trickle.remove(i);
            drop(s);
            trickle(conn, state);
            return;
        }
        if s.down {
            (0, Vec::new(), String::new(), true)
        } else {
            let (status, headers, body) = answer(&mut s, &method, &path, token.as_deref());
            (status, headers, body, false)
        }
    };
    if down {
        return;
    }
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let mut conn = conn;
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

/// A 200 head promising 1 MB, then a byte every 200 ms (no read of the client's waits
/// anywhere near a timeout) until the client hangs up.
fn trickle(mut conn: TcpStream, state: &Mutex<ImdsState>) {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n";
    if conn.write_all(head).is_err() {
        return;
    }
    for _ in 0..1_000_000 {
        if conn.write_all(b"x").and_then(|()| conn.flush()).is_err() {
            state.lock().expect("state").trickles_given_up += 1;
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn answer(
    s: &mut ImdsState,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    if path == "/latest/api/token" {
        if method != "PUT" {
            return (405, Vec::new(), String::new());
        }
        if let Some(code) = s.token_status {
            return (code, Vec::new(), String::new());
        }
        s.next_token += 1;
        let t = format!("token-{}", s.next_token);
        s.issued_tokens.push(t.clone());
        return (
            200,
            vec![(
                "x-aws-ec2-metadata-token-ttl-seconds".into(),
                "21600".into(),
            )],
            t,
        );
    }
    if method != "GET" {
        return (405, Vec::new(), String::new());
    }
    match token {
        Some(t) => {
            if s.unauthorized_gets > 0 {
                s.unauthorized_gets -= 1;
                s.issued_tokens.clear();
                return (401, Vec::new(), String::new());
            }
            if !s.issued_tokens.iter().any(|i| i == t) {
                return (401, Vec::new(), String::new());
            }
        }
        None if !s.v1_allowed => return (401, Vec::new(), String::new()),
        None => {}
    }
    let body = match path {
        "/latest/meta-data" | "/latest/meta-data/" => {
            "ami-id\ninstance-id\niam/\nservices/".to_owned()
        }
        "/latest/meta-data/services/partition" => s.partition.clone(),
        "/latest/meta-data/services/domain" => s.domain.clone(),
        "/latest/meta-data/instance-id" => s.instance_id.clone(),
        "/latest/dynamic/instance-identity/document" => s.document_override.clone().unwrap_or_else(|| {
            format!(
                "{{\n  \"accountId\" : \"{}\",\n  \"architecture\" : \"x86_64\",\n  \"availabilityZone\" : \"{}a\",\n  \"instanceId\" : \"{}\",\n  \"instanceType\" : \"t3.micro\",\n  \"region\" : \"{}\"\n}}",
                s.account_id, s.region, s.instance_id, s.region
            )
        }),
        "/latest/meta-data/iam/security-credentials/"
        | "/latest/meta-data/iam/security-credentials" => s.role.clone(),
        p if p == format!("/latest/meta-data/iam/security-credentials/{}", s.role) => {
            let c = &s.credentials;
            let now = rfc3339(SystemTime::now());
            return (
                200,
                Vec::new(),
                format!(
                    "{{\"Code\":\"Success\",\"LastUpdated\":\"{now}\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\",\"Token\":\"{}\",\"Expiration\":\"{}\"}}",
                    c.access_key_id,
                    c.secret_access_key,
                    c.token,
                    rfc3339(c.expiration)
                ),
            );
        }
        _ => return (404, Vec::new(), String::new()),
    };
    let body = if s.pad_bodies {
        format!("  \n{body}\n \t\n")
    } else {
        body
    };
    (200, Vec::new(), body)
}

fn rfc3339(t: SystemTime) -> String {
    aws_smithy_types::DateTime::from(t)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .expect("format time")
}
