//! Fetching S3 revisions from a real moto_server and GitHub archives from a tiny local HTTP
//! server (agent-behaviour.md §3.4), and `codedeploy-agent local -l s3://...` end to end (§7).

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future::ProvideCredentials as ProvideCredentialsFuture;
use codedeploy_agent::revision::github::{GitHubArchive, GitHubFetcher};
use codedeploy_agent::revision::s3::{
    MISSING_CREDENTIALS, S3FetchError, S3Fetcher, S3Object, S3Settings, Tuning,
};
use support::Sandbox;
use support::moto::{self, Moto};

fn object<'a>(bucket: &'a str, key: &'a str) -> S3Object<'a> {
    S3Object {
        bucket,
        key,
        version: None,
        etag: None,
    }
}

#[test]
fn s3_small_object_with_etag_checks() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("bkt");
    let (etag, _) = moto.put_object("bkt", "app/bundle.zip", b"hello bundle");
    assert!(etag.starts_with('"'), "S3 quotes ETags: {etag}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let fetcher = moto.fetcher();

    // Quoted or bare, the spec's ETag matches.
    for spec_etag in [etag.clone(), etag.trim_matches('"').to_owned()] {
        let got = fetcher
            .download(
                &S3Object {
                    etag: Some(&spec_etag),
                    ..object("bkt", "app/bundle.zip")
                },
                &dest,
            )
            .expect("download");
        assert_eq!(fs::read(&dest).expect("read"), b"hello bundle");
        assert_eq!(got.bytes, 12);
        assert_eq!(got.requests, 1);
        assert!(got.md5_verified, "a single-part ETag is the MD5");
    }

    let err = fetcher
        .download(
            &S3Object {
                etag: Some("0123"),
                ..object("bkt", "app/bundle.zip")
            },
            &dest,
        )
        .expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        format!("Expected deployment artifact bundle etag 0123 but was actually {etag}")
    );
}

#[test]
fn s3_older_version_by_version_id() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("versioned");
    moto.enable_versioning("versioned");
    let (_, v1) = moto.put_object("versioned", "b.tgz", b"version one");
    let (_, v2) = moto.put_object("versioned", "b.tgz", b"version two!");
    let v1 = v1.expect("versioning gives a version id");
    assert_ne!(Some(&v1), v2.as_ref());
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let got = moto
        .fetcher()
        .download(
            &S3Object {
                version: Some(&v1),
                ..object("versioned", "b.tgz")
            },
            &dest,
        )
        .expect("download v1");
    assert_eq!(fs::read(&dest).expect("read"), b"version one");
    assert_eq!(got.version_id.as_deref(), Some(v1.as_str()));
    moto.fetcher()
        .download(&object("versioned", "b.tgz"), &dest)
        .expect("latest");
    assert_eq!(fs::read(&dest).expect("read"), b"version two!");
}

#[test]
fn s3_missing_key_names_the_object() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("bkt");
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = moto
        .fetcher()
        .download(
            &object("bkt", "no/such.zip"),
            &tmp.path().join("bundle.tar"),
        )
        .expect_err("missing");
    assert!(
        matches!(err, S3FetchError::Service { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "could not download s3://bkt/no/such.zip: NoSuchKey: The specified key does not exist. (HTTP 404)"
    );
}

/// Deterministic, non-repeating-looking content, written in 1 MiB blocks.
fn write_pattern(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).expect("create"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (
        fs::File::open(a).expect("open a"),
        fs::File::open(b).expect("open b"),
    );
    assert_eq!(
        fa.metadata().expect("meta").len(),
        fb.metadata().expect("meta").len()
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    loop {
        let n = fa.read(&mut ba).expect("read a");
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).expect("read b");
        assert!(ba[..n] == bb[..n], "files differ in the block at {offset}");
        offset += n as u64;
    }
}

#[test]
fn s3_large_object_takes_parallel_ranged_gets() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("big");
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source.bin");
    let len = (100 << 20) + 12_345;
    write_pattern(&source, len);
    let (etag, _) = moto.put_file("big", "large.tar", &source);
    let dest = tmp.path().join("bundle.tar");
    let got = moto
        .fetcher()
        .download(
            &S3Object {
                etag: Some(&etag),
                ..object("big", "large.tar")
            },
            &dest,
        )
        .expect("download");
    assert_eq!(got.bytes, len);
    // 64 MiB in the first response, then 8 MiB parts: ceil((len - 64 MiB) / 8 MiB) = 5.
    assert_eq!(got.requests, 6);
    assert!(got.md5_verified);
    assert_same_file(&source, &dest);
}

