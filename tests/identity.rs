//! Host identity against a fake IMDS on 127.0.0.1: the IMDS call counts agent-behaviour.md §1.5
//! pins, token refresh, region/domain, the on-premises configuration (§8.2) with its exact
//! messages, the endpoint checks (§1.3), and the credentials providers.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use codedeploy_agent::config::Config;
use codedeploy_agent::control::identity::{
    self, Identity, Imds, ImdsError, RefreshingCredentials, resolve_with_env,
};
use codedeploy_agent::control::onprem::{self, OnPremCredentials, SessionFileCredentials};
use support::fake_imds::FakeImds;

const ARN: &str = "arn:aws:ec2:us-west-2:111122223333:instance/i-0123456789abcdef0";
const FAST: [Duration; 2] = [Duration::from_millis(1), Duration::from_millis(2)];

fn imds(fake: &FakeImds) -> Imds {
    Imds::builder()
        .endpoint(fake.url())
        .retry_delays(FAST)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("imds client")
}

fn imds_v1_disabled(fake: &FakeImds) -> Imds {
    Imds::builder()
        .endpoint(fake.url())
        .retry_delays(FAST)
        .disable_v1(true)
        .build()
        .expect("imds client")
}

/// A configuration whose on-premises file is `onprem` (need not exist).
fn config(onprem: &Path) -> Config {
    let mut c = Config::system_defaults();
    c.on_premises_config_file = onprem.to_path_buf();
    c
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

// ---- IMDS ----------------------------------------------------------------------------------

#[tokio::test]
async fn host_identifier_with_working_v2_is_one_put_one_partition_one_document() {
    let fake = FakeImds::start();
    let arn = imds(&fake).host_identifier().await.expect("arn");
    assert_eq!(arn, ARN);
    assert_eq!(fake.token_puts(), 1);
    assert_eq!(fake.count("GET", "/latest/meta-data/services/partition"), 1);
    assert_eq!(
        fake.count("GET", "/latest/dynamic/instance-identity/document"),
        1
    );
    let seen = fake.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].ttl.as_deref(), Some("21600"));
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.token.as_deref() == Some("token-1")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn token_put_503_with_v1_allowed_makes_six_puts_for_two_reads() {
    let fake = FakeImds::start();
    fake.set(|s| s.token_status = Some(503));
    let arn = imds(&fake).host_identifier().await.expect("arn via IMDSv1");
    assert_eq!(arn, ARN);
    assert_eq!(fake.token_puts(), 6, "a failed token is not cached");
    let gets: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets.iter().all(|r| r.token.is_none()));
}

#[tokio::test]
async fn token_put_failure_with_v1_disabled_is_three_puts_then_the_aws_error() {
    let fake = FakeImds::start();
    fake.set(|s| s.token_status = Some(503));
    let err = imds_v1_disabled(&fake)
        .host_identifier()
        .await
        .expect_err("no v1");
    assert_eq!(
        err.to_string(),
        "HTTP error from metadata service to get imdsv2 token."
    );
    assert_eq!(fake.token_puts(), 3);
    assert_eq!(fake.requests().len(), 3, "no GET without a token");
}

#[tokio::test]
async fn a_401_clears_the_token_and_retries_once_with_a_new_one() {
    let fake = FakeImds::start();
    let client = imds(&fake);
    assert_eq!(client.partition().await.as_deref(), Some("aws"));
    fake.clear_requests();
    fake.set(|s| s.unauthorized_gets = 1);
    assert_eq!(client.domain().await.as_deref(), Some("amazonaws.com"));
    let seen = fake.requests();
    let summary: Vec<_> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.token.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", Some("token-1")),
            ("PUT", None),
            ("GET", Some("token-2"))
        ]
    );
    // The new token is cached.
    fake.clear_requests();
    assert!(client.instance_id().await.is_some());
    assert_eq!(fake.token_puts(), 0);
}

