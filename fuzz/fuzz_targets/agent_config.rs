//! `codedeployagent.yml` parsing and validation.
#![no_main]
use codedeploy_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(
        text,
        std::path::Path::new("/etc/codedeploy-agent/conf/codedeployagent.yml"),
    );
});