#[test]
fn s3_ranged_path_with_small_parts_reassembles_exactly() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("parts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source.bin");
    write_pattern(&source, 10_001);
    let (etag, _) = moto.put_file("parts", "p", &source);
    let dest = tmp.path().join("bundle.tar");
    let tuning = Tuning {
        threshold: 1_000,
        part_size: 777,
        parallel: 3,
        body_attempts: 2,
    };
    let got = moto
        .fetcher()
        .with_tuning(tuning)
        .download(
            &S3Object {
                etag: Some(&etag),
                ..object("parts", "p")
            },
            &dest,
        )
        .expect("download");
    assert_eq!(got.requests, 1 + 9_001usize.div_ceil(777));
    assert_same_file(&source, &dest);

    // An empty object has no byte range at all.
    moto.put_object("parts", "empty", b"");
    let got = moto
        .fetcher()
        .download(&object("parts", "empty"), &dest)
        .expect("empty object");
    assert_eq!(got.bytes, 0);
    assert_eq!(fs::metadata(&dest).expect("meta").len(), 0);
}

fn closed_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

#[test]
fn s3_connection_errors_suggest_the_endpoint_override() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let settings = S3Settings {
        region: "us-east-1".into(),
        endpoint_override: Some(format!("http://127.0.0.1:{}", closed_port())),
        ..S3Settings::default()
    };
    let fetcher =
        S3Fetcher::new(settings, moto::credentials(), runtime.handle().clone()).expect("fetcher");
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = fetcher
        .download(&object("b", "k"), &tmp.path().join("bundle.tar"))
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("unable to connect to http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.ends_with(". Try using s3 endpoint override."),
        "{text}"
    );
}

#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> ProvideCredentialsFuture<'a>
    where
        Self: 'a,
    {
        ProvideCredentialsFuture::ready(Err(CredentialsError::not_loaded("no credentials")))
    }
}

#[test]
fn s3_missing_credentials_give_the_local_mode_message() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let settings = S3Settings {
        region: "us-east-1".into(),
        endpoint_override: Some(format!("http://127.0.0.1:{}", closed_port())),
        ..S3Settings::default()
    };
    let fetcher = S3Fetcher::new(
        settings,
        SharedCredentialsProvider::new(NoCredentials),
        runtime.handle().clone(),
    )
    .expect("fetcher");
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = fetcher
        .download(&object("b", "k"), &tmp.path().join("bundle.tar"))
        .expect_err("no credentials");
    assert!(
        matches!(err, S3FetchError::MissingCredentials { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), MISSING_CREDENTIALS);
}

// ---------------------------------------------------------------------------------------------
// GitHub against a scripted HTTP server.

