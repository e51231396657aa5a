//! A fake CodeDeploy host-commands service: a real HTTP/1.1 server on 127.0.0.1 that checks
//! every request's SigV4 signature and `X-Amz-Target`, serves queued commands and registered
//! deployment specifications, records what it was sent, and injects faults on demand.
//!
//! It runs on its own std threads, so it works from plain `#[test]`s and from `#[tokio::test]`s
//! alike, and it stops (joining every thread) when dropped.
//!
//! ```ignore
//! let fake = FakeService::start();
//! fake.enqueue(HOST, command("hc-1", "DownloadBundle", HOST, EXECUTION_ID));
//! let client = HttpHostCommands::new(fake.client_config(), fake.provider())?;
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use codedeploy_agent::control::client::ClientConfig;
use codedeploy_agent::control::endpoint::ServiceVariant;
use codedeploy_agent::control::{Envelope, HostCommand};
use serde_json::{Value, json};

/// The access key the fake accepts by default.
pub const ACCESS_KEY: &str = "AKIDFAKESERVICE0001";
/// Its secret.
pub const SECRET_KEY: &str = "fake/secret/key/0001/wJalrXUtnFEMIK7MDENG";
/// The version header `client_config()` puts in.
pub const TEST_AGENT_VERSION: &str = "COMMIT_fakeservice";

/// One set of credentials the fake accepts. With a session token, requests must carry it in
/// `X-Amz-Security-Token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCredentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl TestCredentials {
    pub fn new(access_key: &str, secret_key: &str) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            session_token: None,
        }
    }

    pub fn with_session_token(mut self, token: &str) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// The same credentials as the AWS type, for a provider.
    pub fn to_aws(&self) -> Credentials {
        Credentials::new(
            self.access_key.clone(),
            self.secret_key.clone(),
            self.session_token.clone(),
            None,
            "fake-service",
        )
    }

    /// A static provider with these credentials.
    pub fn provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(self.to_aws())
    }
}

/// What the fake expects of requests.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The region the credential scope must name.
    pub region: String,
    /// The service the credential scope must name.
    pub signing_name: String,
    /// The `X-Amz-Target` prefix (`<prefix>.<Operation>`).
    pub target_prefix: String,
    /// Every accepted key; the first is what `provider()` hands out.
    pub credentials: Vec<TestCredentials>,
    /// How far `X-Amz-Date` may be from now (5 minutes, like AWS); `None` skips the check,
    /// for replaying recorded requests.
    pub max_clock_skew: Option<Duration>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self::for_variant(ServiceVariant::Default)
    }
}

impl FakeConfig {
    /// `us-east-1`, the variant's signing name and prefix, the default test key.
    pub fn for_variant(variant: ServiceVariant) -> Self {
        Self {
            region: "us-east-1".into(),
            signing_name: variant.signing_name().into(),
            target_prefix: variant.target_prefix().into(),
            credentials: vec![TestCredentials::new(ACCESS_KEY, SECRET_KEY)],
            max_clock_skew: Some(Duration::from_secs(300)),
        }
    }

    /// The `enable_auth_policy` variant.
    pub fn secure() -> Self {
        Self::for_variant(ServiceVariant::Secure)
    }

    pub fn region(mut self, region: &str) -> Self {
        self.region = region.into();
        self
    }

    pub fn credentials(mut self, credentials: Vec<TestCredentials>) -> Self {
        self.credentials = credentials;
        self
    }
}

