//! Table-driven ECS and Lambda appspec tests: every file in `tests/fixtures/appspec-platform/`
//! (YAML and JSON) is checked by `appspec::platform::check` and the outcome (the platform and
//! every diagnostic with its `line:column`) compared with the `.expected` file next to it.
//! Files named `*-valid*` must have no errors; `*-broken*` must have some.
//!
//! After a deliberate change, regenerate with `UPDATE_EXPECT=1 cargo test --test
//! platform_appspec_table` and review the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use codedeploy_agent::appspec::Severity;
use codedeploy_agent::appspec::platform;

fn render(text: &str) -> String {
    let Some(c) = platform::check(text) else {
        return "not an ECS or Lambda appspec\n".to_owned();
    };
    let mut out = format!(
        "platform {}\n",
        c.platform.map_or("unknown", platform::Platform::as_str)
    );
    for d in &c.diagnostics {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let pos = d.position.map_or_else(|| "-".to_owned(), |p| p.to_string());
        writeln!(out, "{pos}: {sev}: {}", d.message).expect("writing to a String cannot fail");
    }
    out
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/appspec-platform");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    out.sort();
    assert!(out.len() >= 8, "fixtures missing in {}", dir.display());
    out
}

#[test]
fn every_fixture_matches_its_expected_outcome() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let got = render(&text);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let has_errors = got.contains(": error: ");
        if name.contains("-valid") {
            assert!(!has_errors, "{name} should be valid:\n{got}");
        }
        if name.contains("-broken") {
            assert!(has_errors, "{name} should have errors:\n{got}");
        }
        let expected_path = path.with_file_name(format!("{name}.expected"));
        if update {
            std::fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            failures.push(format!("{name}:\n--- expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
