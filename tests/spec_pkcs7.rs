//! `PKCS7/JSON` deployment specifications (agent-behaviour.md §3.1, §3.2, §10.2 items 21–22),
//! signed at test time by the `openssl` command as the service and the Ruby agent's test
//! helper do.

mod support;

use codedeploy_agent::spec::pkcs7::{Pkcs7Error, verify_signed_content, verify_signed_der};
use codedeploy_agent::spec::{Revision, parse_envelope};
use support::signing::{self, CertKind, KeyKind, SignOptions, Tool, sign, sign_spec_pem};

const CONTENT: &str = r#"{"DeploymentId":"d-TEST","Token":"ghp_must_not_leak"}"#;

fn full_spec() -> serde_json::Value {
    serde_json::json!({
        "DeploymentId": "arn:aws:codedeploy:us-east-1:123456789012:deployment/d-ABCDEF123",
        "DeploymentGroupId": "3f9c1a2e-0000-4000-8000-000000000001",
        "DeploymentGroupName": "web-servers",
        "ApplicationName": "shop",
        "DeploymentCreator": "user",
        "DeploymentType": "IN_PLACE",
        "AppSpecFilename": "appspec.yml",
        "AgentActionOverrides": {"AgentOverrides": {"FileExistsBehavior": "overwrite"}},
        "AllPossibleLifecycleEvents": ["ApplicationStop", "DownloadBundle", "Install"],
        "GitHubAccessToken": "ghp_secret",
        "Revision": {
            "RevisionType": "S3",
            "S3Revision": {
                "Bucket": "my-bucket",
                "Key": "releases/shop.zip",
                "BundleType": "zip",
                "Version": "v1",
                "ETag": "abc"
            }
        }
    })
}

/// Every combination of key, tool, attributes and encoding verifies and yields the content.
#[test]
fn openssl_signatures_verify() {
    if !support::require::openssl() {
        return;
    }
    for key in [KeyKind::Rsa, KeyKind::EcP256, KeyKind::EcP384] {
        for tool in [Tool::Smime, Tool::Cms] {
            for signed_attributes in [true, false] {
                for der in [false, true] {
                    let options = SignOptions {
                        key,
                        tool,
                        signed_attributes,
                        der,
                        digest: if key == KeyKind::EcP384 {
                            "sha384"
                        } else {
                            "sha256"
                        },
                        ..SignOptions::default()
                    };
                    let signed = sign(CONTENT.as_bytes(), &options);
                    let content = if der {
                        verify_signed_der(&signed)
                    } else {
                        verify_signed_content(std::str::from_utf8(&signed).expect("PEM"))
                    };
                    assert_eq!(content.as_deref(), Ok(CONTENT.as_bytes()), "{options:?}");
                }
            }
        }
    }
}

#[test]
fn rsa_digests_verify() {
    if !support::require::openssl() {
        return;
    }
    for digest in ["sha1", "sha256", "sha384", "sha512"] {
        for signed_attributes in [true, false] {
            let options = SignOptions {
                digest,
                signed_attributes,
                ..SignOptions::default()
            };
            let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
            assert_eq!(
                verify_signed_content(&pem).as_deref(),
                Ok(CONTENT.as_bytes()),
                "{options:?}"
            );
        }
    }
}

/// OpenSSL (so both AWS agents) accepts 1024-bit RSA signers; so do we, except with SHA-384,
/// which ring offers for 2048 bits and up only.
#[test]
fn rsa_1024_bit_signers_verify() {
    if !support::require::openssl() {
        return;
    }
    for digest in ["sha1", "sha256", "sha512"] {
        let options = SignOptions {
            key: KeyKind::Rsa1024,
            digest,
            ..SignOptions::default()
        };
        let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
        assert_eq!(
            verify_signed_content(&pem).as_deref(),
            Ok(CONTENT.as_bytes()),
            "{options:?}"
        );
    }
}