/// One scripted reply: status, extra headers, body.
type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A one-thread HTTP/1.1 server answering each request with the next scripted response
/// (`status`, extra headers, body) and recording the request heads.
struct Script {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn serve(responses: Vec<Reply>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (status, headers, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let head = read_head(&stream);
                seen.lock().expect("lock").push(head);
                let mut out = format!(
                    "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
                    reason(status)
                );
                // A scripted Content-Length may promise more than the body has (a cut-off body).
                if !headers.iter().any(|(k, _)| *k == "Content-Length") {
                    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut stream = stream;
                let _ = stream.write_all(out.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        412 => "Precondition Failed",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Other",
    }
}

fn read_head(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

fn github(url: &str, runtime: &tokio::runtime::Runtime, delays: Vec<Duration>) -> GitHubFetcher {
    GitHubFetcher::new(None, runtime.handle().clone())
        .expect("client")
        .with_base_url(url)
        .with_retry_delays(delays)
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

const ARCHIVE: GitHubArchive<'static> = GitHubArchive {
    account: "acme",
    repository: "app",
    commit: "abc123",
    bundle_type: None,
    token: Some("ghp_secret"),
};

#[test]
fn github_download_sends_the_token_and_follows_redirects() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![
        (
            302,
            vec![("Location", "/codeload/acme/app/tar/abc123".into())],
            vec![],
        ),
        (200, vec![], b"tarball bytes".to_vec()),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let kind = github(&server.url, &runtime, ms(&[1, 1, 1]))
        .download(&ARCHIVE, &dest)
        .expect("download");
    assert_eq!(kind, "tar");
    assert_eq!(fs::read(&dest).expect("read"), b"tarball bytes");
    let requests = server.requests();
    assert!(
        requests[0].starts_with("GET /repos/acme/app/tarball/abc123 HTTP/1.1"),
        "{requests:?}"
    );
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: token ghp_secret"),
        "{requests:?}"
    );
    assert!(requests[1].starts_with("GET /codeload/acme/app/tar/abc123 "));

    // Anonymous: no Authorization header; zip asks for the zipball.
    let server = Script::serve(vec![(200, vec![], b"zip".to_vec())]);
    let anonymous = GitHubArchive {
        token: None,
        bundle_type: Some("zip"),
        ..ARCHIVE
    };
    let kind = github(&server.url, &runtime, ms(&[1]))
        .download(&anonymous, &dest)
        .expect("download");
    assert_eq!(kind, "zip");
    let requests = server.requests();
    assert!(requests[0].starts_with("GET /repos/acme/app/zipball/abc123 "));
    assert!(!requests[0].to_ascii_lowercase().contains("authorization"));
}

#[test]
fn fetcher_for_spec_sends_that_deployments_token() {
    use codedeploy_agent::revision::{Fetch, Fetched, Fetcher};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![
        (200, vec![], b"with token".to_vec()),
        (200, vec![], b"anonymous".to_vec()),
    ]);
    let json = r#"{"DeploymentId": "d-ABC", "DeploymentGroupId": "dg", "DeploymentGroupName": "g",
        "ApplicationName": "a", "GitHubAccessToken": "ghp_from_spec",
        "Revision": {"RevisionType": "GitHub", "GitHubRevision":
            {"Account": "acme", "Repository": "app", "CommitId": "c0ffee", "BundleType": "zip"}}}"#;
    let spec = codedeploy_agent::spec::DeploymentSpec::from_json(json).expect("spec");
    let fetcher = Fetcher::new(None, Some(github(&server.url, &runtime, ms(&[]))));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let archive_dir = tmp.path().join("deployment-archive");
    let fetched = fetcher
        .for_spec(&spec)
        .fetch(&spec.revision, &dest, &archive_dir)
        .expect("fetch");
    assert_eq!(
        fetched,
        Fetched::Archive {
            bundle_type: "zip".into()
        }
    );
    fetcher
        .fetch(&spec.revision, &dest, &archive_dir)
        .expect("anonymous fetch");
    let requests = server.requests();
    assert!(
        requests[0].starts_with("GET /repos/acme/app/zipball/c0ffee "),
        "{requests:?}"
    );
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: token ghp_from_spec")
    );
    assert!(!requests[1].to_ascii_lowercase().contains("authorization"));
}

