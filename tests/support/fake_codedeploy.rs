//! A scripted fake of the public CodeDeploy API (AWS JSON 1.1, `CodeDeploy_20141006.*`) on
//! 127.0.0.1, for what moto does not implement: RegisterApplicationRevision, the deployment
//! target APIs and StopDeployment. The test gives it a script of steps (deployment info +
//! targets); each GetDeployment serves the next step (the last one repeats) and the target
//! calls that follow describe that same step. Every request is recorded.
//!
//! It does not check signatures (`fake_service.rs` does that for the host-commands API; here
//! the SDK signs). It runs on std threads and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The id CreateDeployment hands out.
pub const DEPLOYMENT_ID: &str = "d-FAKE12345";

/// One state of the deployment: its `deploymentInfo` and its `deploymentTargets`.
#[derive(Debug, Clone)]
pub struct Step {
    pub deployment: Value,
    pub targets: Vec<Value>,
}

/// A recorded request: the operation (after the `CodeDeploy_20141006.` prefix) and its body.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub operation: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    steps: Vec<Step>,
    next: usize,
    current: usize,
    after_stop: Option<Vec<Step>>,
    /// (operation, status, error type, message) to fail instead of answering.
    fault: Option<(String, u16, String, String)>,
    requests: Vec<Recorded>,
}

pub struct FakeCodeDeploy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeCodeDeploy {
    /// Starts the fake with its script (at least one step).
    pub fn start(steps: Vec<Step>) -> Self {
        assert!(!steps.is_empty(), "a script needs at least one step");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            steps,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(conn, &state));
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// After a StopDeployment, serve these steps instead.
    pub fn after_stop(&self, steps: Vec<Step>) {
        self.lock().after_stop = Some(steps);
    }

    /// Answer `operation` with an error (`status`, `__type` = `error_type`).
    pub fn fail(&self, operation: &str, status: u16, error_type: &str, message: &str) {
        self.lock().fault = Some((operation.into(), status, error_type.into(), message.into()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_for(&self, operation: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.operation == operation)
            .collect()
    }

    /// Waits until `done` holds for the recorded requests; false on timeout.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.lock().requests) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeCodeDeploy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve(conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut target = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("x-amz-target") {
                    target = value.to_owned();
                } else if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let operation = target
            .strip_prefix("CodeDeploy_20141006.")
            .unwrap_or(&target)
            .to_owned();
        let (status, reply) = answer(state, &operation, body);
        let reply = reply.to_string();
        let reason = if status == 200 { "OK" } else { "Bad Request" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
             x-amzn-RequestId: fake-request\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(state: &Mutex<State>, operation: &str, body: Value) -> (u16, Value) {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.requests.push(Recorded {
        operation: operation.to_owned(),
        body: body.clone(),
    });
    if let Some((op, status, kind, message)) = &s.fault
        && op == operation
    {
        return (*status, json!({"__type": kind, "message": message}));
    }
    match operation {
        "RegisterApplicationRevision" => (200, json!({})),
        "CreateDeployment" => (200, json!({"deploymentId": DEPLOYMENT_ID})),
        "GetDeployment" => {
            let i = s.next.min(s.steps.len() - 1);
            s.current = i;
            s.next = i + 1;
            (200, json!({"deploymentInfo": s.steps[i].deployment}))
        }
        "ListDeploymentTargets" => {
            let ids: Vec<Value> = s.steps[s.current]
                .targets
                .iter()
                .map(|t| t["instanceTarget"]["targetId"].clone())
                .collect();
            (200, json!({"targetIds": ids}))
        }
        "BatchGetDeploymentTargets" => {
            let wanted = body["targetIds"].as_array().cloned().unwrap_or_default();
            let targets: Vec<Value> = s.steps[s.current]
                .targets
                .iter()
                .filter(|t| wanted.contains(&t["instanceTarget"]["targetId"]))
                .cloned()
                .collect();
            (200, json!({"deploymentTargets": targets}))
        }
        "StopDeployment" => {
            if let Some(steps) = s.after_stop.take() {
                s.steps = steps;
                s.next = 0;
                s.current = 0;
            }
            (
                200,
                json!({"status": "Pending", "statusMessage": "Stopping"}),
            )
        }
        _ => (
            400,
            json!({"__type": "UnknownOperationException", "message": format!("the fake does not do {operation}")}),
        ),
    }
}

/// `deploymentInfo` with `status` and an overview of
/// (pending, in progress, succeeded, failed, skipped).
pub fn deployment(status: &str, overview: [i64; 5]) -> Value {
    json!({
        "deploymentId": DEPLOYMENT_ID,
        "applicationName": "app",
        "deploymentGroupName": "group",
        "status": status,
        "deploymentOverview": {
            "Pending": overview[0], "InProgress": overview[1], "Succeeded": overview[2],
            "Failed": overview[3], "Skipped": overview[4], "Ready": 0
        }
    })
}

/// A lifecycle event: name, status, start and end (epoch seconds).
pub fn event(name: &str, status: &str, start: Option<f64>, end: Option<f64>) -> Value {
    let mut e = json!({"lifecycleEventName": name, "status": status});
    if let Some(t) = start {
        e["startTime"] = json!(t);
    }
    if let Some(t) = end {
        e["endTime"] = json!(t);
    }
    e
}

/// An EC2 instance target.
pub fn instance(id: &str, status: &str, events: Vec<Value>) -> Value {
    json!({
        "deploymentTargetType": "InstanceTarget",
        "instanceTarget": {
            "deploymentId": DEPLOYMENT_ID,
            "targetId": id,
            "targetArn": format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}"),
            "status": status,
            "lastUpdatedAt": 1_700_000_000,
            "lifecycleEvents": events
        }
    })
}
