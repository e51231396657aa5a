//! The on-premises configuration (`codedeploy.onpremises.yml`).
#![no_main]
use codedeploy_agent::control::onprem::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(
        text,
        std::path::Path::new("/etc/codedeploy-agent/conf/codedeploy.onpremises.yml"),
    );
});