#[test]
fn github_retries_a_server_error_then_succeeds() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![
        (500, vec![], b"oops".to_vec()),
        (200, vec![], b"second time".to_vec()),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    github(&server.url, &runtime, ms(&[5, 5, 5]))
        .download(&ARCHIVE, &dest)
        .expect("download after a retry");
    assert_eq!(fs::read(&dest).expect("read"), b"second time");
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn github_gives_up_after_three_retries_with_every_code() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![
        (500, vec![], vec![]),
        (502, vec![], vec![]),
        (404, vec![], vec![]),
        (500, vec![], vec![]),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let err = github(&server.url, &runtime, ms(&[10, 30, 90]))
        .download(&ARCHIVE, &tmp.path().join("bundle.tar"))
        .expect_err("gives up");
    assert!(started.elapsed() >= Duration::from_millis(130));
    assert_eq!(
        err.to_string(),
        format!(
            "Could not download bundle at '{}/repos/acme/app/tarball/abc123' after 3 retries. \
             Server returned codes: 500 'Internal Server Error'; 502 'Bad Gateway'; \
             404 'Not Found'; 500 'Internal Server Error'.",
            server.url
        )
    );
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn github_rejects_other_bundle_types_before_any_request() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = github(&server.url, &runtime, ms(&[]))
        .download(
            &GitHubArchive {
                bundle_type: Some("tgz"),
                ..ARCHIVE
            },
            &tmp.path().join("bundle.tar"),
        )
        .expect_err("tgz");
    assert_eq!(
        err.to_string(),
        "GitHub revision specified with bundle_type other than zip or tar [bundle_type=tgz"
    );
}

// ---------------------------------------------------------------------------------------------
// S3 ranged GETs against the scripted server: what moto cannot be made to do on cue.

fn scripted_s3(url: &str, runtime: &tokio::runtime::Runtime) -> S3Fetcher {
    let settings = S3Settings {
        region: "us-east-1".into(),
        endpoint_override: Some(url.to_owned()),
        ..S3Settings::default()
    };
    S3Fetcher::new(settings, moto::credentials(), runtime.handle().clone())
        .expect("fetcher")
        .with_tuning(Tuning {
            threshold: 10,
            part_size: 10,
            parallel: 1,
            body_attempts: 2,
        })
}

fn partial(range: &str, etag: &str, body: &[u8]) -> Reply {
    (
        206,
        vec![
            ("Content-Range", range.to_owned()),
            ("ETag", etag.to_owned()),
        ],
        body.to_vec(),
    )
}

#[test]
fn s3_object_replaced_mid_download_is_detected_by_if_match() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Script::serve(vec![
        partial("bytes 0-9/20", "\"e1\"", b"0123456789"),
        (
            412,
            vec![("Content-Type", "application/xml".into())],
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PreconditionFailed</Code>\
              <Message>At least one of the pre-conditions you specified did not hold</Message></Error>"
                .to_vec(),
        ),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = scripted_s3(&server.url, &runtime)
        .download(&object("bkt", "k"), &tmp.path().join("bundle.tar"))
        .expect_err("changed");
    assert_eq!(
        err.to_string(),
        "s3://bkt/k changed while it was being downloaded: it no longer has the ETag \"e1\"; \
         deploy again to fetch the new object"
    );
    let requests = server.requests();
    let second = requests[1].to_ascii_lowercase();
    assert!(second.starts_with("get /bkt/k"), "{second}");
    assert!(second.contains("if-match: \"e1\""), "{second}");
    assert!(second.contains("range: bytes=10-19"), "{second}");
}

#[test]
fn s3_body_that_breaks_off_is_resumed_where_it_stopped() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut cut = partial("bytes 10-19/20", "\"e1\"", b"abcde");
    cut.1.push(("Content-Length", "10".into()));
    let server = Script::serve(vec![
        partial("bytes 0-9/20", "\"e1\"", b"0123456789"),
        cut,
        partial("bytes 15-19/20", "\"e1\"", b"fghij"),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    let got = scripted_s3(&server.url, &runtime)
        .download(&object("bkt", "k"), &dest)
        .expect("resumed");
    assert_eq!(fs::read(&dest).expect("read"), b"0123456789abcdefghij");
    assert!(!got.md5_verified, "\"e1\" is not an MD5");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests[2]
            .to_ascii_lowercase()
            .contains("range: bytes=15-19"),
        "{requests:?}"
    );
}

#[test]
fn proxy_uri_carries_s3_and_github_requests() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let proxy = Script::serve(vec![
        (200, vec![("ETag", "\"e1\"".into())], b"via proxy".to_vec()),
        (200, vec![], b"github via proxy".to_vec()),
    ]);
    let settings = S3Settings {
        region: "us-east-1".into(),
        endpoint_override: Some("http://s3.test.invalid".into()),
        proxy_uri: Some(proxy.url.clone()),
        ..S3Settings::default()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("bundle.tar");
    S3Fetcher::new(settings, moto::credentials(), runtime.handle().clone())
        .expect("fetcher")
        .download(&object("bkt", "k"), &dest)
        .expect("download through the proxy");
    assert_eq!(fs::read(&dest).expect("read"), b"via proxy");
    GitHubFetcher::new(Some(&proxy.url), runtime.handle().clone())
        .expect("client")
        .with_base_url("http://api.github.test.invalid")
        .download(&ARCHIVE, &dest)
        .expect("github through the proxy");
    assert_eq!(fs::read(&dest).expect("read"), b"github via proxy");
    let requests = proxy.requests();
    assert!(
        requests[0].starts_with("GET http://bkt.s3.test.invalid/k"),
        "{requests:?}"
    );
    assert!(
        requests[1].starts_with("GET http://api.github.test.invalid/repos/acme/app/tarball/abc123"),
        "{requests:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Local mode through the real binary.

/// `codedeploy-agent local -c <config> <args>` with only the AWS settings given here.
fn local_with_env(s: &Sandbox, args: &[&str], env: &[(&str, String)]) -> support::Run {
    let mut cmd = Command::new(support::bin());
    cmd.arg("local").arg("-c").arg(s.config()).args(args);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", s.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            s.path().join("no-aws-credentials"),
        )
        .env("CODEDEPLOY_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    support::Run::from(cmd.output().expect("run binary"))
}

#[test]
fn local_mode_deploys_an_s3_bundle_from_moto() {
    let Some(moto) = Moto::start() else { return };
    let s = Sandbox::new();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\n\
         hooks:\n  AfterInstall:\n    - location: scripts/env.sh\n",
        dest = s.dest().display()
    );
    let env_script = format!(
        "#!/bin/sh\necho \"$BUNDLE_BUCKET $BUNDLE_KEY\" > {}/bundle-env\n",
        s.dest().display()
    );
    let dir = s.bundle(
        "s3",
        &[
            ("appspec.yml", &spec),
            ("app/index.html", "from s3"),
            ("scripts/env.sh", &env_script),
        ],
    );
    let tgz = s.path().join("bundle.tgz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    moto.create_bucket("deploys");
    let (etag, _) = moto.put_file("deploys", "bundle.tgz", &tgz);

    let env = [
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.to_owned()),
        ("AWS_REGION", moto::REGION.to_owned()),
        ("AWS_ENDPOINT_URL_S3", moto.url()),
    ];
    let location = format!("s3://deploys/bundle.tgz?etag={}", etag.trim_matches('"'));
    let run = local_with_env(&s, &["-l", &location, "-t", "tgz"], &env);
    run.assert_ok();
    assert_eq!(
        fs::read_to_string(s.dest().join("app/index.html")).expect("installed"),
        "from s3"
    );
    assert_eq!(
        fs::read_to_string(s.dest().join("bundle-env")).expect("hook ran"),
        "deploys bundle.tgz\n"
    );

    let run = local_with_env(
        &s,
        &["-l", "s3://deploys/bundle.tgz?etag=abc", "-t", "tgz"],
        &env,
    );
    run.assert_failed_with(&format!(
        "ERROR: Expected deployment artifact bundle etag abc but was actually {etag}"
    ));
}

#[test]
fn local_mode_without_credentials_prints_the_aws_message() {
    let s = Sandbox::new();
    let env = [
        ("AWS_REGION", "us-east-1".to_owned()),
        (
            "AWS_ENDPOINT_URL_S3",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
    ];
    let run = local_with_env(&s, &["-l", "s3://b/k.zip", "-t", "zip"], &env);
    run.assert_failed_with(&format!("ERROR: {MISSING_CREDENTIALS}"));
}
