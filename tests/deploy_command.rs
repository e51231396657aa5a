//! `codedeploy-agent deploy`, the real binary: bundle + upload + create against moto_server
//! (S3 and the CodeDeploy calls moto implements), and registration, following, failure
//! diagnostics, Ctrl-C and exit codes against the scripted fake in
//! `support/fake_codedeploy.rs` (with moto as the S3). Only loopback is reached.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_codedeploy::config::{BehaviorVersion, Region};
use codedeploy_agent::revision::archive::{self, UnpackOptions};
use codedeploy_agent::revision::s3::S3Object;
use support::fake_codedeploy::{self as fake, DEPLOYMENT_ID, FakeCodeDeploy, Step};
use support::moto::{self, Moto};
use support::{Run, bin};

const APPSPEC: &str = "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: /var/www/app\nhooks:\n  AfterInstall:\n    - location: scripts/after.sh\n      timeout: 60\n";

/// A valid bundle directory; `extra` adds files.
fn bundle(dir: &Path, extra: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join("bundle");
    fs::create_dir_all(root.join("scripts")).expect("mkdir");
    fs::create_dir_all(root.join("site")).expect("mkdir");
    fs::write(root.join("appspec.yml"), APPSPEC).expect("write");
    fs::write(root.join("scripts/after.sh"), "#!/bin/sh\necho installed\n").expect("write");
    fs::write(root.join("site/index.html"), "<h1>release 42</h1>\n").expect("write");
    for (rel, bytes) in extra {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, bytes).expect("write");
    }
    root
}

/// The binary with a clean AWS environment: static test credentials, region, no IMDS, no
/// profile files, S3 at `s3` and CodeDeploy at `codedeploy`.
fn deploy_command(home: &Path, s3: &str, codedeploy: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("deploy")
        .args(args)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
        .env("AWS_REGION", moto::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_ENDPOINT_URL_S3", s3)
        .env("AWS_ENDPOINT_URL_CODEDEPLOY", codedeploy)
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Run {
    Run::from(
        cmd.borrow_mut()
            .output()
            .expect("run codedeploy-agent deploy"),
    )
}

/// A CodeDeploy client for moto.
fn codedeploy_client(moto: &Moto) -> aws_sdk_codedeploy::Client {
    aws_sdk_codedeploy::Client::from_conf(
        aws_sdk_codedeploy::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(moto::REGION))
            .credentials_provider(moto::credentials())
            .endpoint_url(moto.url())
            .http_client(codedeploy_agent::revision::s3::http_client(None).expect("client"))
            .build(),
    )
}

/// An S3 client for moto, to look at what was uploaded.
fn s3_client(moto: &Moto) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(moto::REGION))
            .credentials_provider(moto::credentials())
            .endpoint_url(moto.url())
            .force_path_style(true)
            .http_client(codedeploy_agent::revision::s3::http_client(None).expect("client"))
            .build(),
    )
}

/// The server-side encryption S3 recorded for an object.
fn encryption(moto: &Moto, bucket: &str, key: &str) -> Option<String> {
    moto.handle()
        .block_on(s3_client(moto).head_object().bucket(bucket).key(key).send())
        .expect("head object")
        .server_side_encryption()
        .map(|e| e.as_str().to_owned())
}

fn moto_application(moto: &Moto, client: &aws_sdk_codedeploy::Client) {
    moto.handle()
        .block_on(client.create_application().application_name("app").send())
        .expect("create application");
    moto.handle()
        .block_on(
            client
                .create_deployment_group()
                .application_name("app")
                .deployment_group_name("qat")
                .service_role_arn("arn:aws:iam::123456789012:role/codedeploy")
                .send(),
        )
        .expect("create deployment group");
}

/// Downloads the object the way the agent would (ETag and version pinned) and unpacks it.
fn fetch_and_unpack(
    moto: &Moto,
    dir: &Path,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    etag: &str,
) -> PathBuf {
    let archive_path = dir.join("downloaded");
    moto.fetcher()
        .download(
            &S3Object {
                bucket,
                key,
                version,
                etag: Some(etag),
            },
            &archive_path,
        )
        .expect("the agent's S3 fetch of the uploaded bundle (ETag checked)");
    let kind = archive::detect(&archive_path)
        .expect("read")
        .expect("an archive");
    let out = dir.join("unpacked");
    archive::unpack(&archive_path, kind, &out, &UnpackOptions::default()).expect("unpack");
    out
}