#[tokio::test]
async fn a_401_then_no_new_token_falls_back_to_v1_unless_disabled() {
    for disable_v1 in [false, true] {
        let fake = FakeImds::start();
        let client = if disable_v1 {
            imds_v1_disabled(&fake)
        } else {
            imds(&fake)
        };
        assert!(client.partition().await.is_some());
        fake.clear_requests();
        fake.set(|s| {
            s.unauthorized_gets = 1;
            s.token_status = Some(503);
        });
        let result = client
            .get_metadata("/latest/meta-data/services/domain")
            .await;
        assert_eq!(fake.token_puts(), 3);
        if disable_v1 {
            assert_eq!(
                result.expect_err("no v1").to_string(),
                "HTTP error from metadata service to get imdsv2 token."
            );
        } else {
            assert_eq!(result.expect("v1").trim(), "amazonaws.com");
            let last = fake.requests().pop().expect("a request");
            assert_eq!((last.method.as_str(), last.token), ("GET", None));
        }
    }
}

#[tokio::test]
async fn bodies_are_stripped() {
    let fake = FakeImds::start();
    fake.set(|s| s.pad_bodies = true);
    let client = imds(&fake);
    assert_eq!(client.partition().await.as_deref(), Some("aws"));
    assert_eq!(client.domain().await.as_deref(), Some("amazonaws.com"));
    assert_eq!(client.region().await.as_deref(), Some("us-west-2"));
    assert_eq!(
        client.instance_id().await.as_deref(),
        Some("i-0123456789abcdef0")
    );
    assert_eq!(client.host_identifier().await.expect("arn"), ARN);
}

#[tokio::test]
async fn arn_uses_partition_and_document_fields() {
    let fake = FakeImds::start();
    fake.set(|s| {
        s.partition = "aws-cn".into();
        s.region = "cn-north-1".into();
        s.account_id = "444455556666".into();
        s.instance_id = "i-0feedface".into();
    });
    let client = imds(&fake);
    assert_eq!(
        client.host_identifier().await.expect("arn"),
        "arn:aws-cn:ec2:cn-north-1:444455556666:instance/i-0feedface"
    );
    assert_eq!(client.region().await.as_deref(), Some("cn-north-1"));
}

#[tokio::test]
async fn non_2xx_is_the_aws_message_after_three_attempts() {
    let fake = FakeImds::start();
    let err = imds(&fake)
        .get_metadata("/latest/meta-data/missing")
        .await
        .expect_err("404");
    assert_eq!(
        err.to_string(),
        "HTTP error from metadata service: Not Found, code 404"
    );
    assert_eq!(fake.count("GET", "/latest/meta-data/missing"), 3);
}

#[tokio::test]
async fn host_identifier_errors_propagate_and_the_getters_give_none() {
    let fake = FakeImds::start();
    fake.set(|s| s.document_override = Some("not json".into()));
    let client = imds(&fake);
    assert!(matches!(
        client.host_identifier().await,
        Err(ImdsError::Document { .. })
    ));
    assert_eq!(client.region().await, None);
    fake.set(|s| s.down = true);
    assert!(matches!(
        client.host_identifier().await,
        Err(ImdsError::Transport { .. })
    ));
    assert_eq!(client.partition().await, None);
    assert_eq!(client.domain().await, None);
    assert_eq!(client.instance_id().await, None);
}

#[tokio::test]
async fn imds_support_with_v2_only_v1_only_and_down() {
    let fake = FakeImds::start();
    fake.set(|s| s.v1_allowed = false);
    assert!(imds(&fake).is_supported().await, "v2 only");

    let fake = FakeImds::start();
    fake.set(|s| s.token_status = Some(404));
    assert!(imds(&fake).is_supported().await, "v1 only");
    assert_eq!(imds(&fake).region().await.as_deref(), Some("us-west-2"));

    let fake = FakeImds::start();
    fake.set(|s| s.down = true);
    assert!(!imds(&fake).is_supported().await, "down");
    assert_eq!(fake.token_puts(), 3);
    assert_eq!(fake.count("GET", "/latest/meta-data"), 3);
}

