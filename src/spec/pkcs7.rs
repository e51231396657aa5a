//! `PKCS7/JSON` envelopes (agent-behaviour.md §3.2): a PKCS#7 / CMS SignedData with the
//! deployment specification attached as its content.
//!
//! What is checked, for every SignerInfo: the signer certificate is embedded (found by
//! issuer-and-serial or subject key identifier); with signed attributes, the content-type
//! attribute names the content's type and the message-digest attribute equals the digest of
//! the content, and the signature covers the DER of the attributes as a SET OF; without them
//! the signature covers the content itself. What is deliberately *not* checked, as in the AWS
//! agents (which verify with `NOVERIFY`): a chain to any CA, validity dates, key usage.
//!
//! BER (indefinite lengths, chunked content, as OpenSSL `-stream` and Java signers write it) is
//! first re-encoded as DER (`ber`). The DER is read with `der`/`cms`/`x509-cert`, digests and
//! signatures are `ring`'s. Signed attributes and SignerInfos are taken from the raw bytes, so
//! the signature is checked over exactly what the signer produced, whatever order its SET OFs
//! are in.

mod ber;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{AnyRef, Decode, Encode, Header, Reader, SliceReader, Tag, TagNumber, Tagged};
use ring::{digest, signature};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

/// Payloads larger than this are refused before any decoding. Real specs are a few KiB.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");

const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA1_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a `PKCS7/JSON` payload was refused. The two prefixes are the AWS agents':
/// `Could not parse the PKCS7: …` (Ruby) and `PKCS7 signature verification failed: …` (v2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs7Error {
    /// The payload is over [`MAX_PAYLOAD_BYTES`].
    #[error("Could not parse the PKCS7: payload is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    /// Neither PEM nor base64, or a PEM block that is not PKCS#7.
    #[error("Could not parse the PKCS7: {detail}")]
    Encoding { detail: String },
    /// The DER does not have the SignedData shape.
    #[error("Could not parse the PKCS7: {context}: {source}")]
    Der {
        context: &'static str,
        #[source]
        source: der::Error,
    },
    /// A well-formed PKCS#7 of another type (enveloped, digested, …).
    #[error("Could not parse the PKCS7: content type {oid} is not signedData")]
    NotSignedData { oid: ObjectIdentifier },
    /// Detached signature: nothing to deploy.
    #[error(
        "PKCS7 signature verification failed: no content attached (detached signatures are not \
         supported)"
    )]
    NoContent,
    /// The attached content is not an OCTET STRING.
    #[error("Could not parse the PKCS7: the attached content is a {tag}, not an OCTET STRING")]
    ContentNotOctetString { tag: Tag },
    /// A SignedData with no SignerInfo signs nothing.
    #[error("PKCS7 signature verification failed: no signers")]
    NoSigners,
    /// No embedded certificate matches a SignerInfo's identifier.
    #[error("PKCS7 signature verification failed: signer certificate not found{note}")]
    SignerNotFound { note: String },
    /// A digest, signature, public-key or curve algorithm we do not implement.
    #[error("PKCS7 signature verification failed: unsupported {kind} algorithm {oid}")]
    Unsupported {
        kind: &'static str,
        oid: ObjectIdentifier,
    },
    /// The signature algorithm names a digest other than the SignerInfo's digest algorithm.
    #[error(
        "PKCS7 signature verification failed: signature algorithm {signature} does not use the \
         digest algorithm {digest}"
    )]
    AlgorithmMismatch {
        signature: ObjectIdentifier,
        digest: ObjectIdentifier,
    },
    /// An RSA signature with an EC certificate, or the other way round.
    #[error(
        "PKCS7 signature verification failed: signature algorithm {signature} does not fit the \
         signer certificate's {key} key"
    )]
    KeyMismatch {
        signature: ObjectIdentifier,
        key: ObjectIdentifier,
    },
    /// A required signed attribute is missing, repeated or malformed.
    #[error("PKCS7 signature verification failed: {detail}")]
    BadAttribute { detail: String },
    /// The content-type attribute differs from the eContentType.
    #[error(
        "PKCS7 signature verification failed: content-type attribute {attribute} does not match \
         the content type {content}"
    )]
    ContentTypeMismatch {
        attribute: ObjectIdentifier,
        content: ObjectIdentifier,
    },
    /// The message-digest attribute is not the digest of the content (content tampered).
    #[error("PKCS7 signature verification failed: digest failure")]
    DigestMismatch,
    /// The signature does not verify with the signer certificate's key.
    #[error("PKCS7 signature verification failed: signature failure")]
    BadSignature,
}