#[test]
fn bundles_uploads_and_creates_the_deployment_moto_records() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let source = bundle(dir.path(), &[]);
    moto.create_bucket("releases");
    let client = codedeploy_client(&moto);
    moto_application(&moto, &client);

    for (kind, bundle_type, sse) in [("tgz", "tgz", Some("aws:kms")), ("zip", "zip", None)] {
        let key = format!("app/release-42.{kind}");
        let sse_args: Vec<&str> = sse.map_or(vec![], |sse| vec!["--sse", sse]);
        let out = run(deploy_command(
            dir.path(),
            &moto.url(),
            &moto.url(),
            &[
                "--application-name",
                "app",
                "--deployment-group-name",
                "qat",
                "--s3-location",
                &format!("s3://releases/{key}"),
                "--source",
                source.to_str().expect("utf8"),
                "--bundle-type",
                kind,
                "--description",
                "release 42",
                "--no-register",
                "--no-follow",
            ],
        )
        .args(&sse_args));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(encryption(&moto, "releases", &key).as_deref(), sse);
        assert!(
            out.stdout
                .contains(&format!("Bundled {}", source.display())),
            "{out:?}"
        );
        assert!(
            out.stdout
                .contains("Not registering the revision (--no-register)"),
            "{out:?}"
        );
        // --no-follow: the id is the last line, alone (moto's ids are UUIDs, AWS's d-XXXXXXXXX).
        let id = out.stdout.lines().last().expect("a line").to_owned();
        assert!(!id.is_empty() && !id.contains(' '), "{out:?}");

        let info = moto
            .handle()
            .block_on(client.get_deployment().deployment_id(&id).send())
            .expect("get deployment")
            .deployment_info
            .expect("deployment info");
        assert_eq!(info.application_name(), Some("app"));
        assert_eq!(info.deployment_group_name(), Some("qat"));
        assert_eq!(info.description(), Some("release 42"));
        let s3 = info
            .revision()
            .and_then(|r| r.s3_location())
            .expect("an S3 revision");
        assert_eq!(s3.bucket(), Some("releases"));
        assert_eq!(s3.key(), Some(key.as_str()));
        assert_eq!(s3.bundle_type().map(|b| b.as_str()), Some(bundle_type));
        let etag = s3.e_tag().expect("eTag recorded");
        assert!(!etag.contains('"'), "eTag without quotes: {etag}");

        let check = dir.path().join(format!("check-{kind}"));
        fs::create_dir_all(&check).expect("mkdir");
        let unpacked = fetch_and_unpack(&moto, &check, "releases", &key, None, etag);
        assert_eq!(
            fs::read_to_string(unpacked.join("appspec.yml")).expect("appspec in the bundle"),
            APPSPEC
        );
        assert_eq!(
            fs::read_to_string(unpacked.join("site/index.html")).expect("site"),
            "<h1>release 42</h1>\n"
        );
    }
}

