//! Signed deployment specifications for tests, made the way the Ruby agent's test helper makes
//! them (`test/certificate_helper.rb`): a throw-away CA and a signer named
//! `codedeploy-signer-us-east-1.amazonaws.com`, and `openssl smime -sign -nodetach -binary`
//! (or `openssl cms -sign`) so the envelopes are exactly what OpenSSL produces.
//!
//! Keys and certificates are made once per test process and kept in memory; each signing runs
//! in its own temporary directory. Everything needs the `openssl` command: call
//! [`super::require::openssl`] first and return early when it says false (under `CI=true` it
//! fails the test instead).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use cms::content_info::ContentInfo;
use cms::signed_data::{CertificateSet, SignedData, SignerInfos};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode, Tag};

/// The signer's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// RSA 1024, still accepted by OpenSSL.
    Rsa1024,
    EcP256,
    EcP384,
}

/// Which certificate the signer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// Issued by the throw-away CA (which the verifier knows nothing about), valid now.
    Issued,
    /// Issued by the throw-away CA, expired in 2020.
    Expired,
    /// Self-signed: chains to nothing at all.
    SelfSigned,
}

/// Which OpenSSL command signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `openssl smime`: PKCS#7, PEM label `PKCS7`.
    Smime,
    /// `openssl cms`: CMS, PEM label `CMS`.
    Cms,
}

/// How to sign. `Default` is what the service and the Ruby helper do: RSA, SHA-256, signed
/// attributes, signer certificate embedded, PEM.
#[derive(Debug, Clone)]
pub struct SignOptions {
    pub key: KeyKind,
    pub cert: CertKind,
    pub tool: Tool,
    /// `-md`.
    pub digest: &'static str,
    /// False adds `-noattr`: the signature then covers the content itself.
    pub signed_attributes: bool,
    /// False adds `-nocerts`: no certificate is embedded.
    pub embed_signer: bool,
    /// Adds the CA certificate too (`-certfile`), so the signer is one of several.
    pub embed_ca: bool,
    /// `-keyid` (cms only): identify the signer by subject key identifier.
    pub key_id: bool,
    /// `-outform DER` instead of PEM.
    pub der: bool,
    /// `-stream`: BER with indefinite lengths and the content as a constructed OCTET STRING.
    pub stream: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            key: KeyKind::Rsa,
            cert: CertKind::Issued,
            tool: Tool::Smime,
            digest: "sha256",
            signed_attributes: true,
            embed_signer: true,
            embed_ca: false,
            key_id: false,
            der: false,
            stream: false,
        }
    }
}

/// `json` signed with RSA/SHA-256 by a signer issued by a throw-away CA, as PEM `PKCS7`.
pub fn sign_spec_pem(json: &str) -> String {
    String::from_utf8(sign(json.as_bytes(), &SignOptions::default())).expect("PEM is ASCII")
}

/// Signs `content` as `options` say; PEM text or DER bytes.
pub fn sign(content: &[u8], options: &SignOptions) -> Vec<u8> {
    let creds = credentials(options.key, options.cert);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("content"), content).expect("write content");
    fs::write(d.join("signer.pem"), &creds.signer_cert).expect("write cert");
    fs::write(d.join("signer.key"), &creds.signer_key).expect("write key");
    fs::write(d.join("ca.pem"), &creds.ca_cert).expect("write ca");

    let mut args: Vec<&str> = vec![
        match options.tool {
            Tool::Smime => "smime",
            Tool::Cms => "cms",
        },
        "-sign",
        "-nodetach",
        "-binary",
        "-in",
        "content",
        "-signer",
        "signer.pem",
        "-inkey",
        "signer.key",
        "-md",
        options.digest,
        "-outform",
        if options.der { "DER" } else { "PEM" },
        "-out",
        "out",
    ];
    if !options.signed_attributes {
        args.push("-noattr");
    }
    if !options.embed_signer {
        args.push("-nocerts");
    }
    if options.embed_ca {
        args.extend(["-certfile", "ca.pem"]);
    }
    if options.stream {
        args.push("-stream");
    }
    if options.key_id {
        assert_eq!(options.tool, Tool::Cms, "-keyid needs openssl cms");
        args.push("-keyid");
    }
    openssl(d, &args);
    fs::read(d.join("out")).expect("read signed output")
}

