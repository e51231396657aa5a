//! The host-commands client against the fake service on 127.0.0.1: exact request bodies and
//! headers, signatures the fake recomputes, both model variants, error mapping, timeouts,
//! proxy and credential rotation.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use codedeploy_agent::control::client::{ClientConfig, HttpHostCommands, user_agent};
use codedeploy_agent::control::endpoint::ServiceVariant;
use codedeploy_agent::control::{ControlError, Envelope, HostCommands, SpecificationResponse};
use support::fake_service::{
    ACCESS_KEY, Complete, FakeConfig, FakeService, Fault, SECRET_KEY, TEST_AGENT_VERSION,
    TestCredentials, command,
};

const HOST: &str = "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc";
const EXEC: &str = "d-ABC/111122223333/us-east-1/i-0abc";

fn client_for(fake: &FakeService) -> HttpHostCommands {
    HttpHostCommands::new(fake.client_config(), fake.provider()).expect("client")
}

fn client_with(config: ClientConfig, creds: SharedCredentialsProvider) -> HttpHostCommands {
    HttpHostCommands::new(config, creds).expect("client")
}

#[track_caller]
fn service_error(r: Result<impl std::fmt::Debug, ControlError>) -> (String, u16, String) {
    match r {
        Err(ControlError::Service {
            code,
            status,
            message,
            ..
        }) => (code, status, message),
        other => panic!("expected a service error, got {other:?}"),
    }
}

const SIGNED: [&str; 5] = [
    "content-type",
    "host",
    "x-amz-codedeploy-agent-version",
    "x-amz-date",
    "x-amz-target",
];

