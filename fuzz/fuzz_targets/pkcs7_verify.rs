//! PKCS7 signed-data verification: text payloads (PEM / base64) and raw BER through the
//! BER-to-DER normaliser.
#![no_main]
use codedeploy_agent::spec::pkcs7::{verify_signed_content, verify_signed_der};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_signed_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify_signed_content(text);
    }
});