#[test]
fn registration_failure_at_moto_is_an_error_not_skipped() {
    // moto 5.2.1 does not implement RegisterApplicationRevision: without --no-register that
    // is a failed call (exit 3), and no deployment is created.
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let source = bundle(dir.path(), &[]);
    moto.create_bucket("releases");
    let client = codedeploy_client(&moto);
    moto_application(&moto, &client);
    let out = run(deploy_command(
        dir.path(),
        &moto.url(),
        &moto.url(),
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "s3://releases/app/r.tgz",
            "--source",
            source.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("RegisterApplicationRevision for application app failed"),
        "{out:?}"
    );
    let deployments = moto
        .handle()
        .block_on(
            client
                .list_deployments()
                .application_name("app")
                .deployment_group_name("qat")
                .send(),
        )
        .expect("list deployments");
    assert!(deployments.deployments().is_empty(), "{deployments:?}");
}

#[test]
fn large_bundle_goes_up_in_parts_with_its_version_recorded() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // 12 MiB that do not compress: three 5 MiB parts.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..12 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let source = bundle(dir.path(), &[("site/big.bin", &noise)]);
    moto.create_bucket("releases");
    moto.enable_versioning("releases");
    let client = codedeploy_client(&moto);
    moto_application(&moto, &client);
    let part = (5u64 << 20).to_string();
    let relay = RootFixingRelay::start(moto.url());
    let out = run(deploy_command(
        dir.path(),
        &relay.url(),
        &moto.url(),
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "s3://releases/app/big.tar",
            "--source",
            source.to_str().expect("utf8"),
            "--bundle-type",
            "tar",
            "--multipart-threshold",
            &part,
            "--part-size",
            &part,
            "--sse",
            "AES256",
            "--no-register",
            "--no-follow",
        ],
    ));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        encryption(&moto, "releases", "app/big.tar").as_deref(),
        Some("AES256")
    );
    let id = out.stdout.lines().last().expect("a line").to_owned();
    let info = moto
        .handle()
        .block_on(client.get_deployment().deployment_id(&id).send())
        .expect("get deployment")
        .deployment_info
        .expect("deployment info");
    let s3 = info
        .revision()
        .and_then(|r| r.s3_location())
        .expect("an S3 revision");
    let etag = s3.e_tag().expect("eTag");
    assert!(etag.ends_with("-3"), "a three-part upload's ETag: {etag}");
    let version = s3.version().expect("the version id is recorded");
    assert!(
        out.stdout.contains(&format!("version {version}")),
        "{out:?}"
    );
    let unpacked = fetch_and_unpack(
        &moto,
        dir.path(),
        "releases",
        "app/big.tar",
        Some(version),
        etag,
    );
    assert!(
        fs::read(unpacked.join("site/big.bin")).expect("big file") == noise,
        "the large file came back different"
    );
    assert!(
        relay.rewrote(),
        "the upload never completed a multipart upload"
    );
}