impl Pkcs7Error {
    fn der(context: &'static str) -> impl FnOnce(der::Error) -> Self {
        move |source| Self::Der { context, source }
    }
}

/// Verifies a `PKCS7/JSON` payload (PEM `PKCS7`/`CMS`, or bare base64 of the DER) and returns
/// the signed content.
pub fn verify_signed_content(payload: &str) -> Result<Vec<u8>, Pkcs7Error> {
    check_size(payload.len())?;
    let der = decode_text(payload)?;
    verify_signed_der(&der)
}

/// Verifies a BER- or DER-encoded ContentInfo holding a SignedData and returns the signed
/// content.
pub fn verify_signed_der(ber: &[u8]) -> Result<Vec<u8>, Pkcs7Error> {
    check_size(ber.len())?;
    let der = ber::to_der(ber).map_err(|e| Pkcs7Error::Encoding { detail: e.0 })?;
    let info = ContentInfo::from_der(&der).map_err(Pkcs7Error::der("ContentInfo"))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(Pkcs7Error::NotSignedData {
            oid: info.content_type,
        });
    }
    if info.content.tag() != Tag::Sequence {
        return Err(Pkcs7Error::Der {
            context: "SignedData",
            source: info.content.tag().unexpected_error(Some(Tag::Sequence)),
        });
    }
    let signed = SignedDataParts::split(info.content.value())?;

    let encap = EncapsulatedContentInfo::from_der(signed.encap_content_info)
        .map_err(Pkcs7Error::der("EncapsulatedContentInfo"))?;
    let econtent = encap.econtent.as_ref().ok_or(Pkcs7Error::NoContent)?;
    if econtent.tag() != Tag::OctetString {
        return Err(Pkcs7Error::ContentNotOctetString {
            tag: econtent.tag(),
        });
    }
    let content = econtent.value();

    let mut certificates = Vec::new();
    let mut unreadable = Vec::new();
    for element in signed.certificates {
        // Only the `certificate` CHOICE (a plain SEQUENCE) can hold a signer certificate.
        if element.tag != Tag::Sequence {
            continue;
        }
        match Certificate::from_der(element.tlv) {
            Ok(cert) => certificates.push(cert),
            Err(e) => unreadable.push(e.to_string()),
        }
    }

    if signed.signer_infos.is_empty() {
        return Err(Pkcs7Error::NoSigners);
    }
    let mut digests = ContentDigests {
        content,
        done: Vec::new(),
    };
    for raw in &signed.signer_infos {
        let signer = SignerInfo::from_der(raw.tlv).map_err(Pkcs7Error::der("SignerInfo"))?;
        let cert =
            find_signer(&signer.sid, &certificates).ok_or_else(|| Pkcs7Error::SignerNotFound {
                note: if unreadable.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} embedded certificate(s) could not be read: {})",
                        unreadable.len(),
                        unreadable.join("; ")
                    )
                },
            })?;
        let signed_attrs = raw_signed_attributes(raw.value)?;
        verify_signer(
            &signer,
            signed_attrs.as_deref(),
            cert,
            &encap.econtent_type,
            &mut digests,
        )?;
    }
    tracing::debug!(
        signers = signed.signer_infos.len(),
        content_bytes = content.len(),
        "PKCS7 deployment specification verified"
    );
    Ok(content.to_vec())
}

