//! Archive reuse (`ReuseArchiveFromDeploymentId`, `enable_archive_reuse`) through the real
//! daemon against the fake host-commands service and the fake S3: a restart deployment copies
//! the named deployment's unpacked archive and makes no S3 request; every doubt (another
//! group, no record, a changed archive, an id of the wrong shape, the key off) downloads, and
//! the deployment's logs say which happened and why.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::Sandbox;
use support::daemon::{Daemon, run_commands, signed, spec_json, wait_quiet};
use support::fake_s3::FakeS3;
use support::fake_service::{Complete, FakeService, TestCredentials};

const T: Duration = Duration::from_secs(60);
const REUSED: &str = r#"{"error_code":0,"script_name":"","message":"Succeeded: BundleSource=archive-reuse","log":""}"#;
const DOWNLOADED: &str =
    r#"{"error_code":0,"script_name":"","message":"Succeeded: BundleSource=downloaded","log":""}"#;
const SUCCESS: &str = r#"{"error_code":0,"script_name":"","message":"Succeeded: ","log":""}"#;

fn skip() -> bool {
    !support::require::openssl()
}

fn payload(c: &Complete) -> &str {
    &c.diagnostics.as_ref().expect("diagnostics").payload
}

fn s3_spec(deployment: &str, group: &str, etag: &str, reuse: Option<&str>) -> Value {
    let mut spec = spec_json(deployment, group, Path::new("/unused"));
    spec["Revision"] = json!({"RevisionType": "S3", "S3Revision": {
        "Bucket": "releases", "Key": "b.tgz", "BundleType": "tgz", "ETag": etag}});
    if let Some(id) = reuse {
        spec["ReuseArchiveFromDeploymentId"] = json!(id);
    }
    spec
}

struct World {
    s: Sandbox,
    fake: FakeService,
    s3: FakeS3,
    etag: String,
}

impl World {
    fn new() -> Self {
        let s = Sandbox::new();
        let fake = FakeService::start();
        let s3 = FakeS3::start();
        fake.add_credentials(TestCredentials::new("testing", "testing"));
        let dest = s.dest().display().to_string();
        let dir = s.bundle(
            "app",
            &[
                (
                    "appspec.yml",
                    &format!(
                        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"
                    ),
                ),
                ("app/version.txt", "v1"),
                (
                    "scripts/start.sh",
                    "#!/bin/sh\necho \"started $(cat app/version.txt) in $DEPLOYMENT_ID\"\n",
                ),
            ],
        );
        let tgz = s.path().join("b.tgz");
        support::tgz(&dir, &tgz);
        let etag = s3.put("releases", "b.tgz", fs::read(&tgz).expect("tgz"));
        Self { s, fake, s3, etag }
    }

    fn agent(&self, extra: &str) -> Daemon {
        Daemon::start(
            &self.s,
            &self.fake,
            &format!(
                ":s3_endpoint_override: {}\n:max_revisions: 20\n{extra}",
                self.s3.url()
            ),
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
        )
    }

    /// Runs `commands` of `deployment`; returns the completes and the number of S3 GETs made.
    fn deploy(
        &self,
        deployment: &str,
        group: &str,
        reuse: Option<&str>,
        commands: &[&str],
    ) -> (Vec<Complete>, usize) {
        let before = self.s3.requests().len();
        let spec = signed(&s3_spec(deployment, group, &self.etag, reuse));
        let c = run_commands(&self.fake, deployment, commands, &spec, T);
        assert!(
            c.iter().all(|c| c.command_status == "Succeeded"),
            "{deployment}: {c:?}"
        );
        (c, self.s3.requests().len() - before)
    }

    fn deployment_dir(&self, group: &str, deployment: &str) -> std::path::PathBuf {
        self.s.root().join(group).join(deployment)
    }

    fn deployments_log(&self) -> String {
        fs::read_to_string(
            self.s
                .root()
                .join("deployment-logs/codedeploy-agent-deployments.log"),
        )
        .unwrap_or_default()
    }

    /// A restart deployment that must download: one GET at least, v2's `downloaded` note, and
    /// `why` in its scripts.log and the deployments log.
    fn assert_falls_back(&self, deployment: &str, group: &str, reuse: &str, why: &str) {
        let (c, gets) = self.deploy(deployment, group, Some(reuse), &["DownloadBundle"]);
        assert!(gets >= 1, "{deployment}: the revision was not downloaded");
        assert_eq!(payload(&c[0]), DOWNLOADED, "{deployment}");
        let dir = self.deployment_dir(group, deployment);
        assert_eq!(
            fs::read_to_string(dir.join(".bundle-source")).expect("marker"),
            "downloaded"
        );
        let line = format!("not reusing the archive of deployment {reuse}: ");
        let log = fs::read_to_string(dir.join("logs/scripts.log")).expect("scripts.log");
        assert!(
            log.contains(&line) && log.contains(why),
            "{deployment}: {log}"
        );
        let all = self.deployments_log();
        assert!(
            all.lines()
                .any(|l| l.contains(&format!("[{deployment}]")) && l.contains(why)),
            "{deployment}: {all}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("deployment-archive/app/version.txt")).expect("unpacked"),
            "v1"
        );
    }
}