#[tokio::test]
async fn retry_sleeps_are_the_configured_ones() {
    let fake = FakeImds::start();
    fake.set(|s| s.down = true);
    let client = Imds::builder()
        .endpoint(fake.url())
        .retry_delays([Duration::from_millis(100), Duration::from_millis(200)])
        .build()
        .expect("client");
    let start = std::time::Instant::now();
    assert!(client.get_metadata("/latest/meta-data").await.is_err());
    // Token: 3 attempts (300 ms of sleeps), then the v1 GET: 3 attempts (300 ms).
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        identity::IMDS_RETRY_DELAYS,
        [Duration::from_secs(1), Duration::from_secs(2)]
    );
    assert_eq!(identity::IMDS_TIMEOUT, Duration::from_secs(10));
}

#[test]
fn the_fake_works_from_sync_code() {
    let fake = FakeImds::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    assert_eq!(
        rt.block_on(imds(&fake).host_identifier()).expect("arn"),
        ARN
    );
}

// ---- Identity resolution -------------------------------------------------------------------

#[tokio::test]
async fn ec2_identity_comes_from_imds() {
    let fake = FakeImds::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let id = resolve_with_env(
        &config(&dir.path().join("absent.yml")),
        &imds(&fake),
        no_env,
    )
    .await
    .expect("identity");
    assert_eq!(id.region, "us-west-2");
    assert_eq!(id.host_identifier, ARN);
    assert!(!id.on_prem);
    assert_eq!(id.onprem_config, None);
    assert_eq!(id.endpoint_region(), "us-west-2");
    assert_eq!(id.endpoint_domain(), "amazonaws.com");
}

#[tokio::test]
async fn env_overrides_signing_region_and_host_identifier_but_not_the_imds_endpoint_region() {
    let fake = FakeImds::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("AWS_REGION", "eu-west-1"),
        ("AWS_HOST_IDENTIFIER", "arn:aws:iam::1:user/x"),
    ]);
    let id = resolve_with_env(&config(&dir.path().join("absent.yml")), &imds(&fake), env)
        .await
        .expect("identity");
    assert_eq!(id.region, "eu-west-1");
    assert_eq!(id.host_identifier, "arn:aws:iam::1:user/x");
    assert_eq!(
        fake.count("GET", "/latest/meta-data/services/partition"),
        0,
        "no IMDS host identifier when the environment names one"
    );
    assert_eq!(
        id.endpoint_region(),
        "us-west-2",
        "§1.3: IMDS wins for the endpoint"
    );
}

#[tokio::test]
async fn onprem_iam_user_wins_over_env_and_skips_imds_host_identifier() {
    let fake = FakeImds::start();
    fake.set(|s| s.down = true);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "onprem.yml",
        "---\nregion: cn-north-1\naws_access_key_id: AKIAUSER\naws_secret_access_key: s3cr3t\niam_user_arn: arn:aws-cn:iam::1:user/host\n",
    );
    let env = env_of(&[
        ("AWS_REGION", "eu-west-1"),
        ("AWS_HOST_IDENTIFIER", "from-env"),
    ]);
    let id = resolve_with_env(&config(&file), &imds(&fake), env)
        .await
        .expect("identity");
    assert_eq!(id.region, "cn-north-1");
    assert_eq!(id.host_identifier, "arn:aws-cn:iam::1:user/host");
    assert!(id.on_prem);
    assert_eq!(id.imds_location, None);
    assert_eq!(id.endpoint_region(), "cn-north-1");
    assert_eq!(id.endpoint_domain(), "amazonaws.com.cn");
}