fn check_size(len: usize) -> Result<(), Pkcs7Error> {
    if len > MAX_PAYLOAD_BYTES {
        return Err(Pkcs7Error::TooLarge {
            len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// PEM (labels `PKCS7`, `PKCS #7 SIGNED DATA`, `CMS`, as OpenSSL reads them) or bare base64.
/// Like OpenSSL's PEM reader, text before the block and blocks with other labels are skipped.
fn decode_text(payload: &str) -> Result<Vec<u8>, Pkcs7Error> {
    const BEGIN: &str = "-----BEGIN ";
    let text = payload.trim();
    if !text.contains(BEGIN) {
        return base64_decode(text).ok_or_else(|| Pkcs7Error::Encoding {
            detail: "no start line (expected -----BEGIN PKCS7----- or base64 DER)".into(),
        });
    }
    let mut skipped = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some((label, after)) = rest[start + BEGIN.len()..].split_once("-----") else {
            break;
        };
        if matches!(label, "PKCS7" | "PKCS #7 SIGNED DATA" | "CMS") {
            let end = format!("-----END {label}-----");
            let (body, _) = after.split_once(&end).ok_or_else(|| Pkcs7Error::Encoding {
                detail: format!("no end line ({end})"),
            })?;
            return base64_decode(body).ok_or_else(|| Pkcs7Error::Encoding {
                detail: "bad base64 in the PEM body".into(),
            });
        }
        skipped.push(label.chars().take(40).collect::<String>());
        rest = after;
    }
    Err(Pkcs7Error::Encoding {
        detail: if skipped.is_empty() {
            "malformed PEM start line".into()
        } else {
            format!("no PKCS7 PEM block (found {})", skipped.join(", "))
        },
    })
}

/// Standard-alphabet base64; whitespace anywhere is skipped, padding is optional.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    let mut any = false;
    for c in text.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | value(c)?;
        bits += 6;
        any = true;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of a 2- or 3-character final group.
    if !any || padding > 2 || bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

/// One TLV inside a constructed value: its tag, whole encoding and contents.
struct Element<'a> {
    tag: Tag,
    tlv: &'a [u8],
    value: &'a [u8],
}

fn elements<'a>(bytes: &'a [u8], context: &'static str) -> Result<Vec<Element<'a>>, Pkcs7Error> {
    let mut reader = SliceReader::new(bytes).map_err(Pkcs7Error::der(context))?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        let start = usize::try_from(reader.position()).map_err(Pkcs7Error::der(context))?;
        let header = Header::decode(&mut reader).map_err(Pkcs7Error::der(context))?;
        let value = reader
            .read_slice(header.length)
            .map_err(Pkcs7Error::der(context))?;
        let end = usize::try_from(reader.position()).map_err(Pkcs7Error::der(context))?;
        out.push(Element {
            tag: header.tag,
            tlv: &bytes[start..end],
            value,
        });
    }
    Ok(out)
}

/// The fields of a SignedData (RFC 5652 §5.1), as raw elements.
struct SignedDataParts<'a> {
    encap_content_info: &'a [u8],
    certificates: Vec<Element<'a>>,
    signer_infos: Vec<Element<'a>>,
}

impl<'a> SignedDataParts<'a> {
    fn split(value: &'a [u8]) -> Result<Self, Pkcs7Error> {
        let fields = elements(value, "SignedData")?;
        let mut fields = fields.into_iter().peekable();
        let mut expect = |tag: Tag, what: &'static str| match fields.next() {
            Some(e) if e.tag == tag => Ok(e),
            Some(e) => Err(Pkcs7Error::Der {
                context: what,
                source: e.tag.unexpected_error(Some(tag)),
            }),
            None => Err(Pkcs7Error::Encoding {
                detail: format!("SignedData has no {what}"),
            }),
        };
        expect(Tag::Integer, "SignedData version")?;
        expect(Tag::Set, "SignedData digestAlgorithms")?;
        let encap = expect(Tag::Sequence, "SignedData encapContentInfo")?;
        let context = |number, constructed| Tag::ContextSpecific {
            constructed,
            number,
        };
        let mut certificates = Vec::new();
        if let Some(e) = fields.next_if(|e| e.tag == context(TagNumber::N0, true)) {
            certificates = elements(e.value, "SignedData certificates")?;
        }
        fields.next_if(|e| e.tag == context(TagNumber::N1, true));
        let signer_infos = match fields.next() {
            Some(e) if e.tag == Tag::Set => elements(e.value, "SignedData signerInfos")?,
            Some(e) => {
                return Err(Pkcs7Error::Der {
                    context: "SignedData signerInfos",
                    source: e.tag.unexpected_error(Some(Tag::Set)),
                });
            }
            None => {
                return Err(Pkcs7Error::Encoding {
                    detail: "SignedData has no signerInfos".into(),
                });
            }
        };
        if let Some(extra) = fields.next() {
            return Err(Pkcs7Error::Encoding {
                detail: format!("unexpected {} after SignedData signerInfos", extra.tag),
            });
        }
        Ok(Self {
            encap_content_info: encap.tlv,
            certificates,
            signer_infos,
        })
    }
}

