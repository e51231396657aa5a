//! The shared signing helper (`tests/support/signing.rs`) used from a test file of its own,
//! the way other tests use it, and cross-checked against `openssl smime -verify` so that what
//! it calls valid or tampered is what OpenSSL calls so, independently of our verifier.

mod support;

use std::process::Command;

use codedeploy_agent::spec::parse_envelope;
use support::signing::{self, sign_spec_pem};

const SPEC: &str = r#"{"DeploymentId":"d-HELPER","DeploymentGroupId":"dg","DeploymentGroupName":"g","ApplicationName":"a","Revision":{"RevisionType":"S3","S3Revision":{"Bucket":"b","Key":"k","BundleType":"tgz"}}}"#;

/// `openssl smime -verify -noverify` (the AWS agents' NOVERIFY): Ok(content) or Err(stderr).
fn openssl_verify(pem: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spec.pem");
    std::fs::write(&path, pem).expect("write");
    let out = Command::new("openssl")
        .args([
            "smime",
            "-verify",
            "-noverify",
            "-binary",
            "-inform",
            "PEM",
            "-in",
        ])
        .arg(&path)
        .output()
        .expect("run openssl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn helper_output_is_what_openssl_and_the_envelope_accept() {
    if !support::require::openssl() {
        return;
    }
    let pem = sign_spec_pem(SPEC);
    assert_eq!(openssl_verify(&pem).as_deref(), Ok(SPEC));
    let spec = parse_envelope(Some("PKCS7/JSON"), &pem, false).expect("valid");
    assert_eq!(spec.deployment_id, "d-HELPER");
    // Cached credentials: a second signing works and verifies too.
    assert!(parse_envelope(Some("PKCS7/JSON"), &sign_spec_pem(SPEC), false).is_ok());
}

#[test]
fn helper_tampering_is_what_openssl_rejects() {
    if !support::require::openssl() {
        return;
    }
    let pem = sign_spec_pem(SPEC);
    assert_eq!(
        openssl_verify(&signing::reencode(&pem)).as_deref(),
        Ok(SPEC)
    );
    for (name, bad, openssl_says, we_say) in [
        (
            "tamper",
            signing::tamper(&pem),
            "digest failure",
            "PKCS7 signature verification failed: digest failure",
        ),
        (
            "swap_content",
            signing::swap_content(&pem, r#"{"DeploymentId":"d-EVIL"}"#),
            "digest failure",
            "PKCS7 signature verification failed: digest failure",
        ),
        (
            "corrupt_signature",
            signing::corrupt_signature(&pem),
            "signature failure",
            "PKCS7 signature verification failed: signature failure",
        ),
        (
            "strip_certificates",
            signing::strip_certificates(&pem),
            "signer certificate not found",
            "PKCS7 signature verification failed: signer certificate not found",
        ),
    ] {
        let stderr = openssl_verify(&bad).expect_err(name);
        assert!(stderr.contains(openssl_says), "{name}: {stderr}");
        let message = parse_envelope(Some("PKCS7/JSON"), &bad, false)
            .expect_err(name)
            .message;
        assert_eq!(message, we_say, "{name}");
    }
}

/// The rule of tests/support/require.rs, on a real test: with `openssl` out of reach (`PATH`
/// emptied), a child copy of this binary running one openssl test passes with a skip line on a
/// developer's machine and fails under `CI=true`.
#[test]
fn a_missing_tool_skips_on_a_developer_machine_and_fails_under_ci() {
    let run = |ci: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "helper_output_is_what_openssl_and_the_envelope_accept",
            "--test-threads=1",
        ])
        .env("PATH", "");
        match ci {
            Some(v) => cmd.env("CI", v),
            None => cmd.env_remove("CI"),
        };
        let out = cmd.output().expect("run child");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let line =
        "skipped: helper_output_is_what_openssl_and_the_envelope_accept: needs the openssl command";
    let (ok, stdout, stderr) = run(None);
    assert!(ok && stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(line),
        "the skip line shows uncaptured:\n{stderr}"
    );
    for ci in ["true", "1"] {
        let (ok, stdout, stderr) = run(Some(ci));
        assert!(
            !ok,
            "CI={ci}: a missing tool must fail the test\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("1 failed"), "{stdout}\n{stderr}");
        assert!(
            stdout.contains(line) && stdout.contains("CI=true: a test may not skip"),
            "the failure names the tool:\n{stdout}"
        );
    }
}