#[tokio::test]
async fn poll_sends_the_exact_body_and_signed_headers() {
    let fake = FakeService::start();
    let cmd = command("hc-1", "DownloadBundle", HOST, EXEC);
    fake.enqueue(HOST, cmd.clone());
    let client = client_for(&fake);

    assert_eq!(client.poll_host_command(HOST).await, Ok(Some(cmd)));
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));

    let polls = fake.requests_for("PollHostCommand");
    assert_eq!(polls.len(), 2);
    let r = &polls[0];
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/");
    assert_eq!(r.raw_body, format!(r#"{{"HostIdentifier":"{HOST}"}}"#));
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    assert_eq!(
        r.header("x-amz-target"),
        Some("CodeDeployCommandService_v20141006.PollHostCommand")
    );
    assert_eq!(
        r.header("x-amz-codedeploy-agent-version"),
        Some(TEST_AGENT_VERSION)
    );
    assert_eq!(r.header("user-agent"), Some(user_agent().as_str()));
    assert!(
        user_agent().starts_with("codedeploy-agent-rs/"),
        "{}",
        user_agent()
    );
    assert_eq!(r.header("x-amz-security-token"), None);
    assert_eq!(r.signed_headers(), SIGNED);
    let scope = r.credential_scope().expect("scope");
    assert!(
        scope.ends_with("/us-east-1/codedeploy-commands/aws4_request"),
        "{scope}"
    );
    assert_eq!(r.access_key.as_deref(), Some(ACCESS_KEY));
}

#[tokio::test]
async fn every_operation_sends_its_exact_shape() {
    let fake = FakeService::start();
    let spec = Envelope {
        format: "PKCS7/JSON".into(),
        payload: "-----BEGIN PKCS7-----\nMIIB\n-----END PKCS7-----\n".into(),
    };
    fake.set_spec(EXEC, "CodeDeploy", spec.clone());
    fake.set_ack_status("hc-2", Some("Succeeded"));
    fake.set_ack_status("hc-3", None);
    let client = client_for(&fake);

    let got = client
        .get_deployment_specification(EXEC, HOST)
        .await
        .expect("spec");
    assert_eq!(got.deployment_system.as_deref(), Some("CodeDeploy"));
    let ds = got.deployment_specification.expect("specification");
    assert_eq!(ds.generic_envelope, Some(spec));
    assert_eq!(ds.variant_envelope, None);

    let noop = Envelope::json(r#"{"IsCommandNoop":false}"#);
    assert_eq!(
        client
            .put_host_command_acknowledgement("hc-1", Some(&noop))
            .await,
        Ok(Some("InProgress".into()))
    );
    assert_eq!(
        client.put_host_command_acknowledgement("hc-2", None).await,
        Ok(Some("Succeeded".into()))
    );
    assert_eq!(
        client.put_host_command_acknowledgement("hc-3", None).await,
        Ok(None)
    );

    let payload = r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#;
    client
        .put_host_command_complete("hc-1", "Succeeded", Some(&Envelope::json(payload)))
        .await
        .expect("complete");
    client
        .put_host_command_complete("hc-2", "Failed", None)
        .await
        .expect("complete without diagnostics");

    let bodies: Vec<(String, String)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.target.clone(), r.raw_body.clone()))
        .collect();
    let p = "CodeDeployCommandService_v20141006";
    let expected = vec![
        (
            format!("{p}.GetDeploymentSpecification"),
            format!(r#"{{"DeploymentExecutionId":"{EXEC}","HostIdentifier":"{HOST}"}}"#),
        ),
        (
            format!("{p}.PutHostCommandAcknowledgement"),
            r#"{"HostCommandIdentifier":"hc-1","Diagnostics":{"Format":"JSON","Payload":"{\"IsCommandNoop\":false}"}}"#.to_owned(),
        ),
        (
            format!("{p}.PutHostCommandAcknowledgement"),
            r#"{"HostCommandIdentifier":"hc-2"}"#.to_owned(),
        ),
        (
            format!("{p}.PutHostCommandAcknowledgement"),
            r#"{"HostCommandIdentifier":"hc-3"}"#.to_owned(),
        ),
        (
            format!("{p}.PutHostCommandComplete"),
            r#"{"HostCommandIdentifier":"hc-1","CommandStatus":"Succeeded","Diagnostics":{"Format":"JSON","Payload":"{\"error_code\":0,\"script_name\":\"\",\"message\":\"Succeeded: \",\"log\":\"\"}"}}"#.to_owned(),
        ),
        (
            format!("{p}.PutHostCommandComplete"),
            r#"{"HostCommandIdentifier":"hc-2","CommandStatus":"Failed"}"#.to_owned(),
        ),
    ];
    assert_eq!(bodies, expected);
    for r in fake.requests() {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.signed_headers(), SIGNED, "{}", r.operation);
        assert_eq!(
            r.header("x-amz-codedeploy-agent-version"),
            Some(TEST_AGENT_VERSION)
        );
        assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    }

    assert_eq!(fake.acks().len(), 3);
    assert_eq!(fake.acks()[0].diagnostics, Some(noop));
    assert_eq!(
        fake.completes(),
        vec![
            Complete {
                host_command_identifier: "hc-1".into(),
                command_status: "Succeeded".into(),
                diagnostics: Some(Envelope::json(payload)),
            },
            Complete {
                host_command_identifier: "hc-2".into(),
                command_status: "Failed".into(),
                diagnostics: None,
            },
        ]
    );
}

#[tokio::test]
async fn unknown_execution_id_is_a_client_exception() {
    let fake = FakeService::start();
    let client = client_for(&fake);
    let r: Result<SpecificationResponse, _> =
        client.get_deployment_specification("x/y/z/w", HOST).await;
    let (code, status, _) = service_error(r);
    assert_eq!((code.as_str(), status), ("ClientException", 400));
}

#[tokio::test]
async fn secure_variant_uses_its_target_prefix_and_scope() {
    // Item 28 with the endpoint overridden to the fake: region us-west-2, enable_auth_policy.
    let fake = FakeService::start_with(FakeConfig::secure().region("us-west-2"));
    let config = ClientConfig::new(
        fake.url(),
        "us-west-2",
        ServiceVariant::from_auth_policy(true),
        TEST_AGENT_VERSION,
    );
    let client = client_with(config, fake.provider());
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    let r = &fake.requests()[0];
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-amz-target"),
        Some("CodeDeployCommandService.PollHostCommand")
    );
    let scope = r.credential_scope().expect("scope");
    assert!(
        scope.ends_with("/us-west-2/codedeploy-commands-secure/aws4_request"),
        "{scope}"
    );
    assert!(r.header("x-amz-codedeploy-agent-version").is_some());
}

