//! `codedeploy-agent validate` on ECS and Lambda appspecs through the real binary: recognised
//! by content whatever the file is called, `appspec.json` found in a directory, every problem
//! printed with `line:column`, exit 1 on errors. The structure checks themselves are
//! table-driven in `platform_appspec_table.rs`.

mod support;

use std::process::Command;

use support::{Run, Sandbox, bin};

fn validate(args: &[&str]) -> Run {
    Run::from(
        Command::new(bin())
            .arg("validate")
            .args(args)
            .output()
            .expect("run"),
    )
}

const ECS: &str = "version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n      Properties:\n        TaskDefinition: <TASK_DEFINITION>\n        LoadBalancerInfo:\n          ContainerName: web\n          ContainerPort: 80\nHooks:\n  - AfterAllowTestTraffic: smoke-test\n";

#[test]
fn a_valid_ecs_appspec_file_is_valid() {
    let s = Sandbox::new();
    let b = s.bundle("ecs", &[("appspec.yaml", ECS), ("taskdef.json", "{}")]);
    let run = validate(&[b.join("appspec.yaml").to_str().expect("utf8")]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("valid (0 warnings)"), "{}", run.stdout);
    // The directory form finds the same file (and does not ask for EC2 bundle content).
    let run = validate(&[b.to_str().expect("utf8")]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn a_broken_lambda_appspec_json_lists_every_problem_with_positions() {
    let s = Sandbox::new();
    let json = "{\n  \"version\": 0.0,\n  \"Resources\": [\n    { \"orders\": { \"Type\": \"AWS::Lambda::Function\",\n      \"Properties\": { \"Name\": \"orders\", \"CurrentVersion\": \"1\", \"TargetVersion\": \"$LATEST\" } } }\n  ],\n  \"Hooks\": [ { \"AfterInstall\": \"f\" } ]\n}\n";
    let b = s.bundle("lambda", &[("appspec.json", json)]);
    let run = validate(&[b.to_str().expect("utf8")]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    for want in [
        "appspec.json:5:7: error: orders.Properties: Alias is required",
        "appspec.json:5:81: error: orders.Properties: TargetVersion must be a published version number",
        "appspec.json:7:16: error: Hooks: AfterInstall is not a lifecycle event of a Lambda deployment",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{}",
            run.stdout
        );
    }
    assert!(
        lines.last().is_some_and(|l| l.contains("3 errors")),
        "{}",
        run.stdout
    );
    let run = validate(&[
        "--format",
        "json",
        b.join("appspec.json").to_str().expect("utf8"),
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("\"line\": 5"), "{}", run.stdout);
}