#[tokio::test]
async fn onprem_with_imds_checks_domain_and_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "onprem.yml",
        "region: us-east-1\niam_session_arn: arn:aws:sts::1:assumed-role/r/s\naws_credentials_file: /nonexistent\n",
    );
    for (domain, region, expected) in [
        ("amazonaws.com", "us-west-2", None),
        ("amazonaws.com.cn", "cn-northwest-1", None),
        ("amazonaws.eu", "eusc-de-east-1", None),
        (
            "example.org",
            "us-west-2",
            Some("Unknown domain: example.org"),
        ),
        (
            "amazonaws.com.cn",
            "us-west-2",
            Some("Invalid region: us-west-2"),
        ),
        (
            "amazonaws.com",
            "a-region-name-too-long-1",
            Some("Invalid region: a-region-name-too-long-1"),
        ),
    ] {
        let fake = FakeImds::start();
        fake.set(|s| {
            s.domain = domain.into();
            s.region = region.into();
        });
        let result = resolve_with_env(&config(&file), &imds(&fake), no_env).await;
        match expected {
            None => {
                let id = result.expect("valid");
                assert_eq!(id.endpoint_domain(), domain);
                assert_eq!(id.endpoint_region(), region);
                assert_eq!(id.region, "us-east-1", "signing region from the file");
            }
            Some(message) => {
                assert_eq!(result.expect_err(message).to_string(), message);
            }
        }
    }
}

#[tokio::test]
async fn a_readable_onprem_file_without_arns_is_on_prem_but_uses_imds_identity() {
    let fake = FakeImds::start();
    fake.set(|s| s.domain = "example.org".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "onprem.yml", "region: us-east-1\n");
    let err = resolve_with_env(&config(&file), &imds(&fake), no_env)
        .await
        .expect_err("checks apply");
    assert_eq!(err.to_string(), "Unknown domain: example.org");
}

#[tokio::test]
async fn a_configured_endpoint_means_imds_is_not_asked_for_the_location() {
    let fake = FakeImds::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "onprem.yml",
        "region: us-east-1\naws_access_key_id: A\naws_secret_access_key: B\niam_user_arn: arn:aws:iam::1:user/h\n",
    );
    let mut c = config(&file);
    c.deploy_control_endpoint = Some("https://tempuri".into());
    let id = resolve_with_env(&c, &imds(&fake), no_env)
        .await
        .expect("identity");
    assert_eq!(id.imds_location, None);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test]
async fn no_region_anywhere_is_an_error() {
    let fake = FakeImds::start();
    fake.set(|s| s.down = true);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[("AWS_HOST_IDENTIFIER", "h")]);
    let err = resolve_with_env(&config(&dir.path().join("absent.yml")), &imds(&fake), env)
        .await
        .expect_err("no region");
    assert!(matches!(err, identity::IdentityError::NoRegion), "{err}");
}

#[tokio::test]
async fn ec2_without_imds_cannot_name_the_host() {
    let fake = FakeImds::start();
    fake.set(|s| s.down = true);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = resolve_with_env(
        &config(&dir.path().join("absent.yml")),
        &imds(&fake),
        no_env,
    )
    .await
    .expect_err("no host id");
    assert!(matches!(err, identity::IdentityError::Imds(_)), "{err}");
}

#[tokio::test]
async fn onprem_errors_stop_resolution() {
    let fake = FakeImds::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "onprem.yml", "region: [unclosed\n");
    let err = resolve_with_env(&config(&file), &imds(&fake), no_env)
        .await
        .expect_err("invalid");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the format of the following on-premises configuration file is invalid: {}",
            file.display()
        )
    );
}

// ---- On-premises configuration ---------------------------------------------------------------