#[tokio::test]
async fn default_client_against_the_secure_service_is_rejected() {
    let fake = FakeService::start_with(FakeConfig::secure());
    let config = ClientConfig::new(
        fake.url(),
        "us-east-1",
        ServiceVariant::Default,
        TEST_AGENT_VERSION,
    );
    let client = client_with(config, fake.provider());
    let (code, status, message) = service_error(client.poll_host_command(HOST).await);
    assert_eq!((code.as_str(), status), ("InvalidSignatureException", 403));
    assert!(message.contains("codedeploy-commands-secure"), "{message}");
}

#[tokio::test]
async fn wrong_target_prefix_is_an_unknown_operation() {
    // Signing name of the default model, target prefix of the secure one.
    let fake = FakeService::start_with(FakeConfig {
        target_prefix: ServiceVariant::Secure.target_prefix().into(),
        ..FakeConfig::default()
    });
    let client = client_with(
        ClientConfig::new(
            fake.url(),
            "us-east-1",
            ServiceVariant::Default,
            TEST_AGENT_VERSION,
        ),
        fake.provider(),
    );
    let err = client.poll_host_command(HOST).await.expect_err("rejected");
    assert!(!err.is_throttling());
    assert!(!err.is_retryable());
    let (code, status, _) = service_error(Err::<(), _>(err));
    assert_eq!((code.as_str(), status), ("UnknownOperationException", 400));
}

#[tokio::test]
async fn wrong_region_or_secret_fails_the_signature_check() {
    let fake = FakeService::start();
    let mut config = fake.client_config();
    config.region = "eu-west-1".into();
    let client = client_with(config, fake.provider());
    let (code, status, message) = service_error(client.poll_host_command(HOST).await);
    assert_eq!((code.as_str(), status), ("InvalidSignatureException", 403));
    assert!(message.contains("eu-west-1"), "{message}");

    let wrong = TestCredentials::new(ACCESS_KEY, "not-the-secret").provider();
    let client = client_with(fake.client_config(), wrong);
    let (code, status, message) = service_error(client.poll_host_command(HOST).await);
    assert_eq!((code.as_str(), status), ("InvalidSignatureException", 403));
    assert!(message.contains("does not match"), "{message}");

    let unknown = TestCredentials::new("AKIDUNKNOWN", SECRET_KEY).provider();
    let client = client_with(fake.client_config(), unknown);
    let (code, status, _) = service_error(client.poll_host_command(HOST).await);
    assert_eq!(
        (code.as_str(), status),
        ("UnrecognizedClientException", 403)
    );
}

#[tokio::test]
async fn session_credentials_send_and_sign_the_security_token() {
    let creds = TestCredentials::new("ASIAFAKESESSION", "session-secret")
        .with_session_token("IQoJb3JpZ2luX2VjEFAKE/TOKEN+with/slashes==");
    let fake = FakeService::start_with(FakeConfig::default().credentials(vec![creds.clone()]));
    let client = client_for(&fake);
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    let r = &fake.requests()[0];
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-amz-security-token"),
        creds.session_token.as_deref()
    );
    assert!(
        r.signed_headers()
            .contains(&"x-amz-security-token".to_owned()),
        "{:?}",
        r.signed_headers()
    );

    // The same key with another token is refused.
    let stale = TestCredentials {
        session_token: Some("expired-token".into()),
        ..creds
    };
    let client = client_with(fake.client_config(), stale.provider());
    let (code, status, _) = service_error(client.poll_host_command(HOST).await);
    assert_eq!(
        (code.as_str(), status),
        ("UnrecognizedClientException", 403)
    );
}

#[tokio::test]
async fn server_errors_and_throttling_map_to_service_errors() {
    let fake = FakeService::start();
    let client = client_for(&fake);

    fake.inject(Some("PollHostCommand"), Fault::ServerError, 1);
    let err = client.poll_host_command(HOST).await.expect_err("500");
    assert!(err.is_retryable());
    assert!(!err.is_throttling());
    match &err {
        ControlError::Service {
            code, status, body, ..
        } => {
            assert_eq!((code.as_str(), *status), ("ServerException", 500));
            assert!(body.contains("#ServerException"), "{body}");
        }
        other => panic!("{other:?}"),
    }

    fake.inject(None, Fault::Throttle, 1);
    let err = client
        .put_host_command_complete("hc-1", "Succeeded", None)
        .await
        .expect_err("throttled");
    assert!(err.is_throttling());
    assert!(err.is_retryable());
    assert_eq!(
        err,
        ControlError::Service {
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
            status: 400,
            body: r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into(),
        }
    );
    assert!(fake.completes().is_empty());

    // Faults are used up: the next calls succeed.
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    client
        .put_host_command_complete("hc-1", "Succeeded", None)
        .await
        .expect("complete");
    assert_eq!(fake.completes().len(), 1);
}