/// The signed attributes of a raw SignerInfo, re-tagged as the SET OF that was signed
/// (RFC 5652 §5.4): the bytes as received (BER normalised to DER, which leaves DER
/// untouched), in their original order, not a re-encoding of the decoded attributes.
fn raw_signed_attributes(signer_info: &[u8]) -> Result<Option<Vec<u8>>, Pkcs7Error> {
    let signed_attrs_tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    // version, sid, digestAlgorithm, then [0] signedAttrs if present. The sid can itself be
    // [0] (subjectKeyIdentifier, primitive), hence skipping the first three.
    let fields = elements(signer_info, "SignerInfo")?;
    let Some(attrs) = fields.get(3).filter(|e| e.tag == signed_attrs_tag) else {
        return Ok(None);
    };
    AnyRef::new(Tag::Set, attrs.value)
        .and_then(|set| set.to_der())
        .map(Some)
        .map_err(Pkcs7Error::der("SignerInfo signedAttrs"))
}

fn find_signer<'c>(sid: &SignerIdentifier, certs: &'c [Certificate]) -> Option<&'c Certificate> {
    certs.iter().find(|cert| match sid {
        SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer,
            serial_number,
        }) => {
            cert.tbs_certificate.issuer == *issuer
                && cert.tbs_certificate.serial_number == *serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            subject_key_id(cert).is_some_and(|id| id.as_slice() == ski.0.as_bytes())
        }
    })
}

/// The certificate's subjectKeyIdentifier extension, or else the SHA-1 of its public key
/// (RFC 5280 §4.2.1.2 method 1), which is what signers compute when the extension is absent.
fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    let from_extension = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|ext| ext.extn_id == ID_SUBJECT_KEY_IDENTIFIER)
        .and_then(|ext| SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok())
        .map(|ski| ski.0.as_bytes().to_vec());
    from_extension.or_else(|| {
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .as_bytes()?;
        Some(
            digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, key)
                .as_ref()
                .to_vec(),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: ObjectIdentifier) -> Result<Self, Pkcs7Error> {
        Ok(match oid {
            ID_SHA1 => Self::Sha1,
            ID_SHA256 => Self::Sha256,
            ID_SHA384 => Self::Sha384,
            ID_SHA512 => Self::Sha512,
            _ => {
                return Err(Pkcs7Error::Unsupported {
                    kind: "digest",
                    oid,
                });
            }
        })
    }

    fn digest(self, data: &[u8]) -> digest::Digest {
        let algorithm = match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        };
        digest::digest(algorithm, data)
    }
}

/// Digests of the content, each computed once however many signers use it.
struct ContentDigests<'a> {
    content: &'a [u8],
    done: Vec<(Hash, digest::Digest)>,
}

impl ContentDigests<'_> {
    fn get(&mut self, hash: Hash) -> &[u8] {
        let i = match self.done.iter().position(|(h, _)| *h == hash) {
            Some(i) => i,
            None => {
                self.done.push((hash, hash.digest(self.content)));
                self.done.len() - 1
            }
        };
        self.done[i].1.as_ref()
    }
}