fn parse(text: &str) -> Result<Option<onprem::OnPremConfig>, String> {
    onprem::parse(
        text,
        Path::new("/etc/codedeploy-agent/conf/codedeploy.onpremises.yml"),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn onprem_iam_user_mode() {
    let c = parse(
        "---\nregion: us-east-1\naws_access_key_id: AKIAEXAMPLE\naws_secret_access_key: wJalr/K7\niam_user_arn: arn:aws:iam::444455556666:user/CodeDeployUser-OnPrem\n",
    )
    .expect("valid")
    .expect("on-prem");
    assert_eq!(c.region, "us-east-1");
    assert_eq!(
        c.host_identifier,
        "arn:aws:iam::444455556666:user/CodeDeployUser-OnPrem"
    );
    assert_eq!(
        c.credentials,
        OnPremCredentials::IamUser {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "wJalr/K7".into()
        }
    );
    assert!(
        !format!("{c:?}").contains("wJalr"),
        "the secret stays out of Debug"
    );
}

#[test]
fn onprem_iam_session_mode() {
    let c = parse(
        "region: eu-west-1\niam_session_arn: arn:aws:sts::444455556666:assumed-role/CodeDeployInstanceRole/host-1\naws_credentials_file: /etc/codedeploy-agent/conf/.aws_credentials\n",
    )
    .expect("valid")
    .expect("on-prem");
    assert_eq!(c.region, "eu-west-1");
    assert_eq!(
        c.host_identifier,
        "arn:aws:sts::444455556666:assumed-role/CodeDeployInstanceRole/host-1"
    );
    assert_eq!(
        c.credentials,
        OnPremCredentials::IamSession {
            credentials_file: "/etc/codedeploy-agent/conf/.aws_credentials".into()
        }
    );
}

#[test]
fn onprem_messages() {
    let user = [
        ("region", "us-east-1"),
        ("aws_access_key_id", "A"),
        ("aws_secret_access_key", "B"),
    ];
    for missing in ["region", "aws_access_key_id", "aws_secret_access_key"] {
        let mut text = String::from("iam_user_arn: arn:aws:iam::1:user/u\n");
        for (k, v) in user {
            if k != missing {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        assert_eq!(
            parse(&text).expect_err(missing),
            format!("'{missing}' key is required when 'iam_user_arn' is provided.")
        );
        // A null or false value is missing too, as in Ruby.
        let text = format!("{text}{missing}: ~\n");
        assert!(parse(&text).is_err(), "{text}");
    }
    for missing in ["region", "aws_credentials_file"] {
        let mut text = String::from("iam_session_arn: arn:aws:sts::1:assumed-role/r/s\n");
        for (k, v) in [("region", "us-east-1"), ("aws_credentials_file", "/c")] {
            if k != missing {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        assert_eq!(
            parse(&text).expect_err(missing),
            format!("'{missing}' key is required when 'iam_session_arn' is provided.")
        );
    }
    assert_eq!(
        parse("iam_user_arn: a\niam_session_arn: b\nregion: r\n").expect_err("both"),
        "On Premises config cannot contain both 'iam_user_arn' and 'iam_session_arn' keys."
    );
    assert_eq!(parse("region: us-east-1\n").expect("neither"), None);
    assert_eq!(
        parse(":iam_user_arn: a\n").expect("symbol keys are other keys"),
        None
    );
    for bad in [
        "region: [unclosed\n",
        "",
        "- a list\n",
        "just text\n",
        "region: &a x\nother: *a\n",
        "region:\n  nested: value\n",
    ] {
        assert_eq!(
            parse(bad).expect_err(bad),
            "The deployment failed because the format of the following on-premises configuration file is invalid: /etc/codedeploy-agent/conf/codedeploy.onpremises.yml",
            "{bad:?}"
        );
    }
}

#[test]
fn onprem_load_absent_file_is_not_on_prem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("absent.yml");
    assert!(!onprem::is_readable(&absent));
    assert_eq!(onprem::load(&absent).expect("absent is fine"), None);
    let file = write(dir.path(), "bad.yml", "{ unclosed\n");
    assert!(onprem::is_readable(&file));
    assert!(onprem::load(&file).is_err());
}

// ---- Credentials -----------------------------------------------------------------------------

fn credentials_file(dir: &Path, key: &str) -> PathBuf {
    write(
        dir,
        "credentials",
        &format!(
            "[other]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n[default]\naws_access_key_id = {key}\naws_secret_access_key = secret-{key}\naws_session_token = token-{key}\n"
        ),
    )
}

#[tokio::test]
async fn session_file_is_re_read_on_every_refresh_with_a_30_minute_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = credentials_file(dir.path(), "ASIAONE");
    let provider = SessionFileCredentials::new(&path);
    let before = SystemTime::now();
    let c = provider.provide_credentials().await.expect("creds");
    assert_eq!(c.access_key_id(), "ASIAONE");
    assert_eq!(c.secret_access_key(), "secret-ASIAONE");
    assert_eq!(c.session_token(), Some("token-ASIAONE"));
    let expiry = c.expiry().expect("expiry");
    assert!(expiry >= before + Duration::from_secs(1800));
    assert!(expiry <= SystemTime::now() + Duration::from_secs(1800));

    credentials_file(dir.path(), "ASIATWO");
    let c = provider.provide_credentials().await.expect("creds");
    assert_eq!(c.access_key_id(), "ASIATWO");
}

#[tokio::test]
async fn session_file_failures_use_the_aws_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let err = SessionFileCredentials::new(&missing)
        .load()
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!("Failed to load credentials from path {}", missing.display())
    );
    let no_default = write(dir.path(), "creds", "[other]\naws_access_key_id = A\n");
    let err = SessionFileCredentials::new(&no_default)
        .load()
        .expect_err("no default profile");
    assert_eq!(
        err.to_string(),
        format!(
            "Failed to load credentials from path {}",
            no_default.display()
        )
    );
    assert!(
        SessionFileCredentials::new(&missing)
            .provide_credentials()
            .await
            .is_err()
    );
}

fn onprem_identity(onprem: onprem::OnPremConfig) -> Identity {
    Identity {
        region: onprem.region.clone(),
        host_identifier: onprem.host_identifier.clone(),
        on_prem: true,
        onprem_config: Some(onprem),
        imds_location: None,
    }
}

#[tokio::test]
async fn onprem_session_provider_refreshes_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = credentials_file(dir.path(), "ASIAONE");
    let onprem = parse(&format!(
        "region: us-east-1\niam_session_arn: arn:aws:sts::1:assumed-role/r/s\naws_credentials_file: {}\n",
        path.display()
    ))
    .expect("valid")
    .expect("on-prem");

    // The agent's provider caches for the 30 minutes minus its refresh buffer.
    let provider = identity::credentials_provider(
        &Config::system_defaults(),
        &onprem_identity(onprem.clone()),
        "http://127.0.0.1:9",
    )
    .await;
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAONE"
    );
    credentials_file(dir.path(), "ASIATWO");
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAONE",
        "still valid: served from the cache"
    );

    // Once the cached ones are within the refresh window, the file is read again.
    let eager = RefreshingCredentials::with_timing(
        onprem.credentials_provider(),
        Duration::from_secs(1801),
        Duration::from_secs(60),
    );
    assert_eq!(
        eager
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIATWO"
    );
    credentials_file(dir.path(), "ASIATHREE");
    assert_eq!(
        eager
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIATHREE"
    );
}