#[tokio::test]
async fn faults_for_one_operation_leave_others_alone() {
    let fake = FakeService::start();
    let client = client_for(&fake);
    fake.inject(Some("PutHostCommandComplete"), Fault::ServerError, 2);
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    for _ in 0..2 {
        let (code, ..) =
            service_error(client.put_host_command_complete("hc", "Failed", None).await);
        assert_eq!(code, "ServerException");
    }
    client
        .put_host_command_complete("hc", "Failed", None)
        .await
        .expect("third complete succeeds");
}

#[tokio::test]
async fn dropped_connection_is_a_network_error() {
    let fake = FakeService::start();
    let client = client_for(&fake);
    fake.inject(Some("PollHostCommand"), Fault::Drop, 1);
    let err = client.poll_host_command(HOST).await.expect_err("dropped");
    assert!(matches!(err, ControlError::Network(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("Network error: PollHostCommand"),
        "{err}"
    );
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
}

#[tokio::test]
async fn connection_refused_is_a_network_error() {
    let fake = FakeService::start();
    let config = fake.client_config();
    drop(fake);
    let client = client_with(
        config,
        TestCredentials::new(ACCESS_KEY, SECRET_KEY).provider(),
    );
    let err = client.poll_host_command(HOST).await.expect_err("refused");
    assert!(matches!(err, ControlError::Network(_)), "{err:?}");
}

#[tokio::test]
async fn read_timeout_is_honoured() {
    let fake = FakeService::start();
    let mut config = fake.client_config();
    config.read_timeout = Duration::from_millis(300);
    let client = client_with(config, fake.provider());

    fake.inject(
        Some("PollHostCommand"),
        Fault::Delay(Duration::from_secs(3)),
        1,
    );
    let started = Instant::now();
    let err = client.poll_host_command(HOST).await.expect_err("timeout");
    let took = started.elapsed();
    assert!(
        matches!(&err, ControlError::Network(m) if m.contains("timed out")),
        "{err:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A delay under the timeout is fine.
    fake.inject(
        Some("PollHostCommand"),
        Fault::Delay(Duration::from_millis(50)),
        1,
    );
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));

    // A Complete that hangs past the timeout is not applied; the retry is.
    fake.time_out_completes(1, Duration::from_secs(3));
    let err = client
        .put_host_command_complete("hc-9", "Succeeded", None)
        .await
        .expect_err("complete timed out");
    assert!(matches!(err, ControlError::Network(_)), "{err:?}");
    assert!(fake.completes().is_empty());
    client
        .put_host_command_complete("hc-9", "Succeeded", None)
        .await
        .expect("retry");
    let completes = fake.wait_for_completes(1, Duration::from_secs(5));
    assert_eq!(completes[0].host_command_identifier, "hc-9");
}

#[tokio::test]
async fn long_poll_answers_as_soon_as_a_command_is_queued() {
    let fake = Arc::new(FakeService::start());
    fake.set_long_poll(Duration::from_millis(400));
    let client = client_for(&fake);

    let started = Instant::now();
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    assert!(started.elapsed() >= Duration::from_millis(400));

    fake.set_long_poll(Duration::from_secs(20));
    let cmd = command("hc-lp", "Install", HOST, EXEC);
    let arrived = fake.arrival_count();
    let enqueuer = {
        let fake = Arc::clone(&fake);
        let cmd = cmd.clone();
        std::thread::spawn(move || {
            // Enqueue while the poll is held: once it has reached the fake.
            let deadline = Instant::now() + Duration::from_secs(10);
            while fake.arrival_count() == arrived && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            fake.enqueue(HOST, cmd);
        })
    };
    let started = Instant::now();
    assert_eq!(client.poll_host_command(HOST).await, Ok(Some(cmd)));
    assert!(started.elapsed() < Duration::from_secs(5));
    enqueuer.join().expect("enqueuer");
}

#[tokio::test]
async fn dropping_the_fake_releases_a_held_poll() {
    let fake = FakeService::start();
    fake.set_long_poll(Duration::from_secs(60));
    let client = client_for(&fake);
    let poll = tokio::spawn(async move { client.poll_host_command(HOST).await });
    // Drop the fake once the poll is held there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.arrival_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.arrival_count(), 1, "the poll reached the fake");
    let started = Instant::now();
    tokio::task::spawn_blocking(move || drop(fake))
        .await
        .expect("drop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Either the held poll was answered empty on the way out or its connection was closed.
    let r = poll.await.expect("poll task");
    assert!(
        matches!(r, Ok(None) | Err(ControlError::Network(_))),
        "{r:?}"
    );
}

/// Credentials that the test can swap between calls.
#[derive(Debug, Clone)]
struct Rotating(Arc<Mutex<Result<Credentials, String>>>);

impl ProvideCredentials for Rotating {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let current = self.0.lock().expect("lock").clone();
        future::ProvideCredentials::ready(current.map_err(CredentialsError::not_loaded))
    }
}

#[tokio::test]
async fn rotated_credentials_are_used_on_the_next_call() {
    let first = TestCredentials::new(ACCESS_KEY, SECRET_KEY);
    let second =
        TestCredentials::new("AKIDROTATED0002", "rotated-secret").with_session_token("token-2");
    let fake = FakeService::start_with(
        FakeConfig::default().credentials(vec![first.clone(), second.clone()]),
    );
    let slot = Arc::new(Mutex::new(Ok(first.to_aws())));
    let client = client_with(
        fake.client_config(),
        SharedCredentialsProvider::new(Rotating(Arc::clone(&slot))),
    );

    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    *slot.lock().expect("lock") = Ok(second.to_aws());
    fake.revoke_credentials(ACCESS_KEY);
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));

    let keys: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.access_key).collect();
    assert_eq!(
        keys,
        vec![
            Some(ACCESS_KEY.to_owned()),
            Some("AKIDROTATED0002".to_owned())
        ]
    );
    assert_eq!(
        fake.requests()[1].header("x-amz-security-token"),
        Some("token-2")
    );
    assert!(fake.requests().iter().all(|r| r.status == 200));

    // No credentials at all: a Credentials error, nothing sent.
    *slot.lock().expect("lock") = Err("no instance profile".into());
    let err = client.poll_host_command(HOST).await.expect_err("no creds");
    assert!(
        matches!(&err, ControlError::Credentials(m) if m.contains("no instance profile")),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

/// A key rotated (or revoked) while the agent's cached copy is still inside its lifetime:
/// the service refuses it with `UnrecognizedClientException`, and the next call must sign with
/// credentials fetched anew, not the cached ones until they expire (issue #13, item 2).
#[tokio::test]
async fn a_refused_credential_is_fetched_anew_for_the_next_call() {
    use codedeploy_agent::control::ErrorClass;
    use codedeploy_agent::control::identity::RefreshingCredentials;

    let first = TestCredentials::new(ACCESS_KEY, SECRET_KEY);
    let second = TestCredentials::new("AKIDROTATED0003", "rotated-secret-3");
    let fake = FakeService::start_with(
        FakeConfig::default().credentials(vec![first.clone(), second.clone()]),
    );
    let slot = Arc::new(Mutex::new(Ok(first.to_aws())));
    // Cached for an hour, refreshed 5 minutes before: only a forced refresh asks again.
    let cache = RefreshingCredentials::with_timing(
        SharedCredentialsProvider::new(Rotating(Arc::clone(&slot))),
        Duration::from_secs(300),
        Duration::from_secs(3600),
    );
    let refresh = cache.refresh_handle();
    let client = client_with(fake.client_config(), SharedCredentialsProvider::new(cache))
        .with_credentials_refresh(refresh);

    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    *slot.lock().expect("lock") = Ok(second.to_aws());
    fake.revoke_credentials(ACCESS_KEY);

    let refused = client
        .poll_host_command(HOST)
        .await
        .expect_err("revoked key");
    assert_eq!(refused.class(), ErrorClass::Refresh, "{refused:?}");
    assert_eq!(client.poll_host_command(HOST).await, Ok(None));

    let keys: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.access_key).collect();
    assert_eq!(
        keys,
        vec![
            Some(ACCESS_KEY.to_owned()),
            Some(ACCESS_KEY.to_owned()),
            Some("AKIDROTATED0003".to_owned())
        ]
    );
}

