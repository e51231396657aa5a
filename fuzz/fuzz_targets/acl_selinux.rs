//! The `acls` entry and SELinux `range` grammars directly (through the hidden
//! `appspec::fuzzing` helpers), then the same string inside a generated appspec so the
//! parser's wiring of both is exercised too.
#![no_main]
use codedeploy_agent::appspec::{Os, fuzzing, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = fuzzing::parse_ace(text);
    let _ = fuzzing::parse_range(text);
    // As YAML scalars (JSON-quoted strings are valid YAML double-quoted scalars).
    let Ok(quoted) = serde_json_escape(text) else {
        return;
    };
    let appspec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /tmp/x\n\
         permissions:\n  - object: /tmp/x\n    acls:\n      - {quoted}\n\
         \x20   context:\n      type: t\n      range: {quoted}\n"
    );
    let _ = parse(&appspec, Os::Linux);
});

/// A YAML double-quoted scalar for `s`, or `Err` when it holds characters YAML cannot quote.
fn serde_json_escape(s: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => return Err(()),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}