/// The content with one byte changed (a letter's case, a digit, or else its low bit), the
/// rest of the envelope (attributes, signature, certificates) left as the signer made it.
pub fn tamper(pem: &str) -> String {
    rewrite(pem, |sd| {
        let mut content = content_of(sd);
        let i = content.len() / 2;
        let b = content[i];
        content[i] = match b {
            b'a'..=b'z' | b'A'..=b'Z' => b ^ 0x20,
            b'0'..=b'8' => b + 1,
            b'9' => b'0',
            _ => b ^ 0x01,
        };
        set_content(sd, &content);
    })
}

/// The content replaced by `json`, signatures unchanged.
pub fn swap_content(pem: &str, json: &str) -> String {
    rewrite(pem, |sd| set_content(sd, json.as_bytes()))
}

/// The first signer's signature with its last byte flipped.
pub fn corrupt_signature(pem: &str) -> String {
    rewrite(pem, |sd| {
        let mut signers = sd.signer_infos.0.clone().into_vec();
        let mut sig = signers[0].signature.as_bytes().to_vec();
        *sig.last_mut().expect("signature bytes") ^= 0x01;
        signers[0].signature = OctetString::new(sig).expect("octet string");
        sd.signer_infos = SignerInfos(SetOfVec::try_from(signers).expect("set of signers"));
    })
}

/// The embedded certificates removed.
pub fn strip_certificates(pem: &str) -> String {
    rewrite(pem, |sd| sd.certificates = None)
}

/// Decodes, re-encodes unchanged: checks that [`rewrite`] alone does not break a signature.
pub fn reencode(pem: &str) -> String {
    rewrite(pem, |_| {})
}

/// PEM to DER.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    der::pem::decode_vec(pem.trim().as_bytes())
        .expect("decode PEM")
        .1
}

/// DER to PEM with label `PKCS7`.
pub fn der_to_pem(der: &[u8]) -> String {
    der::pem::encode_string("PKCS7", der::pem::LineEnding::LF, der).expect("encode PEM")
}

/// The base64 body of a PEM, without the BEGIN/END lines (base64 of the DER).
pub fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rewrite(pem: &str, change: impl FnOnce(&mut SignedData)) -> String {
    let der = pem_to_der(pem);
    let mut info = ContentInfo::from_der(&der).expect("ContentInfo");
    let mut sd: SignedData = info.content.decode_as().expect("SignedData");
    change(&mut sd);
    info.content = Any::encode_from(&sd).expect("encode SignedData");
    der_to_pem(&info.to_der().expect("encode ContentInfo"))
}

fn content_of(sd: &SignedData) -> Vec<u8> {
    sd.encap_content_info
        .econtent
        .as_ref()
        .expect("attached content")
        .value()
        .to_vec()
}

fn set_content(sd: &mut SignedData, content: &[u8]) {
    sd.encap_content_info.econtent =
        Some(Any::new(Tag::OctetString, content.to_vec()).expect("OCTET STRING"));
}

struct Credentials {
    ca_cert: String,
    signer_cert: String,
    signer_key: String,
}

type Cache = Mutex<HashMap<(KeyKind, CertKind), Arc<Credentials>>>;

fn credentials(key: KeyKind, cert: CertKind) -> Arc<Credentials> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry((key, cert))
        .or_insert_with(|| Arc::new(make_credentials(key, cert)))
        .clone()
}

const EXTENSIONS: &str = "subjectKeyIdentifier = hash\n\
                          authorityKeyIdentifier = keyid\n\
                          keyUsage = critical, digitalSignature\n\
                          basicConstraints = CA:FALSE\n";