#[tokio::test]
async fn proxy_uri_with_userinfo_is_used() {
    // The fake doubles as a forward proxy for plain http: it sees the absolute-form request
    // and the Proxy-Authorization header; the signature still covers the real host.
    let fake = FakeService::start();
    let mut config = fake.client_config();
    config.endpoint = "http://codedeploy-commands.us-east-1.amazonaws.com".into();
    config.proxy_uri = Some(format!("http://proxyuser:proxy%20pass@{}", fake.addr()));
    let client = client_with(config, fake.provider());

    assert_eq!(client.poll_host_command(HOST).await, Ok(None));
    let r = &fake.requests()[0];
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.path,
        "http://codedeploy-commands.us-east-1.amazonaws.com/"
    );
    assert_eq!(
        r.header("host"),
        Some("codedeploy-commands.us-east-1.amazonaws.com")
    );
    // base64("proxyuser:proxy pass")
    assert_eq!(
        r.header("proxy-authorization"),
        Some("Basic cHJveHl1c2VyOnByb3h5IHBhc3M=")
    );
}

#[test]
fn fake_service_works_from_sync_code_and_stops_on_drop() {
    let fake = FakeService::start();
    let url = fake.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = client_for(&fake);
    assert_eq!(rt.block_on(client.poll_host_command(HOST)), Ok(None));
    drop(fake);
    // Nothing listens any more.
    let addr = url.trim_start_matches("http://");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Sends one raw HTTP/1.1 request to the fake and returns the status line and body.
fn raw_request(fake: &FakeService, head: &str, body: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(fake.addr()).expect("connect");
    let request = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn fake_verifies_a_botocore_signature_and_rejects_a_tampered_body() {
    // The request and signature of build-notes.md §2, identical to botocore's SigV4Auth at
    // 2023-11-14T22:13:20Z: an independent check of the fake's verifier.
    let fake = FakeService::start_with(FakeConfig {
        credentials: vec![TestCredentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )],
        max_clock_skew: None,
        ..FakeConfig::default()
    });
    let head = "POST / HTTP/1.1\r\n\
        Host: codedeploy-commands.us-east-1.amazonaws.com\r\n\
        Content-Type: application/x-amz-json-1.1\r\n\
        X-Amz-Target: CodeDeployCommandService_v20141006.PollHostCommand\r\n\
        X-Amz-Date: 20231114T221320Z\r\n\
        Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/codedeploy-commands/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=3d8e8b9264a6c59835df9d564a559b5fdabe5eff2bb2ef2879ed6227edc8dc29\r\n";
    let body = r#"{"HostIdentifier":"arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"}"#;
    let (status, answer) = raw_request(&fake, head, body);
    assert_eq!(status, "HTTP/1.1 200 OK", "{answer}");
    assert_eq!(answer, "{}");

    let tampered = body.replace("i-0abc", "i-0abd");
    let (status, answer) = raw_request(&fake, head, &tampered);
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(answer.contains("InvalidSignatureException"), "{answer}");

    let (status, answer) = raw_request(
        &fake,
        &head.replace(
            "X-Amz-Date: 20231114T221320Z",
            "X-Amz-Date: 20231114T221321Z",
        ),
        body,
    );
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(answer.contains("InvalidSignatureException"), "{answer}");

    // Unsigned requests are refused too.
    let (status, answer) = raw_request(
        &fake,
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: CodeDeployCommandService_v20141006.PollHostCommand\r\n",
        body,
    );
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(
        answer.contains("MissingAuthenticationTokenException"),
        "{answer}"
    );

    // With the default skew check the 2023 date is refused.
    let strict = FakeService::start_with(FakeConfig {
        credentials: vec![TestCredentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        )],
        ..FakeConfig::default()
    });
    let (status, answer) = raw_request(&strict, head, body);
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(answer.contains("Signature expired"), "{answer}");
}