/// The ring verification algorithm for a SignerInfo's algorithms and the signer's key.
fn verification_algorithm(
    signer: &SignerInfo,
    hash: Hash,
    cert: &Certificate,
) -> Result<&'static dyn signature::VerificationAlgorithm, Pkcs7Error> {
    let sig_oid = signer.signature_algorithm.oid;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    // Which hash the signature algorithm itself names, if any; it must agree with digestAlg.
    let named_hash = match sig_oid {
        RSA_ENCRYPTION | ID_EC_PUBLIC_KEY => None,
        SHA1_WITH_RSA | ECDSA_WITH_SHA1 => Some(Hash::Sha1),
        SHA256_WITH_RSA | ECDSA_WITH_SHA256 => Some(Hash::Sha256),
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Some(Hash::Sha384),
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Some(Hash::Sha512),
        oid => {
            return Err(Pkcs7Error::Unsupported {
                kind: "signature",
                oid,
            });
        }
    };
    if named_hash.is_some_and(|named| named != hash) {
        return Err(Pkcs7Error::AlgorithmMismatch {
            signature: sig_oid,
            digest: signer.digest_alg.oid,
        });
    }
    let rsa_signature = matches!(
        sig_oid,
        RSA_ENCRYPTION | SHA1_WITH_RSA | SHA256_WITH_RSA | SHA384_WITH_RSA | SHA512_WITH_RSA
    );
    match spki.algorithm.oid {
        // 1024-bit keys are accepted where ring can (not with SHA-384), as OpenSSL accepts
        // them for the AWS agents: with no chain check, a key-size floor adds no authenticity.
        RSA_ENCRYPTION if rsa_signature => Ok(match hash {
            Hash::Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            Hash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Hash::Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        }),
        ID_EC_PUBLIC_KEY if !rsa_signature => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or(Pkcs7Error::Unsupported {
                    kind: "public key (EC key without a named curve)",
                    oid: ID_EC_PUBLIC_KEY,
                })?;
            match (curve, hash) {
                (SECP256R1, Hash::Sha256) => Ok(&signature::ECDSA_P256_SHA256_ASN1),
                (SECP256R1, Hash::Sha384) => Ok(&signature::ECDSA_P256_SHA384_ASN1),
                (SECP384R1, Hash::Sha256) => Ok(&signature::ECDSA_P384_SHA256_ASN1),
                (SECP384R1, Hash::Sha384) => Ok(&signature::ECDSA_P384_SHA384_ASN1),
                (SECP256R1 | SECP384R1, _) => Err(Pkcs7Error::Unsupported {
                    kind: "ECDSA digest",
                    oid: signer.digest_alg.oid,
                }),
                (oid, _) => Err(Pkcs7Error::Unsupported {
                    kind: "elliptic curve",
                    oid,
                }),
            }
        }
        key @ (RSA_ENCRYPTION | ID_EC_PUBLIC_KEY) => Err(Pkcs7Error::KeyMismatch {
            signature: sig_oid,
            key,
        }),
        oid => Err(Pkcs7Error::Unsupported {
            kind: "public key",
            oid,
        }),
    }
}

/// The single value of a signed attribute that must occur exactly once.
fn single_attribute<'s>(
    signer: &'s SignerInfo,
    oid: ObjectIdentifier,
    name: &str,
) -> Result<&'s der::Any, Pkcs7Error> {
    let mut found = signer
        .signed_attrs
        .iter()
        .flat_map(|attrs| attrs.iter())
        .filter(|attr| attr.oid == oid);
    match (found.next(), found.next()) {
        (Some(attr), None) if attr.values.len() == 1 => {
            attr.values.get(0).ok_or_else(|| Pkcs7Error::BadAttribute {
                detail: format!("{name} attribute has no value"),
            })
        }
        (None, _) => Err(Pkcs7Error::BadAttribute {
            detail: format!("signed attributes have no {name} attribute"),
        }),
        _ => Err(Pkcs7Error::BadAttribute {
            detail: format!("signed attributes must have exactly one {name} value"),
        }),
    }
}