const CA_CONFIG: &str = "[ ca ]\n\
                         default_ca = test_ca\n\
                         [ test_ca ]\n\
                         database = index.txt\n\
                         new_certs_dir = .\n\
                         rand_serial = yes\n\
                         default_md = sha256\n\
                         policy = any\n\
                         unique_subject = no\n\
                         copy_extensions = none\n\
                         [ any ]\n\
                         commonName = supplied\n";

fn make_credentials(key: KeyKind, cert: CertKind) -> Credentials {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("ext.cnf"), EXTENSIONS).expect("write ext");
    fs::write(d.join("ca.cnf"), CA_CONFIG).expect("write ca config");
    fs::write(d.join("index.txt"), "").expect("write index");

    let signer_cn = "/CN=codedeploy-signer-us-east-1.amazonaws.com";
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=Host Agent TEST CA Root G1",
            "-days",
            "30",
            "-out",
            "ca.pem",
        ],
    );
    let keygen: &[&str] = match key {
        KeyKind::Rsa => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeyKind::Rsa1024 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        KeyKind::EcP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyKind::EcP384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(keygen);
    args.extend(["-out", "signer.key"]);
    openssl(d, &args);

    match cert {
        CertKind::SelfSigned => openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "signer.key",
                "-subj",
                signer_cn,
                "-days",
                "30",
                "-out",
                "signer.pem",
            ],
        ),
        CertKind::Issued | CertKind::Expired => {
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    "signer.key",
                    "-subj",
                    signer_cn,
                    "-out",
                    "signer.csr",
                ],
            );
            let (start, end) = match cert {
                CertKind::Expired => ("20200101000000Z", "20200201000000Z"),
                _ => ("20200101000000Z", "20991231000000Z"),
            };
            openssl(
                d,
                &[
                    "ca",
                    "-batch",
                    "-notext",
                    "-config",
                    "ca.cnf",
                    "-cert",
                    "ca.pem",
                    "-keyfile",
                    "ca.key",
                    "-in",
                    "signer.csr",
                    "-startdate",
                    start,
                    "-enddate",
                    end,
                    "-extfile",
                    "ext.cnf",
                    "-out",
                    "signer.pem",
                ],
            );
        }
    }
    let read = |name: &str| fs::read_to_string(d.join(name)).expect("read credential");
    Credentials {
        ca_cert: read("ca.pem"),
        signer_cert: read("signer.pem"),
        signer_key: read("signer.key"),
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One envelope with the certificates and SignerInfos of both (which must sign the same
/// content): a SignedData with two signers.
pub fn merge_signers(first: &str, second: &str) -> String {
    let other = signed_data(second);
    rewrite(first, |sd| {
        let mut certs = sd
            .certificates
            .take()
            .map(|set| set.0.into_vec())
            .unwrap_or_default();
        certs.extend(
            other
                .certificates
                .map(|set| set.0.into_vec())
                .unwrap_or_default(),
        );
        if !certs.is_empty() {
            sd.certificates = Some(CertificateSet(
                SetOfVec::try_from(certs).expect("set of certificates"),
            ));
        }
        let mut signers = sd.signer_infos.0.clone().into_vec();
        signers.extend(other.signer_infos.0.into_vec());
        sd.signer_infos = SignerInfos(SetOfVec::try_from(signers).expect("set of signers"));
        let mut digests = sd.digest_algorithms.clone().into_vec();
        for alg in other.digest_algorithms.into_vec() {
            if !digests.contains(&alg) {
                digests.push(alg);
            }
        }
        sd.digest_algorithms = SetOfVec::try_from(digests).expect("set of digests");
    })
}

fn signed_data(pem: &str) -> SignedData {
    ContentInfo::from_der(&pem_to_der(pem))
        .expect("ContentInfo")
        .content
        .decode_as()
        .expect("SignedData")
}
