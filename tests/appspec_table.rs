//! Table-driven appspec tests: every `tests/fixtures/appspec/*.yml` is parsed and the outcome
//! (the parsed spec, or every diagnostic with its `line:column`) compared with the `.expected`
//! file next to it. Fixtures named `windows-*` are parsed as the Windows agent would.
//!
//! After a deliberate change, regenerate with `UPDATE_EXPECT=1 cargo test --test appspec_table`
//! and review the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use codedeploy_agent::appspec::{self, AppSpec, Os, Severity};

fn render_spec(spec: &AppSpec) -> String {
    let mut out = format!("os {}\n", spec.os.as_str());
    for (event, scripts) in &spec.hooks {
        writeln!(out, "hook {event}").expect("writing to a String cannot fail");
        for s in scripts {
            writeln!(
                out,
                "  script @{}: location={:?} timeout={} runas={:?} sudo={}",
                s.position, s.location, s.timeout, s.runas, s.sudo
            )
            .expect("writing to a String cannot fail");
        }
    }
    for f in &spec.files {
        writeln!(
            out,
            "file @{}: {:?} -> {:?}",
            f.position, f.source, f.destination
        )
        .expect("writing to a String cannot fail");
    }
    for p in &spec.permissions {
        writeln!(out, "permission @{}: object={:?}", p.position, p.object)
            .expect("writing to a String cannot fail");
        writeln!(
            out,
            "  pattern={:?} except={:?} types={:?}",
            p.pattern, p.except, p.types
        )
        .expect("writing to a String cannot fail");
        writeln!(out, "  owner={:?} group={:?}", p.owner, p.group)
            .expect("writing to a String cannot fail");
        if let Some(m) = &p.mode {
            writeln!(out, "  mode text={:?} bits={:o}", m.text, m.bits)
                .expect("writing to a String cannot fail");
        }
        if !p.acls.is_empty() {
            let acls: Vec<String> = p.acls.iter().map(ToString::to_string).collect();
            writeln!(out, "  acls {}", acls.join(",")).expect("writing to a String cannot fail");
        }
        if let Some(c) = &p.context {
            let range = c.range.as_ref().map(ToString::to_string);
            writeln!(
                out,
                "  context user={:?} type={:?} range={:?}",
                c.user, c.type_, range
            )
            .expect("writing to a String cannot fail");
        }
    }
    if let Some(b) = spec.file_exists_behavior {
        writeln!(out, "file_exists_behavior {}", b.as_str())
            .expect("writing to a String cannot fail");
    }
    out
}

fn render(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("fixture is readable");
    let name = path
        .file_name()
        .expect("fixture has a name")
        .to_string_lossy();
    let os = if name.starts_with("windows-") {
        Os::Windows
    } else {
        Os::Linux
    };
    let mut out = String::new();
    match appspec::parse(&text, os) {
        Ok(parsed) => {
            out.push_str("OK\n");
            out.push_str(&render_spec(&parsed.spec));
            for w in &parsed.warnings {
                writeln!(out, "{w}").expect("writing to a String cannot fail");
            }
        }
        Err(e) => {
            // The first line is what the AWS agent reports (AppSpecError's Display).
            writeln!(out, "ERROR {e}").expect("writing to a String cannot fail");
            for d in &e.diagnostics {
                let tag = if d.severity == Severity::Error {
                    "error"
                } else {
                    "warning"
                };
                let pos = d
                    .position
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into());
                writeln!(out, "{tag} {pos}: {}", d.message)
                    .expect("writing to a String cannot fail");
            }
        }
    }
    out
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/appspec");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture directory exists")
        .map(|e| e.expect("fixture directory is readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn fixtures_match_expected() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    let paths = fixtures();
    assert!(paths.len() > 20, "fixtures missing");
    for path in paths {
        let got = render(&path);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "--- {}\n--- want\n{want}--- got\n{got}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// agent-behaviour.md §10.2 items 1-7: the message the AWS agent reports, word for word.
#[test]
fn acceptance_items_1_to_7() {
    let first_error = |text: &str| appspec::parse(text, Os::Linux).unwrap_err().to_string();
    assert_eq!(
        first_error(" \n"),
        "The deployment failed because the application specification file was empty. Make sure \
         your AppSpec file defines at minimum the 'version' and 'os' properties."
    );
    assert!(first_error("version: '0.0'\nos: linux\n").starts_with(
        "The deployment failed because an invalid version value (0.0) was entered in the \
         application specification file. Make sure your AppSpec file specifies \"0.0\" as the \
         version, and then try again."
    ));
    assert!(appspec::parse("version: 0\nos: linux\n", Os::Linux).is_ok());
    assert_eq!(
        first_error("version: 0.0\nos: Linux\n"),
        "The deployment failed because the application specification file specifies an \
         unsupported operating system (Linux). Specify either \"linux\" or \"windows\" in the os \
         section of the AppSpec file, and then try again."
    );
    assert_eq!(
        first_error("version: 0.0\nos: linux\nfile_exists_behavior: overwrite\n"),
        "The deployment failed because an invalid file_exists_behavior value (overwrite) was \
         entered in the application specification file. Make sure your AppSpec file specifies \
         one of DISALLOW,OVERWRITE,RETAIN as the file_exists_behavior, and then try again."
    );
    assert_eq!(
        first_error(
            "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: a.sh\n      \
             timeout: 0\n"
        ),
        "The deployment failed because an invalid timeout value was provided for a script in the \
         application specification file. Make corrections in the hooks section of the AppSpec \
         file, and then try again."
    );
    let parsed = appspec::parse(
        "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n",
        Os::Linux,
    )
    .unwrap();
    assert_eq!(parsed.spec.scripts("ApplicationStart"), None);
    assert_eq!(
        first_error("version: 0.0\nos: linux\nfiles:\n  - source: app\n"),
        "The deployment failed because the application specification file specifies only a \
         source file (app). Add the name of the destination file to the files section of the \
         AppSpec file, and then try again."
    );
}

#[test]
fn deep_nesting_is_rejected_not_overflowed() {
    for depth in [65, 100_000] {
        let text = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
        let err = appspec::parse(&text, Os::Linux).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
    }
    let mut block = String::new();
    for level in 0..100 {
        writeln!(block, "{}k{level}:", "  ".repeat(level)).unwrap();
    }
    let err = appspec::parse(&block, Os::Linux).unwrap_err();
    assert!(err.to_string().contains("nested too deeply"), "{err}");
    let text = format!(
        "a: {}{}\nversion: 0.0\nos: linux\n",
        "[".repeat(60),
        "]".repeat(60)
    );
    assert!(appspec::parse(&text, Os::Linux).is_ok());
}

#[test]
fn billion_laughs_is_refused_without_expansion() {
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        writeln!(text, "{name}: &{name} [{refs}]").unwrap();
    }
    let err = appspec::parse(&text, Os::Linux).unwrap_err();
    assert!(
        err.to_string().starts_with("YAML aliases are not allowed"),
        "{err}"
    );
    assert_eq!(err.diagnostics[0].position.unwrap().to_string(), "2:8");
}

#[test]
fn huge_flat_documents_are_bounded() {
    let text = format!("version: 0.0\nos: linux\nx: [{}]\n", "1,".repeat(300_000));
    let err = appspec::parse(&text, Os::Linux).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
}
