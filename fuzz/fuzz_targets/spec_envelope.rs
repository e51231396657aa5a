//! The deployment-spec envelope: the first byte picks the format (TEXT/JSON, PKCS7/JSON or an
//! unsupported one), the rest is the payload.
#![no_main]
use codedeploy_agent::spec::parse_envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(payload) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match selector % 4 {
        0 => Some("TEXT/JSON"),
        1 => Some("PKCS7/JSON"),
        2 => None,
        _ => Some("XML"),
    };
    let _ = parse_envelope(format, payload, selector & 0x80 == 0);
});