/// moto 5.2.1 answers CompleteMultipartUpload with the root element
/// `CompleteMultipartUploadResponse`; S3 (and the S3 model the SDK parses strictly) says
/// `CompleteMultipartUploadResult`. This relay sits between the binary and moto and renames
/// that one element, so the multipart path runs against moto's real storage.
struct RootFixingRelay {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rewrote: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// With `hold_parts`: an UploadPart request arrived and is being held unanswered.
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl RootFixingRelay {
    fn start(upstream: String) -> Self {
        Self::start_with(upstream, false)
    }

    /// `hold_parts`: UploadPart requests are never forwarded nor answered (an upload that
    /// hangs), everything else goes through.
    fn start_with(upstream: String, hold_parts: bool) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let rewrote = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (stop, rewrote, held) = (stop.clone(), rewrote.clone(), held.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let (upstream, rewrote) = (upstream.clone(), rewrote.clone());
                    let hold = hold_parts.then(|| (held.clone(), stop.clone()));
                    std::thread::spawn(move || relay(client, &upstream, &rewrote, hold));
                }
            })
        };
        Self {
            addr,
            stop,
            rewrote,
            held,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn rewrote(&self) -> bool {
        self.rewrote.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RootFixingRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

type Hold = (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

/// Requests go through as bytes (or, with `hold` = (held, stop), request by request, an
/// UploadPart being held unanswered until the relay stops); each response (moto always sends
/// Content-Length) is read whole, fixed, and passed on.
fn relay(
    client: std::net::TcpStream,
    upstream: &str,
    rewrote: &std::sync::atomic::AtomicBool,
    hold: Option<Hold>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let Ok(server) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let requests = std::thread::spawn(move || {
        match hold {
            None => {
                let _ = std::io::copy(&mut client_in, &mut server_out);
            }
            Some((held, stop)) => forward_requests(client_in, &mut server_out, &held, &stop),
        }
        let _ = server_out.shutdown(std::net::Shutdown::Write);
    });
    let mut from_server = BufReader::new(server);
    let mut to_client = client;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if from_server.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = to_client.shutdown(std::net::Shutdown::Both);
                let _ = requests.join();
                return;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
                continue;
            }
            let end = line == "\r\n";
            if !end {
                head.extend_from_slice(line.as_bytes());
            }
            if end {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if from_server.read_exact(&mut body).is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&body);
        if text.contains("<CompleteMultipartUploadResponse") {
            body = text
                .replace(
                    "CompleteMultipartUploadResponse",
                    "CompleteMultipartUploadResult",
                )
                .into_bytes();
            rewrote.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        head.extend_from_slice(&body);
        if to_client.write_all(&head).is_err() {
            return;
        }
    }
}

/// Forwards requests one by one (each has a Content-Length: the SDK sends one), except that an
/// UploadPart (`?partNumber=`) is swallowed and its connection held until `stop`.
fn forward_requests(
    client_in: std::net::TcpStream,
    server_out: &mut std::net::TcpStream,
    held: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let mut from_client = BufReader::new(client_in);
    loop {
        let mut head = String::new();
        let mut length = 0u64;
        loop {
            let mut line = String::new();
            if from_client.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        if head
            .lines()
            .next()
            .is_some_and(|l| l.contains("partNumber="))
        {
            held.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        if server_out.write_all(head.as_bytes()).is_err()
            || std::io::copy(&mut (&mut from_client).take(length), server_out).is_err()
        {
            return;
        }
    }
}

#[test]
fn ctrl_c_during_a_multipart_upload_aborts_it() {
    let Some(moto) = Moto::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let noise: Vec<u8> = (0u32..(12 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let source = bundle(dir.path(), &[("site/big.bin", &noise)]);
    moto.create_bucket("releases");
    let part = (5u64 << 20).to_string();
    let relay = RootFixingRelay::start_with(moto.url(), true);
    let child = deploy_command(
        dir.path(),
        &relay.url(),
        &moto.url(),
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "s3://releases/app/big.tar",
            "--source",
            source.to_str().expect("utf8"),
            "--bundle-type",
            "tar",
            "--multipart-threshold",
            &part,
            "--part-size",
            &part,
            "--no-register",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !relay.held() {
        assert!(Instant::now() < deadline, "no UploadPart reached the relay");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s3 = s3_client(&moto);
    let open = |s3: &aws_sdk_s3::Client| {
        moto.handle()
            .block_on(s3.list_multipart_uploads().bucket("releases").send())
            .expect("ListMultipartUploads")
            .uploads()
            .len()
    };
    assert_eq!(open(&s3), 1, "the upload is under way");
    interrupt(&child);
    let out = finish(child);
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        out.stderr.contains(
            "interrupted: the multipart upload to s3://releases/app/big.tar was aborted; \
             nothing was deployed"
        ),
        "{out:?}"
    );
    assert_eq!(open(&s3), 0, "AbortMultipartUpload left no parts behind");
}

#[test]
fn invalid_appspec_is_a_usage_error_and_nothing_is_called() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = bundle(dir.path(), &[]);
    fs::write(
        source.join("appspec.yml"),
        "version: 0.0\nos: linux\nhooks:\n  AfterInstall:\n    - location: scripts/missing.sh\n",
    )
    .expect("write");
    // Nothing listens on port 1: any AWS call would be a connection error (exit 3).
    let out = run(deploy_command(
        dir.path(),
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "s3://releases/app.tgz",
            "--source",
            source.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("is not valid (nothing was uploaded)"),
        "{out:?}"
    );
    assert!(out.stderr.contains("appspec.yml:5:"), "{out:?}");
    assert!(out.stderr.contains("scripts/missing.sh"), "{out:?}");

    let bad = run(deploy_command(
        dir.path(),
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "releases/app.tgz",
        ],
    ));
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("expected s3://bucket/key"), "{bad:?}");
}

#[test]
fn missing_region_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = bundle(dir.path(), &[]);
    let out = run(deploy_command(
        dir.path(),
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &[
            "--application-name",
            "app",
            "--deployment-group-name",
            "qat",
            "--s3-location",
            "s3://releases/app.tgz",
            "--source",
            source.to_str().expect("utf8"),
        ],
    )
    .env_remove("AWS_REGION"));
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("no AWS region is configured: pass --region"),
        "{out:?}"
    );
}

/// Timestamps for the script: the deployment started at T.
const T: f64 = 1_700_000_000.0;

fn in_progress_script() -> Vec<Step> {
    vec![
        Step {
            deployment: fake::deployment("Created", [1, 0, 0, 0, 0]),
            targets: vec![],
        },
        Step {
            deployment: fake::deployment("InProgress", [0, 1, 0, 0, 0]),
            targets: vec![fake::instance(
                "i-0aaa",
                "InProgress",
                vec![
                    fake::event("ApplicationStop", "Succeeded", Some(T), Some(T + 0.5)),
                    fake::event("DownloadBundle", "InProgress", Some(T + 0.5), None),
                    fake::event("AfterInstall", "Pending", None, None),
                ],
            )],
        },
    ]
}

/// Runs deploy against moto (S3) and the fake (CodeDeploy) and returns the output.
fn deploy_with_fake(moto: &Moto, fake: &FakeCodeDeploy, dir: &Path, extra: &[&str]) -> Run {
    let source = bundle(dir, &[]);
    let mut args = vec![
        "--application-name",
        "app",
        "--deployment-group-name",
        "qat",
        "--s3-location",
        "s3://releases/app/r.tgz",
        "--source",
        source.to_str().expect("utf8"),
        "--poll-interval",
        "0.05",
    ];
    args.extend_from_slice(extra);
    run(deploy_command(dir, &moto.url(), &fake.url(), &args))
}

#[test]
fn follows_a_deployment_to_success_printing_each_change_once() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut script = in_progress_script();
    // The same state twice: nothing new is printed for it.
    script.push(script[1].clone());
    script.push(Step {
        deployment: fake::deployment("Succeeded", [0, 0, 1, 0, 0]),
        targets: vec![fake::instance(
            "i-0aaa",
            "Succeeded",
            vec![
                fake::event("ApplicationStop", "Succeeded", Some(T), Some(T + 0.5)),
                fake::event("DownloadBundle", "Succeeded", Some(T + 0.5), Some(T + 2.0)),
                fake::event("AfterInstall", "Succeeded", Some(T + 2.0), Some(T + 4.25)),
            ],
        )],
    });
    let fake = FakeCodeDeploy::start(script);
    let out = deploy_with_fake(
        &moto,
        &fake,
        dir.path(),
        &[
            "--description",
            "release 42",
            "--deployment-config-name",
            "CodeDeployDefault.OneAtATime",
            "--file-exists-behavior",
            "OVERWRITE",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let following: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Following"))
        .collect();
    assert_eq!(
        following,
        [
            "Following d-FAKE12345 (Ctrl-C stops following; the deployment continues)",
            "d-FAKE12345: Created (1 pending, 0 in progress, 0 succeeded, 0 failed, 0 skipped)",
            "i-0aaa ApplicationStop: Succeeded (0.5 s)",
            "i-0aaa DownloadBundle: InProgress",
            "i-0aaa: InProgress",
            "d-FAKE12345: InProgress (0 pending, 1 in progress, 0 succeeded, 0 failed, 0 skipped)",
            "i-0aaa DownloadBundle: Succeeded (1.5 s)",
            "i-0aaa AfterInstall: Succeeded (2.2 s)",
            "i-0aaa: Succeeded",
            "d-FAKE12345: Succeeded (0 pending, 0 in progress, 1 succeeded, 0 failed, 0 skipped)",
            "Deployment d-FAKE12345 succeeded",
        ],
        "{out:?}"
    );

    // What was registered and deployed: the uploaded object, pinned by its ETag.
    let register = fake.requests_for("RegisterApplicationRevision");
    assert_eq!(register.len(), 1);
    let revision = &register[0].body["revision"];
    assert_eq!(revision["revisionType"], "S3");
    assert_eq!(revision["s3Location"]["bucket"], "releases");
    assert_eq!(revision["s3Location"]["key"], "app/r.tgz");
    assert_eq!(revision["s3Location"]["bundleType"], "tgz");
    let etag = revision["s3Location"]["eTag"].as_str().expect("eTag");
    assert!(out.stdout.contains(&format!("ETag {etag}")), "{out:?}");
    assert_eq!(register[0].body["applicationName"], "app");
    assert_eq!(register[0].body["description"], "release 42");
    let create = fake.requests_for("CreateDeployment");
    assert_eq!(create.len(), 1);
    let body = &create[0].body;
    assert_eq!(&body["revision"], revision);
    assert_eq!(body["deploymentGroupName"], "qat");
    assert_eq!(body["deploymentConfigName"], "CodeDeployDefault.OneAtATime");
    assert_eq!(body["fileExistsBehavior"], "OVERWRITE");
    assert_eq!(body["description"], "release 42");
    let check = dir.path().join("check");
    fs::create_dir_all(&check).expect("mkdir");
    let unpacked = fetch_and_unpack(&moto, &check, "releases", "app/r.tgz", None, etag);
    assert_eq!(
        fs::read_to_string(unpacked.join("appspec.yml")).expect("appspec"),
        APPSPEC
    );
}

#[test]
fn failed_lifecycle_event_prints_the_script_and_log_tail_and_exits_1() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failed = fake::event("AfterInstall", "Failed", Some(T + 2.0), Some(T + 5.0));
    failed["diagnostics"] = serde_json::json!({
        "errorCode": "ScriptFailed",
        "scriptName": "scripts/after.sh",
        "message": "Script at specified location: scripts/after.sh run as user root failed with exit code 3",
        "logTail": "[stdout]installing\n[stderr]cp: cannot stat 'site/app.jar': No such file or directory\n"
    });
    let mut end = fake::deployment("Failed", [0, 0, 0, 1, 0]);
    end["errorInformation"] = serde_json::json!({
        "code": "HEALTH_CONSTRAINTS",
        "message": "The overall deployment failed because too many individual instances failed deployment"
    });
    let mut script = in_progress_script();
    script.push(Step {
        deployment: end,
        targets: vec![fake::instance(
            "i-0aaa",
            "Failed",
            vec![
                fake::event("ApplicationStop", "Succeeded", Some(T), Some(T + 0.5)),
                fake::event("DownloadBundle", "Succeeded", Some(T + 0.5), Some(T + 2.0)),
                failed,
            ],
        )],
    });
    let fake = FakeCodeDeploy::start(script);
    let out = deploy_with_fake(&moto, &fake, dir.path(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let expected = "i-0aaa AfterInstall: Failed (3.0 s)
    script:   scripts/after.sh
    error:    ScriptFailed
    message:  Script at specified location: scripts/after.sh run as user root failed with exit code 3
    log tail:
      [stdout]installing
      [stderr]cp: cannot stat 'site/app.jar': No such file or directory
i-0aaa: Failed
d-FAKE12345: Failed (0 pending, 0 in progress, 0 succeeded, 1 failed, 0 skipped)
d-FAKE12345: HEALTH_CONSTRAINTS: The overall deployment failed because too many individual instances failed deployment
Deployment d-FAKE12345 failed
";
    assert!(out.stdout.ends_with(expected), "{out:?}");
}

#[test]
fn failed_registration_is_an_aws_error_and_no_deployment_is_created() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeCodeDeploy::start(in_progress_script());
    fake.fail(
        "RegisterApplicationRevision",
        400,
        "ApplicationDoesNotExistException",
        "No application found for name: app",
    );
    let out = deploy_with_fake(&moto, &fake, dir.path(), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("RegisterApplicationRevision for application app failed"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("No application found for name: app"),
        "{out:?}"
    );
    assert!(fake.requests_for("CreateDeployment").is_empty());
}

/// Starts deploy in the background and waits until it follows.
fn spawn_following(moto: &Moto, fake: &FakeCodeDeploy, dir: &Path, extra: &[&str]) -> Child {
    let source = bundle(dir, &[]);
    let mut args = vec![
        "--application-name",
        "app",
        "--deployment-group-name",
        "qat",
        "--s3-location",
        "s3://releases/app/r.tgz",
        "--source",
        source.to_str().expect("utf8"),
        "--poll-interval",
        "0.05",
    ];
    args.extend_from_slice(extra);
    let child = deploy_command(dir, &moto.url(), &fake.url(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Following has begun (and Ctrl-C is handled) once the targets are polled.
    assert!(
        fake.wait_until(Duration::from_secs(60), |r| r
            .iter()
            .filter(|r| r.operation == "BatchGetDeploymentTargets")
            .count()
            >= 2),
        "deploy never followed the deployment: {:?}",
        fake.requests()
    );
    child
}

fn interrupt(child: &Child) {
    // SAFETY: signalling the child this test spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
}

fn finish(child: Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut child = child;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("deploy did not exit after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Run::from(child.wait_with_output().expect("output"))
}

#[test]
fn ctrl_c_stops_following_but_not_the_deployment() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeCodeDeploy::start(in_progress_script());
    let child = spawn_following(&moto, &fake, dir.path(), &[]);
    interrupt(&child);
    let out = finish(child);
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "Interrupted: stopped following {DEPLOYMENT_ID}; the deployment itself was not stopped and continues"
        )),
        "{out:?}"
    );
    assert!(fake.requests_for("StopDeployment").is_empty());
}

#[test]
fn ctrl_c_with_stop_on_interrupt_stops_the_deployment_and_follows_it_to_stopped() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeCodeDeploy::start(in_progress_script());
    fake.after_stop(vec![Step {
        deployment: fake::deployment("Stopped", [0, 0, 0, 0, 1]),
        targets: vec![fake::instance("i-0aaa", "Skipped", vec![])],
    }]);
    let child = spawn_following(&moto, &fake, dir.path(), &["--stop-on-interrupt"]);
    interrupt(&child);
    let out = finish(child);
    assert_eq!(out.code, 1, "{out:?}");
    let stops = fake.requests_for("StopDeployment");
    assert_eq!(stops.len(), 1, "{:?}", fake.requests());
    assert_eq!(stops[0].body["deploymentId"], DEPLOYMENT_ID);
    assert!(
        out.stdout
            .contains("Interrupted: stopping deployment d-FAKE12345"),
        "{out:?}"
    );
    assert!(
        out.stdout.ends_with("Deployment d-FAKE12345 stopped\n"),
        "{out:?}"
    );
}

#[test]
fn finished_targets_are_not_fetched_again() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("releases");
    let dir = tempfile::tempdir().expect("tempdir");
    let done = |id: &str| {
        fake::instance(
            id,
            "Succeeded",
            vec![fake::event(
                "AfterInstall",
                "Succeeded",
                Some(T),
                Some(T + 1.0),
            )],
        )
    };
    let running = |id: &str| {
        fake::instance(
            id,
            "InProgress",
            vec![fake::event("AfterInstall", "InProgress", Some(T), None)],
        )
    };
    let one_done = Step {
        deployment: fake::deployment("InProgress", [0, 1, 1, 0, 0]),
        targets: vec![done("i-0aaa"), running("i-0bbb")],
    };
    let fake = FakeCodeDeploy::start(vec![
        Step {
            deployment: fake::deployment("InProgress", [0, 2, 0, 0, 0]),
            targets: vec![running("i-0aaa"), running("i-0bbb")],
        },
        one_done.clone(),
        one_done.clone(),
        one_done,
        Step {
            deployment: fake::deployment("Succeeded", [0, 0, 2, 0, 0]),
            targets: vec![done("i-0aaa"), done("i-0bbb")],
        },
    ]);
    let out = deploy_with_fake(&moto, &fake, dir.path(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("i-0aaa: Succeeded"), "{out:?}");
    assert!(out.stdout.contains("i-0bbb: Succeeded"), "{out:?}");
    let fetched: Vec<Vec<String>> = fake
        .requests_for("BatchGetDeploymentTargets")
        .iter()
        .map(|r| {
            r.body["targetIds"]
                .as_array()
                .expect("targetIds")
                .iter()
                .map(|v| v.as_str().expect("id").to_owned())
                .collect()
        })
        .collect();
    // Both while both run; once i-0aaa has succeeded only i-0bbb is fetched.
    assert_eq!(fetched[0], ["i-0aaa", "i-0bbb"], "{fetched:?}");
    assert_eq!(fetched[1], ["i-0aaa", "i-0bbb"], "{fetched:?}");
    assert!(
        fetched[2..].iter().all(|ids| ids == &["i-0bbb"]),
        "{fetched:?}"
    );
    assert_eq!(fetched.len(), 5, "{fetched:?}");
}
