//! A moto_server on 127.0.0.1 for S3 tests: started on a free port in its own process group,
//! killed (and checked gone) on drop. Tests call [`Moto::start`] and return when it gives
//! `None` (moto missing: a skip line on a developer's machine, a failure under `CI=true`;
//! `scripts/test` installs moto).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use codedeploy_agent::revision::s3::{S3Fetcher, S3Settings};

pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// True when `python3 -c 'import moto.server'` works (checked once per test binary).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A running moto_server and an SDK client for seeding it.
pub struct Moto {
    child: Child,
    port: u16,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl Moto {
    /// Starts moto; `None` when moto is not installed, after [`super::require::moto`] printed
    /// the skip line (under `CI=true` it fails the test instead).
    pub fn start() -> Option<Self> {
        if !super::require::moto() {
            return None;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // The free port can be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("python3")
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_DEFAULT_REGION", REGION)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("spawn python3 -m moto.server");
            if wait_listening(&mut child, port) {
                let client = aws_sdk_s3::Client::from_conf(
                    aws_sdk_s3::Config::builder()
                        .behavior_version(BehaviorVersion::latest())
                        .region(Region::new(REGION))
                        .credentials_provider(credentials())
                        .endpoint_url(format!("http://127.0.0.1:{port}"))
                        .force_path_style(true)
                        .http_client(
                            codedeploy_agent::revision::s3::http_client(None).expect("client"),
                        )
                        .build(),
                );
                return Some(Self {
                    child,
                    port,
                    runtime,
                    client,
                });
            }
            kill_group(&mut child);
        }
        panic!("moto_server did not start on any of 3 ports");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// An [`S3Fetcher`] pointed at this server with the test credentials.
    pub fn fetcher(&self) -> S3Fetcher {
        let settings = S3Settings {
            region: REGION.into(),
            endpoint_override: Some(self.url()),
            ..S3Settings::default()
        };
        S3Fetcher::new(settings, credentials(), self.handle()).expect("fetcher")
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.runtime
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .expect("create bucket");
    }

    pub fn enable_versioning(&self, bucket: &str) {
        let config = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        self.runtime
            .block_on(
                self.client
                    .put_bucket_versioning()
                    .bucket(bucket)
                    .versioning_configuration(config)
                    .send(),
            )
            .expect("enable versioning");
    }

    /// Uploads `bytes`; returns (ETag as S3 returns it, version id).
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> (String, Option<String>) {
        self.put(bucket, key, ByteStream::from(bytes.to_vec()))
    }

    /// Uploads a file without reading it into memory.
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) -> (String, Option<String>) {
        let body = self
            .runtime
            .block_on(ByteStream::from_path(path))
            .expect("open upload");
        self.put(bucket, key, body)
    }

    fn put(&self, bucket: &str, key: &str, body: ByteStream) -> (String, Option<String>) {
        let out = self
            .runtime
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body)
                    .send(),
            )
            .expect("put object");
        (
            out.e_tag().expect("etag").to_owned(),
            out.version_id().map(str::to_owned),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        let pid = self.child.id() as libc::pid_t;
        // Processes of the group that died with the leader may take a moment to be reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        let gone = loop {
            // SAFETY: kill with signal 0 only checks whether the process group exists.
            let gone = unsafe { libc::kill(-pid, 0) } != 0
                && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err();
            if gone || Instant::now() > deadline {
                break gone;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !gone && !std::thread::panicking() {
            panic!(
                "moto_server (pid {pid}, port {}) is still running",
                self.port
            );
        }
    }
}

/// Static test credentials, matching the server's environment.
pub fn credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        None,
        None,
        "moto-test",
    ))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits up to 30 s for the server to accept connections; false if it exited or never did.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// KILLs the server's whole process group (werkzeug may fork) and reaps the leader.
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling the process group this test created with `process_group(0)`.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.wait();
}