/// A fault to inject instead of (or before) the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500 `ServerException` (namespaced `__type`, as AWS JSON services send it).
    ServerError,
    /// HTTP 400 `{"__type":"ThrottlingException","message":"Rate exceeded"}`.
    Throttle,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Close the connection without answering.
    Drop,
    /// Wait (past the client's timeout), then close without answering. The request is not
    /// applied.
    Stall(Duration),
    /// Start a 200 answer (head and a few bytes of the body), then reset the connection
    /// (RST, `SO_LINGER` 0) mid-response. The request is not applied.
    Reset,
    /// Apply the request (an ack or complete is recorded, a command is handed out), then hold
    /// the answer for the duration (or until the service stops) before sending it: with a
    /// duration past the client's read timeout, the service has accepted what the client
    /// never hears about.
    AnswerLate(Duration),
    /// Send a 200 head promising a body, then one byte of it every interval, for ever (until
    /// the client gives up or the service stops): each read is quick, the whole never ends.
    /// The request is not applied.
    Trickle(Duration),
    /// A JSON error answer `{"__type": code, "message": message}` with `status`, the request
    /// not applied.
    Reject {
        status: u16,
        code: String,
        message: String,
    },
    /// A non-JSON answer with `status` (a proxy's or load balancer's HTML page).
    Html(u16),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The operation named by `X-Amz-Target` (after the last `.`), or the whole header value.
    pub operation: String,
    pub target: String,
    pub method: String,
    /// The request target as sent (`/`, or an absolute URL through a proxy).
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub raw_body: String,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The access key of the Authorization header, if it parsed.
    pub access_key: Option<String>,
    pub at: Instant,
    /// The HTTP status answered; 0 when the connection was dropped.
    pub status: u16,
    /// The error code answered, if any.
    pub error: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `SignedHeaders=` list of the Authorization header.
    pub fn signed_headers(&self) -> Vec<String> {
        self.header("authorization")
            .and_then(|a| parse_authorization(a).ok())
            .map(|p| p.signed_headers.split(';').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The `Credential=` scope: `<date>/<region>/<service>/aws4_request`.
    pub fn credential_scope(&self) -> Option<String> {
        let auth = parse_authorization(self.header("authorization")?).ok()?;
        Some(format!(
            "{}/{}/{}/aws4_request",
            auth.date, auth.region, auth.service
        ))
    }
}

/// An accepted `PutHostCommandAcknowledgement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub host_command_identifier: String,
    pub diagnostics: Option<Envelope>,
    /// The `CommandStatus` the fake answered.
    pub answered: Option<String>,
}

/// An accepted `PutHostCommandComplete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    pub host_command_identifier: String,
    pub command_status: String,
    pub diagnostics: Option<Envelope>,
}

struct FaultRule {
    operation: Option<String>,
    fault: Fault,
    remaining: usize,
}

#[derive(Default)]
struct State {
    config: FakeConfig,
    queues: HashMap<String, VecDeque<HostCommand>>,
    specs: HashMap<String, (String, Envelope)>,
    ack_default: Option<String>,
    ack_overrides: HashMap<String, Option<String>>,
    long_poll: Duration,
    faults: Vec<FaultRule>,
    records: Vec<Recorded>,
    acks: Vec<Ack>,
    completes: Vec<Complete>,
    streams: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    /// When each command was enqueued, and when its first acknowledgement arrived.
    enqueued_at: HashMap<String, Instant>,
    acked_at: HashMap<String, Instant>,
    /// When each host's first `PollHostCommand` arrived.
    first_polls: HashMap<String, Instant>,
    /// When each request arrived (a held poll is in here before it is answered and recorded).
    arrivals: Vec<Instant>,
    /// The operation and raw body of every request as it arrived (before it is answered).
    arrived: Vec<(String, String)>,
    /// Connections being served right now, and the most there ever were at once.
    open_connections: usize,
    max_open_connections: usize,
    /// `PollHostCommand`s being held open right now, and the most at once.
    held_polls: usize,
    max_held_polls: usize,
    stopping: bool,
    request_counter: u64,
    /// The fake's clock is this many seconds ahead of the real one (negative: behind): it
    /// checks signatures' times and sends `Date` headers by it.
    clock_offset_secs: i64,
}

type Shared = super::shared::Shared<State>;

impl super::shared::Stopping for State {
    fn stopping(&self) -> bool {
        self.stopping
    }
}

