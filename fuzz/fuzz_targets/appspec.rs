//! The appspec parser (YAML + every check, ACL and SELinux grammars included) on any text.
#![no_main]
use codedeploy_agent::appspec::{Os, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(text, Os::Linux);
});