#[test]
fn pem_labels_and_bare_base64_are_accepted() {
    if !support::require::openssl() {
        return;
    }
    let cms = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            tool: Tool::Cms,
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    assert!(cms.starts_with("-----BEGIN CMS-----"), "{cms}");
    assert_eq!(
        verify_signed_content(&cms).as_deref(),
        Ok(CONTENT.as_bytes())
    );

    let pem = sign_spec_pem(CONTENT);
    assert!(pem.starts_with("-----BEGIN PKCS7-----"), "{pem}");
    let body = signing::pem_body(&pem);
    assert_eq!(
        verify_signed_content(&body).as_deref(),
        Ok(CONTENT.as_bytes())
    );
    let preamble = format!(
        "Signed by the service\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{pem}"
    );
    assert_eq!(
        verify_signed_content(&preamble).as_deref(),
        Ok(CONTENT.as_bytes())
    );
    let crlf = format!("\r\n  {}\r\n", pem.replace('\n', "\r\n"));
    assert_eq!(
        verify_signed_content(&crlf).as_deref(),
        Ok(CONTENT.as_bytes())
    );
}

/// OpenSSL `-stream` output (and Java signers') is BER: indefinite lengths, chunked content.
#[test]
fn streamed_ber_signatures_verify() {
    if !support::require::openssl() {
        return;
    }
    let big = format!(
        r#"{{"DeploymentId":"d-1","Padding":"{}"}}"#,
        "x".repeat(20_000)
    );
    for content in [CONTENT, big.as_str()] {
        for tool in [Tool::Smime, Tool::Cms] {
            for der in [false, true] {
                for signed_attributes in [true, false] {
                    let options = SignOptions {
                        tool,
                        der,
                        signed_attributes,
                        stream: true,
                        ..SignOptions::default()
                    };
                    let signed = sign(content.as_bytes(), &options);
                    let der_bytes = if der {
                        signed.clone()
                    } else {
                        signing::pem_to_der(std::str::from_utf8(&signed).expect("PEM"))
                    };
                    assert_eq!(der_bytes[1], 0x80, "indefinite length expected");
                    assert_eq!(
                        verify_signed_der(&der_bytes).as_deref(),
                        Ok(content.as_bytes()),
                        "{options:?}"
                    );
                    if !der {
                        let pem = std::str::from_utf8(&signed).expect("PEM");
                        assert_eq!(
                            verify_signed_content(pem).as_deref(),
                            Ok(content.as_bytes()),
                            "{options:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn signer_is_found_by_subject_key_identifier_and_among_other_certificates() {
    if !support::require::openssl() {
        return;
    }
    for key_id in [false, true] {
        let options = SignOptions {
            tool: Tool::Cms,
            key_id,
            embed_ca: true,
            ..SignOptions::default()
        };
        let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
        assert_eq!(
            verify_signed_content(&pem).as_deref(),
            Ok(CONTENT.as_bytes()),
            "{options:?}"
        );
    }
}

/// The AWS agents verify with NOVERIFY: no chain, no dates.
#[test]
fn expired_and_self_signed_signers_verify() {
    if !support::require::openssl() {
        return;
    }
    for cert in [CertKind::Expired, CertKind::SelfSigned] {
        for key in [KeyKind::Rsa, KeyKind::EcP256] {
            let options = SignOptions {
                cert,
                key,
                ..SignOptions::default()
            };
            let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
            assert_eq!(
                verify_signed_content(&pem).as_deref(),
                Ok(CONTENT.as_bytes()),
                "{options:?}"
            );
        }
    }
}

#[test]
fn reencoding_alone_keeps_the_signature_valid() {
    if !support::require::openssl() {
        return;
    }
    let pem = sign_spec_pem(CONTENT);
    assert_eq!(
        verify_signed_content(&signing::reencode(&pem)).as_deref(),
        Ok(CONTENT.as_bytes())
    );
}

/// The Ruby agent would use tampered content (it ignores `verify`'s result); we refuse it.
#[test]
fn tampered_content_is_rejected() {
    if !support::require::openssl() {
        return;
    }
    for key in [KeyKind::Rsa, KeyKind::EcP256] {
        for signed_attributes in [true, false] {
            let options = SignOptions {
                key,
                signed_attributes,
                ..SignOptions::default()
            };
            let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
            // With signed attributes the digest attribute catches it; without, the signature.
            let expected = if signed_attributes {
                Pkcs7Error::DigestMismatch
            } else {
                Pkcs7Error::BadSignature
            };
            for tampered in [
                signing::tamper(&pem),
                signing::swap_content(&pem, r#"{"DeploymentId":"d-EVIL"}"#),
            ] {
                assert_ne!(tampered, pem);
                assert_eq!(
                    verify_signed_content(&tampered),
                    Err(expected.clone()),
                    "{options:?}"
                );
            }
        }
    }
    let message = verify_signed_content(&signing::tamper(&sign_spec_pem(CONTENT)))
        .expect_err("tampered")
        .to_string();
    assert_eq!(
        message,
        "PKCS7 signature verification failed: digest failure"
    );
}

#[test]
fn corrupted_signature_is_rejected() {
    if !support::require::openssl() {
        return;
    }
    for key in [KeyKind::Rsa, KeyKind::EcP256] {
        for signed_attributes in [true, false] {
            let options = SignOptions {
                key,
                signed_attributes,
                ..SignOptions::default()
            };
            let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
            assert_eq!(
                verify_signed_content(&signing::corrupt_signature(&pem))
                    .expect_err("corrupt")
                    .to_string(),
                "PKCS7 signature verification failed: signature failure",
                "{options:?}"
            );
        }
    }
}

/// A signature by a different key than the embedded certificate's.
#[test]
fn signature_by_another_key_is_rejected() {
    if !support::require::openssl() {
        return;
    }
    let issued = sign_spec_pem(CONTENT);
    let other = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            cert: CertKind::SelfSigned,
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    // The self-signed signer's SignerInfo, with the issued signer's certificate only.
    let mut info = cms::content_info::ContentInfo::from_der(&signing::pem_to_der(&other))
        .expect("ContentInfo");
    let mut sd: cms::signed_data::SignedData = info.content.decode_as().expect("SignedData");
    let issued_info = cms::content_info::ContentInfo::from_der(&signing::pem_to_der(&issued))
        .expect("ContentInfo");
    let issued_sd: cms::signed_data::SignedData =
        issued_info.content.decode_as().expect("SignedData");
    sd.certificates = issued_sd.certificates.clone();
    let mut signer = sd.signer_infos.0.clone().into_vec();
    signer[0].sid = issued_sd.signer_infos.0.as_slice()[0].sid.clone();
    sd.signer_infos =
        cms::signed_data::SignerInfos(der::asn1::SetOfVec::try_from(signer).expect("set"));
    info.content = der::Any::encode_from(&sd).expect("encode");
    let forged = signing::der_to_pem(&der::Encode::to_der(&info).expect("encode"));
    assert_eq!(
        verify_signed_content(&forged),
        Err(Pkcs7Error::BadSignature)
    );
}

use der::Decode as _;

/// Every SignerInfo must verify, not just one.
#[test]
fn every_signer_must_verify() {
    if !support::require::openssl() {
        return;
    }
    let rsa = sign_spec_pem(CONTENT);
    let ec = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            key: KeyKind::EcP256,
            tool: Tool::Smime,
            signed_attributes: false,
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    let both = signing::merge_signers(&rsa, &ec);
    assert_eq!(
        verify_signed_content(&both).as_deref(),
        Ok(CONTENT.as_bytes())
    );
    for (bad, expected) in [
        (
            signing::merge_signers(&rsa, &signing::corrupt_signature(&ec)),
            Pkcs7Error::BadSignature,
        ),
        (
            signing::merge_signers(&signing::corrupt_signature(&rsa), &ec),
            Pkcs7Error::BadSignature,
        ),
        (
            signing::merge_signers(&rsa, &signing::strip_certificates(&ec)),
            Pkcs7Error::SignerNotFound {
                note: String::new(),
            },
        ),
    ] {
        assert_eq!(verify_signed_content(&bad), Err(expected));
    }
}

/// Algorithms ring (or we) do not implement are named by OID.
#[test]
fn unsupported_algorithms_are_named() {
    if !support::require::openssl() {
        return;
    }
    let sha224 = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            digest: "sha224",
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    assert_eq!(
        verify_signed_content(&sha224)
            .expect_err("sha224")
            .to_string(),
        "PKCS7 signature verification failed: unsupported digest algorithm \
         2.16.840.1.101.3.4.2.4"
    );
    let p256_sha512 = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            key: KeyKind::EcP256,
            tool: Tool::Cms,
            digest: "sha512",
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    assert_eq!(
        verify_signed_content(&p256_sha512)
            .expect_err("ecdsa-with-SHA512")
            .to_string(),
        "PKCS7 signature verification failed: unsupported ECDSA digest algorithm \
         2.16.840.1.101.3.4.2.3"
    );
}

#[test]
fn missing_signer_certificate_is_rejected() {
    if !support::require::openssl() {
        return;
    }
    for tool in [Tool::Smime, Tool::Cms] {
        let options = SignOptions {
            tool,
            embed_signer: false,
            ..SignOptions::default()
        };
        let pem = String::from_utf8(sign(CONTENT.as_bytes(), &options)).expect("PEM");
        assert_eq!(
            verify_signed_content(&pem)
                .expect_err("no certificates")
                .to_string(),
            "PKCS7 signature verification failed: signer certificate not found",
            "{options:?}"
        );
    }
    // Only the CA embedded: still not the signer.
    let pem = String::from_utf8(sign(
        CONTENT.as_bytes(),
        &SignOptions {
            embed_signer: false,
            embed_ca: true,
            ..SignOptions::default()
        },
    ))
    .expect("PEM");
    assert_eq!(
        verify_signed_content(&pem)
            .expect_err("CA only")
            .to_string(),
        "PKCS7 signature verification failed: signer certificate not found"
    );
    let stripped = signing::strip_certificates(&sign_spec_pem(CONTENT));
    assert!(matches!(
        verify_signed_content(&stripped),
        Err(Pkcs7Error::SignerNotFound { .. })
    ));
}

#[test]
fn garbage_payloads_cannot_be_parsed() {
    for payload in [
        "not a pkcs7",
        "{\"DeploymentId\":\"d-1\"}",
        "-----BEGIN PKCS7-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PKCS7-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ] {
        let message = parse_envelope(Some("PKCS7/JSON"), payload, false)
            .expect_err(payload)
            .message;
        assert!(
            message.starts_with("Could not parse the PKCS7: "),
            "{payload:?}: {message}"
        );
    }
    assert_eq!(
        parse_envelope(Some("PKCS7/JSON"), "not a pkcs7", false)
            .expect_err("garbage")
            .message,
        "Could not parse the PKCS7: no start line (expected -----BEGIN PKCS7----- or base64 DER)"
    );
}

#[test]
fn format_names() {
    let json = full_spec().to_string();
    for (format, allow, expected) in [
        (
            Some("XML"),
            false,
            "Unsupported DeploymentSpecification format: XML",
        ),
        (
            Some("TEXT/JSON"),
            false,
            "Unsupported DeploymentSpecification format: TEXT/JSON",
        ),
        (
            Some("JSON"),
            true,
            "Unsupported DeploymentSpecification format: JSON",
        ),
        (
            Some("pkcs7/json"),
            false,
            "Unsupported DeploymentSpecification format: pkcs7/json",
        ),
        (None, false, "Unsupported DeploymentSpecification format: "),
    ] {
        assert_eq!(
            parse_envelope(format, &json, allow)
                .expect_err("unsupported")
                .message,
            expected
        );
    }
    assert!(parse_envelope(Some("TEXT/JSON"), &json, true).is_ok());
}

#[test]
fn signed_spec_parses_through_the_envelope() {
    if !support::require::openssl() {
        return;
    }
    let pem = sign_spec_pem(&full_spec().to_string());
    let spec = parse_envelope(Some("PKCS7/JSON"), &pem, false).expect("valid spec");
    assert_eq!(spec.deployment_id, "d-ABCDEF123");
    assert_eq!(
        spec.deployment_group_id,
        "3f9c1a2e-0000-4000-8000-000000000001"
    );
    assert_eq!(spec.deployment_group_name, "web-servers");
    assert_eq!(spec.application_name, "shop");
    assert_eq!(spec.deployment_creator, "user");
    assert_eq!(spec.deployment_type, "IN_PLACE");
    assert_eq!(spec.app_spec_filename, "appspec.yml");
    assert_eq!(spec.file_exists_behavior, "OVERWRITE");
    assert_eq!(
        spec.all_possible_lifecycle_events.as_deref(),
        Some(
            &[
                "ApplicationStop".to_owned(),
                "DownloadBundle".into(),
                "Install".into()
            ][..]
        )
    );
    assert_eq!(spec.github_access_token.as_deref(), Some("ghp_secret"));
    assert_eq!(
        spec.revision,
        Revision::S3 {
            bucket: "my-bucket".into(),
            key: "releases/shop.zip".into(),
            bundle_type: "zip".into(),
            version: Some("v1".into()),
            etag: Some("abc".into()),
        }
    );
    // A valid PKCS7 payload is still only accepted under its own format name.
    assert_eq!(
        parse_envelope(Some("TEXT/JSON"), &pem, false)
            .expect_err("TEXT/JSON")
            .message,
        "Unsupported DeploymentSpecification format: TEXT/JSON"
    );
}

/// agent-behaviour.md §10.2 item 22.
#[test]
fn signed_spec_without_deployment_group_name_fails_with_the_aws_message() {
    if !support::require::openssl() {
        return;
    }
    let mut spec = full_spec();
    spec.as_object_mut()
        .expect("object")
        .remove("DeploymentGroupName");
    let pem = sign_spec_pem(&spec.to_string());
    assert_eq!(
        parse_envelope(Some("PKCS7/JSON"), &pem, false)
            .expect_err("no group name")
            .message,
        "Deployment Spec has no DeploymentGroupName"
    );

    let mut spec = full_spec();
    spec["Revision"]["S3Revision"]["BundleType"] = "rar".into();
    let pem = sign_spec_pem(&spec.to_string());
    assert_eq!(
        parse_envelope(Some("PKCS7/JSON"), &pem, false)
            .expect_err("rar")
            .message,
        "BundleType in S3Revision must be tar, tgz or zip"
    );
}

#[test]
fn signed_content_must_be_utf8_json() {
    if !support::require::openssl() {
        return;
    }
    let pem =
        String::from_utf8(sign(&[0xff, 0xfe, b'{', b'}'], &SignOptions::default())).expect("PEM");
    let message = parse_envelope(Some("PKCS7/JSON"), &pem, false)
        .expect_err("not UTF-8")
        .message;
    assert!(
        message.starts_with("The signed deployment specification is not valid UTF-8"),
        "{message}"
    );
    let pem = sign_spec_pem("not json");
    let message = parse_envelope(Some("PKCS7/JSON"), &pem, false)
        .expect_err("not JSON")
        .message;
    assert!(
        message.starts_with("The deployment specification is not valid JSON"),
        "{message}"
    );
}

/// Errors never carry the signed content (it can hold a GitHub token).
#[test]
fn errors_do_not_leak_the_content() {
    if !support::require::openssl() {
        return;
    }
    let pem = sign_spec_pem(CONTENT);
    for bad in [
        signing::tamper(&pem),
        signing::corrupt_signature(&pem),
        signing::strip_certificates(&pem),
    ] {
        let message = parse_envelope(Some("PKCS7/JSON"), &bad, false)
            .expect_err("bad")
            .message;
        assert!(!message.contains("ghp_must_not_leak"), "{message}");
    }
}