#[test]
fn a_restart_deployment_reuses_the_archive_and_every_doubt_downloads() {
    if skip() {
        return;
    }
    let w = World::new();
    let mut agent = w.agent("");

    // An ordinary deployment downloads and records how, and what it unpacked.
    let (c, gets) = w.deploy(
        "d-FIRST",
        "dg",
        None,
        &["DownloadBundle", "Install", "ApplicationStart"],
    );
    assert!(gets >= 1);
    assert_eq!(payload(&c[0]), SUCCESS, "no note without a reuse request");
    let first = w.deployment_dir("dg", "d-FIRST");
    assert_eq!(
        fs::read_to_string(first.join(".bundle-source")).expect("marker"),
        "downloaded"
    );
    assert!(first.join(".archive-record").is_file());

    // The restart deployment: no S3 request at all, and it deploys from the copy.
    fs::remove_dir_all(w.s.dest()).expect("rm dest");
    let (c, gets) = w.deploy(
        "d-SECOND",
        "dg",
        Some("d-FIRST"),
        &["DownloadBundle", "Install", "ApplicationStart"],
    );
    assert_eq!(gets, 0, "the restart deployment made an S3 request");
    assert_eq!(payload(&c[0]), REUSED);
    assert_eq!(payload(&c[1]), SUCCESS);
    let second = w.deployment_dir("dg", "d-SECOND");
    assert_eq!(
        fs::read_to_string(second.join(".bundle-source")).expect("marker"),
        "archive-reuse"
    );
    assert_eq!(
        fs::read_to_string(w.s.dest().join("app/version.txt")).expect("installed"),
        "v1"
    );
    let log = fs::read_to_string(second.join("logs/scripts.log")).expect("scripts.log");
    assert!(
        log.contains("reused the unpacked archive of deployment d-FIRST")
            && log.contains("[stdout]started v1 in d-SECOND"),
        "{log}"
    );
    assert!(
        w.deployments_log()
            .contains("[d-SECOND]Archive reuse: reused the unpacked archive of deployment d-FIRST"),
        "{}",
        w.deployments_log()
    );
    assert!(
        agent.log_text().contains("reused the unpacked archive"),
        "the agent log says so too"
    );

    // Another group's archive is never used.
    w.assert_falls_back(
        "d-OTHERGROUP",
        "dg2",
        "d-FIRST",
        "has no unpacked archive in deployment group dg2",
    );
    // An id of the wrong shape is never made into a path.
    w.assert_falls_back("d-BADID", "dg", "d-first", "is not a deployment id");
    // No record of how the archive was obtained.
    fs::remove_file(w.deployment_dir("dg", "d-BADID").join(".archive-record")).expect("rm");
    w.assert_falls_back("d-NORECORD", "dg", "d-BADID", "has no record");
    // A changed archive (a hook wrote into it, say): the copy is discarded.
    fs::write(
        second.join("deployment-archive/scripts/start.sh"),
        "#!/bin/sh\necho tampered\n",
    )
    .expect("tamper");
    w.assert_falls_back(
        "d-TAMPERED",
        "dg",
        "d-SECOND",
        "archive changed since it was unpacked",
    );
    let start = fs::read_to_string(
        w.deployment_dir("dg", "d-TAMPERED")
            .join("deployment-archive/scripts/start.sh"),
    )
    .expect("downloaded script");
    assert!(!start.contains("tampered"), "{start}");
    // Another revision than the one recorded.
    let before = w.s3.requests().len();
    let mut other = s3_spec("d-MOVED", "dg", &w.etag, Some("d-FIRST"));
    other["Revision"]["S3Revision"]["Version"] = json!("v2");
    let c = run_commands(&w.fake, "d-MOVED", &["DownloadBundle"], &signed(&other), T);
    // The fake does not know the version; what counts is that it was asked.
    assert!(w.s3.requests().len() > before, "{c:?}");
    let log = fs::read_to_string(w.deployment_dir("dg", "d-MOVED").join("logs/scripts.log"))
        .expect("scripts.log");
    assert!(log.contains("was made from another revision"), "{log}");

    // The key off: the same intact archive is not reused. (The agent settles its last report
    // first, so the next one has nothing to send again.)
    wait_quiet(&w.fake, T);
    drop(agent);
    agent = w.agent(":enable_archive_reuse: false\n");
    w.assert_falls_back("d-KEYOFF", "dg", "d-FIRST", "enable_archive_reuse is off");
    drop(agent);
}