#[tokio::test]
async fn onprem_iam_user_provider_gives_the_static_keys() {
    let onprem = parse(
        "region: us-east-1\naws_access_key_id: AKIAUSER\naws_secret_access_key: s3cr3t\niam_user_arn: arn:aws:iam::1:user/h\n",
    )
    .expect("valid")
    .expect("on-prem");
    let provider = identity::credentials_provider(
        &Config::system_defaults(),
        &onprem_identity(onprem),
        "http://127.0.0.1:9",
    )
    .await;
    let c = provider.provide_credentials().await.expect("creds");
    assert_eq!(c.access_key_id(), "AKIAUSER");
    assert_eq!(c.secret_access_key(), "s3cr3t");
    assert_eq!(c.session_token(), None);
}

fn ec2_identity() -> Identity {
    Identity {
        region: "us-west-2".into(),
        host_identifier: ARN.into(),
        on_prem: false,
        onprem_config: None,
        imds_location: None,
    }
}

#[tokio::test]
async fn default_chain_gets_instance_profile_credentials_from_imds() {
    let fake = FakeImds::start();
    let provider =
        identity::credentials_provider(&Config::system_defaults(), &ec2_identity(), &fake.url())
            .await;
    let c = provider.provide_credentials().await.expect("creds");
    assert_eq!(c.access_key_id(), "ASIAFIRST");
    assert_eq!(c.secret_access_key(), "secret-first");
    assert_eq!(c.session_token(), Some("session-first"));
    assert_eq!(
        fake.count(
            "GET",
            "/latest/meta-data/iam/security-credentials/agent-role"
        ),
        1
    );
    // Cached while valid.
    provider.provide_credentials().await.expect("creds");
    assert_eq!(
        fake.count(
            "GET",
            "/latest/meta-data/iam/security-credentials/agent-role"
        ),
        1
    );
}