/// The running fake. Dropping it stops the server and joins its threads.
pub struct FakeService {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeService {
    /// Default variant, `us-east-1`, the default test key.
    pub fn start() -> Self {
        Self::start_with(FakeConfig::default())
    }

    pub fn start_with(config: FakeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::new(State {
            config,
            ack_default: Some("InProgress".into()),
            ..State::default()
        }));
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fake-service-accept".into())
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn acceptor")
        };
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: use as `deploy_control_endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> FakeConfig {
        self.shared.lock().config.clone()
    }

    /// The first accepted credentials.
    pub fn credentials(&self) -> TestCredentials {
        self.shared.lock().config.credentials[0].clone()
    }

    /// A static provider with the first accepted credentials.
    pub fn provider(&self) -> SharedCredentialsProvider {
        self.credentials().provider()
    }

    /// A client configuration aimed at this fake: its URL, region and variant (by target
    /// prefix), `TEST_AGENT_VERSION`, and a 10 s read timeout.
    pub fn client_config(&self) -> ClientConfig {
        let config = self.config();
        let variant = if config.target_prefix == ServiceVariant::Secure.target_prefix() {
            ServiceVariant::Secure
        } else {
            ServiceVariant::Default
        };
        ClientConfig {
            read_timeout: Duration::from_secs(10),
            ..ClientConfig::new(self.url(), config.region, variant, TEST_AGENT_VERSION)
        }
    }

    /// Accepts another key from now on (rotation).
    pub fn add_credentials(&self, credentials: TestCredentials) {
        self.shared.lock().config.credentials.push(credentials);
    }

    /// Stops accepting a key.
    pub fn revoke_credentials(&self, access_key: &str) {
        self.shared
            .lock()
            .config
            .credentials
            .retain(|c| c.access_key != access_key);
    }

    /// Queues a command for `host`; wakes a held long poll.
    pub fn enqueue(&self, host: &str, command: HostCommand) {
        let mut state = self.shared.lock();
        state
            .enqueued_at
            .insert(command.host_command_identifier.clone(), Instant::now());
        state
            .queues
            .entry(host.into())
            .or_default()
            .push_back(command);
        drop(state);
        self.shared.changed.notify_all();
    }

    /// For every acknowledged command that was enqueued here: the time from `enqueue` to its
    /// first acknowledgement (the pickup latency), by command identifier.
    pub fn pickup_latencies(&self) -> HashMap<String, Duration> {
        let state = self.shared.lock();
        state
            .acked_at
            .iter()
            .filter_map(|(id, acked)| {
                let queued = state.enqueued_at.get(id)?;
                Some((id.clone(), acked.saturating_duration_since(*queued)))
            })
            .collect()
    }

    /// When each host's first poll arrived (recorded on arrival, before a long poll ends).
    pub fn first_polls(&self) -> HashMap<String, Instant> {
        self.shared.lock().first_polls.clone()
    }

    /// The most connections served at once, and the most `PollHostCommand`s held open at once.
    pub fn concurrency_peaks(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.max_open_connections, state.max_held_polls)
    }

    /// Accepted completes, without cloning the request log: cheap enough to call often.
    pub fn complete_count(&self) -> usize {
        self.shared.lock().completes.len()
    }

    /// Accepted completes from index `from` on.
    pub fn completes_since(&self, from: usize) -> Vec<Complete> {
        let state = self.shared.lock();
        state
            .completes
            .get(from..)
            .map(<[Complete]>::to_vec)
            .unwrap_or_default()
    }

    /// How many requests arrived, in all.
    pub fn request_count(&self) -> usize {
        self.shared.lock().records.len()
    }

    /// Arrival times of every request, in order of arrival, including requests still being
    /// answered (held polls).
    pub fn request_times(&self) -> Vec<Instant> {
        self.shared.lock().arrivals.clone()
    }

    /// How many requests have arrived, including those still being answered.
    pub fn arrival_count(&self) -> usize {
        self.shared.lock().arrivals.len()
    }

    /// Whether a request for `operation` whose body contains `needle` has arrived, answered
    /// or still being answered (a stalled call is seen here at once, in `requests` only later).
    pub fn has_arrived(&self, operation: &str, needle: &str) -> bool {
        self.shared
            .lock()
            .arrived
            .iter()
            .any(|(op, body)| op == operation && body.contains(needle))
    }

    /// Commands still queued for `host`.
    pub fn queued(&self, host: &str) -> usize {
        self.shared.lock().queues.get(host).map_or(0, VecDeque::len)
    }

    /// What `GetDeploymentSpecification` answers for `execution_id`.
    pub fn set_spec(&self, execution_id: &str, deployment_system: &str, envelope: Envelope) {
        self.shared
            .lock()
            .specs
            .insert(execution_id.into(), (deployment_system.into(), envelope));
    }

    /// The `CommandStatus` acks answer by default (`InProgress` unless changed; `None` answers
    /// `{}`).
    pub fn set_default_ack_status(&self, status: Option<&str>) {
        self.shared.lock().ack_default = status.map(str::to_owned);
    }

    /// The `CommandStatus` the ack of `command_id` answers.
    pub fn set_ack_status(&self, command_id: &str, status: Option<&str>) {
        self.shared
            .lock()
            .ack_overrides
            .insert(command_id.into(), status.map(str::to_owned));
    }

    /// Holds an empty `PollHostCommand` open up to `hold`, answering as soon as a command is
    /// enqueued for the host. Zero (the default) answers at once.
    pub fn set_long_poll(&self, hold: Duration) {
        self.shared.lock().long_poll = hold;
    }

    /// Applies `fault` to the next `times` requests of `operation` (`None`: any operation).
    /// Rules are consumed in the order they were added; an operation-specific rule and an
    /// any-operation rule both match, whichever was added first wins.
    pub fn inject(&self, operation: Option<&str>, fault: Fault, times: usize) {
        self.shared.lock().faults.push(FaultRule {
            operation: operation.map(str::to_owned),
            fault,
            remaining: times,
        });
    }

    /// Sets the fake's clock `secs` ahead of the real one (negative: behind).
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.lock().clock_offset_secs = secs;
    }

    /// The next `times` `PutHostCommandComplete`s hang for `stall` (pick more than the
    /// client's read timeout) and then get their connection closed, unapplied.
    pub fn time_out_completes(&self, times: usize, stall: Duration) {
        self.inject(Some("PutHostCommandComplete"), Fault::Stall(stall), times);
    }

    /// Drops every pending fault rule.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request received, in order, whatever was answered.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().records.clone()
    }

    /// Requests for one operation.
    pub fn requests_for(&self, operation: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    /// Acknowledgements answered with success.
    pub fn acks(&self) -> Vec<Ack> {
        self.shared.lock().acks.clone()
    }

    /// Completes answered with success.
    pub fn completes(&self) -> Vec<Complete> {
        self.shared.lock().completes.clone()
    }

    /// Waits until `done(requests)` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.records) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until the agent has gone quiet: no `PutHostCommandComplete` has arrived (answered
    /// or not) for `quiet`, and a poll arrived after the last one (the loop went round). Pick
    /// `quiet` longer than the agent's whole wait between report attempts. Returns the
    /// accepted completes; panics with the request log after `timeout`.
    pub fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Vec<Complete> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            let now = Instant::now();
            let last_complete = state
                .records
                .iter()
                .rev()
                .find(|r| r.operation == "PutHostCommandComplete")
                .map(|r| r.at);
            let polled_after = state.records.iter().any(|r| {
                r.operation == "PollHostCommand" && last_complete.is_none_or(|at| r.at > at)
            });
            let quiet_for = last_complete.map_or(quiet, |at| now.saturating_duration_since(at));
            if quiet_for >= quiet && polled_after {
                return state.completes.clone();
            }
            if now >= deadline {
                panic!(
                    "the agent did not go quiet for {quiet:?} within {timeout:?}; requests:\n{}",
                    state
                        .records
                        .iter()
                        .map(|r| format!("{} {} {}", r.operation, r.status, r.raw_body))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            let wake = (quiet - quiet_for.min(quiet)).max(Duration::from_millis(10));
            state = self
                .shared
                .changed
                .wait_timeout(state, wake.min(deadline - now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for at least `n` accepted completes; panics with the request log on timeout.
    pub fn wait_for_completes(&self, n: usize, timeout: Duration) -> Vec<Complete> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.completes.len() >= n {
                return state.completes.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let log: Vec<String> = state
                    .records
                    .iter()
                    .map(|r| format!("{} {} {}", r.operation, r.status, r.raw_body))
                    .collect();
                panic!(
                    "expected {n} completes within {timeout:?}, got {}; requests:\n{}",
                    state.completes.len(),
                    log.join("\n")
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for FakeService {
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
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut self.shared.lock().threads);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
        state.open_connections += 1;
        state.max_open_connections = state.max_open_connections.max(state.open_connections);
        let peer = stream.peer_addr().ok();
        let conn_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("fake-service-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_connection(stream, &conn_shared);
                let mut state = conn_shared.lock();
                state.open_connections -= 1;
                // Its clone (kept for shutting down on drop) goes too, so a long run with
                // many reconnecting clients does not pile up open sockets.
                if peer.is_some() {
                    state.streams.retain(|s| s.peer_addr().ok() != peer);
                }
            })
            .expect("spawn connection thread");
        state.threads.push(handle);
    }
}

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
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
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

enum Answer {
    Respond { status: u16, body: Value },
    Html { status: u16 },
    Close,
    Reset,
    Trickle(Duration),
}

/// Sends the start of a 200 answer, then resets the connection.
fn reset_mid_response(shared: &Shared, mut writer: TcpStream) {
    // The RST goes out when the last descriptor of the socket closes: drop the clone kept
    // for shutting down on drop too.
    if let Ok(peer) = writer.peer_addr() {
        shared
            .lock()
            .streams
            .retain(|s| s.peer_addr().ok() != Some(peer));
    }
    let _ = writer.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 400\r\n\r\n{\"HostComm",
    );
    let _ = writer.flush();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&writer),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(writer);
}

fn serve_connection(stream: TcpStream, shared: &Arc<Shared>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handle(shared, request) {
            Answer::Respond { status, body } => {
                let request_id = {
                    let mut state = shared.lock();
                    state.request_counter += 1;
                    format!("fake-{:08}", state.request_counter)
                };
                let body = body.to_string();
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nx-amzn-RequestId: {request_id}\r\nDate: {}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
                    reason(status),
                    http_date(fake_now(shared)),
                    body.len()
                );
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(body.as_bytes()).is_err()
                    || writer.flush().is_err()
                {
                    break;
                }
                if close {
                    let _ = writer.shutdown(Shutdown::Both);
                    break;
                }
            }
            Answer::Html { status } => {
                let body = format!(
                    "<html><body><h1>{status} {}</h1></body></html>",
                    reason(status)
                );
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
                    reason(status),
                    body.len()
                );
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(body.as_bytes());
                let _ = writer.flush();
                if close {
                    let _ = writer.shutdown(Shutdown::Both);
                    break;
                }
            }
            Answer::Close => {
                let _ = writer.shutdown(Shutdown::Both);
                break;
            }
            Answer::Reset => {
                drop(reader);
                reset_mid_response(shared, writer);
                break;
            }
            Answer::Trickle(every) => {
                let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1000000\r\n\r\n";
                if writer.write_all(head).is_err() {
                    break;
                }
                // A JSON string that never closes; stops when the client hangs up.
                let mut bytes = b"{\"HostCommand\":\""
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(b'x'));
                while shared.sleep(every) {
                    let byte = [bytes.next().unwrap_or(b'x')];
                    if writer
                        .write_all(&byte)
                        .and_then(|()| writer.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                let _ = writer.shutdown(Shutdown::Both);
                break;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn error_body(code: &str, message: &str) -> Value {
    json!({ "__type": code, "message": message })
}

fn handle(shared: &Shared, request: HttpRequest) -> Answer {
    let target = request.header("x-amz-target").unwrap_or("").to_owned();
    let operation = target.rsplit('.').next().unwrap_or("").to_owned();
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let mut record = Recorded {
        operation: operation.clone(),
        target: target.clone(),
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        raw_body: String::from_utf8_lossy(&request.body).into_owned(),
        body: body.clone(),
        access_key: request
            .header("authorization")
            .and_then(|a| parse_authorization(a).ok())
            .map(|a| a.access_key),
        at: Instant::now(),
        status: 0,
        error: None,
    };
    {
        let mut state = shared.lock();
        state.arrivals.push(record.at);
        state
            .arrived
            .push((operation.clone(), record.raw_body.clone()));
    }
    shared.changed.notify_all();
    let answer = answer(shared, &request, &target, &operation, &body);
    if let Answer::Respond { status, body } = &answer {
        record.status = *status;
        if *status != 200 {
            record.error = body["__type"].as_str().map(str::to_owned);
        }
    }
    if let Answer::Html { status } = &answer {
        record.status = *status;
    }
    shared.lock().records.push(record);
    shared.changed.notify_all();
    answer
}

fn reject(status: u16, code: &str, message: &str) -> Answer {
    Answer::Respond {
        status,
        body: error_body(code, message),
    }
}

fn answer(
    shared: &Shared,
    request: &HttpRequest,
    target: &str,
    operation: &str,
    body: &Value,
) -> Answer {
    let config = shared.lock().config.clone();
    if let Err((code, message)) = verify_signature(&config, request, fake_now(shared)) {
        return reject(403, &code, &message);
    }
    if request.method != "POST" {
        return reject(400, "UnknownOperationException", "only POST is supported");
    }
    let prefix_ok = target
        .strip_prefix(config.target_prefix.as_str())
        .is_some_and(|rest| rest.starts_with('.'));
    if !prefix_ok {
        return reject(400, "UnknownOperationException", "");
    }
    if request.header("content-type") != Some("application/x-amz-json-1.1") {
        return reject(
            400,
            "SerializationException",
            "expected Content-Type application/x-amz-json-1.1",
        );
    }

    // Faults.
    let fault = {
        let mut state = shared.lock();
        let rule = state
            .faults
            .iter_mut()
            .find(|r| r.remaining > 0 && r.operation.as_deref().is_none_or(|op| op == operation));
        let fault = rule.map(|r| {
            r.remaining -= 1;
            r.fault.clone()
        });
        state.faults.retain(|r| r.remaining > 0);
        fault
    };
    match fault.clone() {
        Some(Fault::ServerError) => {
            return reject(
                500,
                "com.amazonaws.codedeploy.commands#ServerException",
                "Internal server error (injected)",
            );
        }
        Some(Fault::Throttle) => return reject(400, "ThrottlingException", "Rate exceeded"),
        Some(Fault::Reject {
            status,
            code,
            message,
        }) => return reject(status, &code, &message),
        Some(Fault::Html(status)) => return Answer::Html { status },
        Some(Fault::Drop) => return Answer::Close,
        Some(Fault::Reset) => return Answer::Reset,
        Some(Fault::Stall(d)) => {
            shared.sleep(d);
            return Answer::Close;
        }
        Some(Fault::Trickle(d)) => return Answer::Trickle(d),
        // Sleep, then answer normally unless the service is stopping.
        Some(Fault::Delay(d)) if !shared.sleep(d) => return Answer::Close,
        Some(Fault::Delay(_) | Fault::AnswerLate(_)) | None => {}
    }
    let answer = apply(shared, operation, body);
    if let Some(Fault::AnswerLate(d)) = fault
        && !shared.sleep(d)
    {
        return Answer::Close;
    }
    answer
}

/// The normal answer to a well-formed, authenticated request.
fn apply(shared: &Shared, operation: &str, body: &Value) -> Answer {
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let envelope = |name: &str| -> Option<Envelope> {
        body.get(name)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    };
    let ok = |body: Value| Answer::Respond { status: 200, body };
    match operation {
        "PollHostCommand" => {
            let Some(host) = text("HostIdentifier") else {
                return reject(400, "ClientException", "HostIdentifier is required");
            };
            let mut state = shared.lock();
            let deadline = Instant::now() + state.long_poll;
            state
                .first_polls
                .entry(host.clone())
                .or_insert_with(Instant::now);
            let mut held = false;
            loop {
                let next = state.queues.get_mut(&host).and_then(VecDeque::pop_front);
                let now = Instant::now();
                if next.is_some() || now >= deadline || state.stopping {
                    if held {
                        state.held_polls -= 1;
                    }
                    return match next {
                        Some(cmd) => {
                            let value = serde_json::to_value(cmd).expect("HostCommand serialises");
                            ok(json!({ "HostCommand": value }))
                        }
                        None => ok(json!({})),
                    };
                }
                if !held {
                    held = true;
                    state.held_polls += 1;
                    state.max_held_polls = state.max_held_polls.max(state.held_polls);
                }
                state = shared
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        "GetDeploymentSpecification" => {
            let (Some(id), Some(_host)) = (text("DeploymentExecutionId"), text("HostIdentifier"))
            else {
                return reject(
                    400,
                    "ClientException",
                    "DeploymentExecutionId and HostIdentifier are required",
                );
            };
            let spec = shared.lock().specs.get(&id).cloned();
            match spec {
                Some((system, envelope)) => ok(json!({
                    "DeploymentSystem": system,
                    "DeploymentSpecification": { "GenericEnvelope": envelope },
                })),
                None => reject(
                    400,
                    "ClientException",
                    &format!("no deployment specification for {id}"),
                ),
            }
        }
        "PutHostCommandAcknowledgement" => {
            let Some(id) = text("HostCommandIdentifier") else {
                return reject(400, "ClientException", "HostCommandIdentifier is required");
            };
            let mut state = shared.lock();
            state
                .acked_at
                .entry(id.clone())
                .or_insert_with(Instant::now);
            let answered = state
                .ack_overrides
                .get(&id)
                .cloned()
                .unwrap_or_else(|| state.ack_default.clone());
            state.acks.push(Ack {
                host_command_identifier: id,
                diagnostics: envelope("Diagnostics"),
                answered: answered.clone(),
            });
            match answered {
                Some(s) => ok(json!({ "CommandStatus": s })),
                None => ok(json!({})),
            }
        }
        "PutHostCommandComplete" => {
            let (Some(id), Some(status)) = (text("HostCommandIdentifier"), text("CommandStatus"))
            else {
                return reject(
                    400,
                    "ClientException",
                    "HostCommandIdentifier and CommandStatus are required",
                );
            };
            shared.lock().completes.push(Complete {
                host_command_identifier: id,
                command_status: status,
                diagnostics: envelope("Diagnostics"),
            });
            ok(json!({}))
        }
        "PostHostCommandUpdate" => ok(json!({ "CommandStatus": "InProgress" })),
        _ => reject(400, "UnknownOperationException", ""),
    }
}

struct Authorization {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: String,
    signature: String,
}

fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires AWS4-HMAC-SHA256")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'".into(),
        );
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(format!("malformed Credential scope: {credential}"));
    };
    if terminator != "aws4_request" {
        return Err(format!(
            "Credential should end with aws4_request: {credential}"
        ));
    }
    Ok(Authorization {
        access_key: access_key.into(),
        date: date.into(),
        region: region.into(),
        service: service.into(),
        signed_headers: signed_headers.into(),
        signature: signature.into(),
    })
}

/// Recomputes the request's SigV4 signature with aws-sigv4. `Err((code, message))` on failure.
fn verify_signature(
    config: &FakeConfig,
    request: &HttpRequest,
    now: SystemTime,
) -> Result<(), (String, String)> {
    let fail = |code: &str, message: String| Err((code.to_owned(), message));
    let Some(header) = request.header("authorization") else {
        return fail(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        );
    };
    let auth = match parse_authorization(header) {
        Ok(a) => a,
        Err(m) => return fail("IncompleteSignatureException", m),
    };
    let Some(known) = config
        .credentials
        .iter()
        .find(|c| c.access_key == auth.access_key)
    else {
        return fail(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        );
    };
    if let Some(token) = &known.session_token
        && request.header("x-amz-security-token") != Some(token.as_str())
    {
        return fail(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        );
    }
    if auth.region != config.region {
        return fail(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region, not '{}'.",
                auth.region
            ),
        );
    }
    if auth.service != config.signing_name {
        return fail(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: '{}'.",
                config.signing_name
            ),
        );
    }
    let Some(amz_date) = request.header("x-amz-date") else {
        return fail(
            "IncompleteSignatureException",
            "X-Amz-Date is required".into(),
        );
    };
    let Some(time) = parse_amz_date(amz_date) else {
        return fail(
            "IncompleteSignatureException",
            format!("bad X-Amz-Date {amz_date}"),
        );
    };
    if !amz_date.starts_with(&auth.date) {
        return fail(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date".into(),
        );
    }
    let skew = match now.duration_since(time) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if config.max_clock_skew.is_some_and(|max| skew > max) {
        return fail(
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is now earlier than the service's time minus 5 min."
            ),
        );
    }
    let mut signed = Vec::new();
    for name in auth.signed_headers.split(';') {
        let Some(value) = request.header(name) else {
            return fail(
                "InvalidSignatureException",
                format!("signed header {name} is missing"),
            );
        };
        signed.push((name.to_owned(), value.to_owned()));
    }
    let Some(host) = request.header("host") else {
        return fail("InvalidSignatureException", "no Host header".into());
    };
    // Through a proxy the request target is absolute; the signature covers the path only.
    let path = match request.path.parse::<http::Uri>() {
        Ok(uri) => uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        Err(_) => request.path.clone(),
    };
    let uri = format!("http://{host}{path}");
    let identity: Identity = Credentials::new(
        known.access_key.clone(),
        known.secret_key.clone(),
        None,
        None,
        "fake-service",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(&auth.service)
        .time(time)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = match SignableRequest::new(
        &request.method,
        uri,
        signed.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(&request.body),
    ) {
        Ok(s) => s,
        Err(e) => return fail("InvalidSignatureException", e.to_string()),
    };
    let expected = match sign(signable, &params) {
        Ok(out) => out.into_parts().1,
        Err(e) => return fail("InvalidSignatureException", e.to_string()),
    };
    if expected != auth.signature {
        return fail(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
        );
    }
    Ok(())
}

/// The fake's clock: the real one plus the configured offset.
fn fake_now(shared: &Shared) -> SystemTime {
    let offset = shared.lock().clock_offset_secs;
    let now = SystemTime::now();
    let d = Duration::from_secs(offset.unsigned_abs());
    if offset >= 0 { now + d } else { now - d }
}

/// `t` as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)],
        MONTHS[usize::try_from(m - 1).unwrap_or(0)],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `YYYYMMDDTHHMMSSZ` as a UTC time.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { value.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// A `HostCommand` for tests.
pub fn command(id: &str, name: &str, host: &str, execution_id: &str) -> HostCommand {
    HostCommand {
        host_command_identifier: id.into(),
        host_identifier: Some(host.into()),
        deployment_execution_id: Some(execution_id.into()),
        command_name: Some(name.into()),
        nonce: Some(0),
    }
}