fn verify_signer(
    signer: &SignerInfo,
    signed_attrs: Option<&[u8]>,
    cert: &Certificate,
    content_type: &ObjectIdentifier,
    digests: &mut ContentDigests<'_>,
) -> Result<(), Pkcs7Error> {
    let hash = Hash::from_oid(signer.digest_alg.oid)?;
    let algorithm = verification_algorithm(signer, hash, cert)?;

    let signed_message = match signed_attrs {
        None => digests.content,
        Some(attrs) => {
            let attribute = single_attribute(signer, ID_CONTENT_TYPE, "content-type")?
                .decode_as::<ObjectIdentifier>()
                .map_err(|e| Pkcs7Error::BadAttribute {
                    detail: format!("content-type attribute is not an OID: {e}"),
                })?;
            if attribute != *content_type {
                return Err(Pkcs7Error::ContentTypeMismatch {
                    attribute,
                    content: *content_type,
                });
            }
            let claimed = single_attribute(signer, ID_MESSAGE_DIGEST, "message-digest")?
                .decode_as::<OctetString>()
                .map_err(|e| Pkcs7Error::BadAttribute {
                    detail: format!("message-digest attribute is not an OCTET STRING: {e}"),
                })?;
            // Constant-time comparison is not needed: the digest is not a secret.
            if claimed.as_bytes() != digests.get(hash) {
                return Err(Pkcs7Error::DigestMismatch);
            }
            attrs
        }
    };

    let key = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .ok_or(Pkcs7Error::BadSignature)?;
    signature::UnparsedPublicKey::new(algorithm, key)
        .verify(signed_message, signer.signature.as_bytes())
        .map_err(|_| Pkcs7Error::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_junk() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            base64_decode("aGVs\r\nbG8h").as_deref(),
            Some(&b"hello!"[..])
        );
        assert_eq!(base64_decode("aGVsbG8=x"), None);
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("not base64!"), None);
        assert_eq!(base64_decode(""), None);
        assert_eq!(base64_decode("aGVsbG9="), None, "non-zero leftover bits");
    }

    #[test]
    fn garbage_is_a_parse_error_with_the_aws_prefix() {
        for payload in [
            "",
            "hello world",
            "{\"DeploymentId\":\"d-1\"}",
            "-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PKCS7-----\nAAAA\n",
            "MIIB",
        ] {
            let message = verify_signed_content(payload)
                .expect_err(payload)
                .to_string();
            assert!(
                message.starts_with("Could not parse the PKCS7: "),
                "{payload:?}: {message}"
            );
        }
    }

    #[test]
    fn pem_messages() {
        for (payload, detail) in [
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "no PKCS7 PEM block (found CERTIFICATE)",
            ),
            (
                "-----BEGIN PKCS7-----\nAAAA\n",
                "no end line (-----END PKCS7-----)",
            ),
            ("-----BEGIN PKCS7", "malformed PEM start line"),
            (
                "-----BEGIN CMS-----\n!!!!\n-----END CMS-----",
                "bad base64 in the PEM body",
            ),
            (
                "hello world",
                "no start line (expected -----BEGIN PKCS7----- or base64 DER)",
            ),
        ] {
            assert_eq!(
                verify_signed_content(payload)
                    .expect_err(payload)
                    .to_string(),
                format!("Could not parse the PKCS7: {detail}"),
            );
        }
    }

    #[test]
    fn oversized_payloads_are_refused_before_decoding() {
        let payload = "A".repeat(MAX_PAYLOAD_BYTES + 1);
        assert_eq!(
            verify_signed_content(&payload),
            Err(Pkcs7Error::TooLarge {
                len: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn other_content_types_are_not_signed_data() {
        // ContentInfo { id-data, [0] OCTET STRING "x" }
        let der = [
            0x30, 0x12, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0,
            0x05, 0x04, 0x03, b'{', b'}', b'\n',
        ];
        let message = verify_signed_der(&der).expect_err("id-data").to_string();
        assert_eq!(
            message,
            "Could not parse the PKCS7: content type 1.2.840.113549.1.7.1 is not signedData"
        );
    }
}