#[tokio::test]
async fn default_chain_picks_up_rotated_credentials_after_expiry() {
    let fake = FakeImds::start();
    // Valid for 2 s beyond the 10 s refresh buffer used here.
    fake.rotate_credentials("ASIAONE", Duration::from_secs(12));
    let chain = identity::default_chain("us-west-2", &fake.url(), false);
    let provider = SharedCredentialsProvider::new(RefreshingCredentials::with_timing(
        chain,
        Duration::from_secs(10),
        Duration::from_secs(60),
    ));
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAONE"
    );
    fake.rotate_credentials("ASIATWO", Duration::from_secs(3600));
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAONE",
        "not yet due"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIATWO"
    );
}

#[tokio::test]
async fn the_agent_provider_refreshes_credentials_inside_its_window() {
    // Instance-profile credentials that expire within the 5-minute refresh buffer are fetched
    // again on the next call, so a rotation shows up at once.
    let fake = FakeImds::start();
    fake.rotate_credentials("ASIAONE", Duration::from_secs(240));
    let provider =
        identity::credentials_provider(&Config::system_defaults(), &ec2_identity(), &fake.url())
            .await;
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAONE"
    );
    fake.rotate_credentials("ASIATWO", Duration::from_secs(3600));
    assert_eq!(
        provider
            .provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIATWO"
    );
}

#[test]
fn test_profiles_that_keep_environment_credentials() {
    assert!(identity::keeps_environment_credentials("beta"));
    assert!(identity::keeps_environment_credentials("gamma"));
    assert!(!identity::keeps_environment_credentials("prod"));
    assert_eq!(Config::system_defaults().codedeploy_test_profile, "prod");
    let c = Config::parse(
        ":root_dir: /a\n:codedeploy_test_profile: beta\n",
        Path::new("conf.yml"),
    )
    .expect("config");
    assert_eq!(c.codedeploy_test_profile, "beta");
}

/// Environment credentials are only used for the beta/gamma test profiles. The environment is
/// process-wide, so the check runs in a child copy of this test binary with its own environment.
#[test]
fn environment_credentials_are_left_out_unless_beta_or_gamma() {
    let fake = FakeImds::start();
    let home = tempfile::tempdir().expect("empty home");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_environment_credentials",
            "--ignored",
            "--nocapture",
        ])
        .env("CHILD_FAKE_IMDS", fake.url())
        .env("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret")
        .env("HOME", home.path())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by environment_credentials_are_left_out_unless_beta_or_gamma"]
async fn child_environment_credentials() {
    let url = std::env::var("CHILD_FAKE_IMDS").expect("run from the parent test");
    let identity = ec2_identity();
    let mut config = Config::system_defaults();
    let prod = identity::credentials_provider(&config, &identity, &url).await;
    assert_eq!(
        prod.provide_credentials()
            .await
            .expect("creds")
            .access_key_id(),
        "ASIAFIRST"
    );
    for profile in ["beta", "gamma"] {
        config.codedeploy_test_profile = profile.into();
        let test = identity::credentials_provider(&config, &identity, &url).await;
        assert_eq!(
            test.provide_credentials()
                .await
                .expect("creds")
                .access_key_id(),
            "AKIAFROMENV"
        );
    }
}
