//! Fault injection (issue 8, item 3): the real daemon against the fake host-commands service,
//! a fake S3 and a fake IMDS that misbehave on purpose. In every case: each command gets
//! exactly one final report (or, where the service accepted a report whose answer was lost,
//! the same report again and nothing else), nothing runs twice, and the agent never exits on
//! its own. `tests/daemon_e2e.rs` has the milder cases (a few throttles and 5xx, one dropped
//! connection, credential rotation between commands).

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Sandbox;
use support::daemon::{Daemon, HOST, run_commands, signed, spec_json};
use support::fake_s3::{FakeS3, S3Faults};
use support::fake_service::{Complete, FakeService, Fault, TestCredentials, command};

const T: Duration = Duration::from_secs(90);

fn skip() -> bool {
    !support::require::openssl()
}

fn payload(c: &Complete) -> Value {
    serde_json::from_str(&c.diagnostics.as_ref().expect("diagnostics").payload).expect("json")
}

/// Every command of `ids` has exactly one accepted complete.
#[track_caller]
fn assert_one_report_each(fake: &FakeService, ids: &[&str]) {
    let completes = fake.completes();
    for id in ids {
        let n = completes
            .iter()
            .filter(|c| c.host_command_identifier == *id)
            .count();
        assert_eq!(n, 1, "{id}: {n} final reports: {completes:#?}");
    }
}

#[track_caller]
fn assert_alive(agent: &mut Daemon) {
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "the agent exited on its own:\n{}",
        agent.log_text()
    );
}

/// A bundle whose ApplicationStart appends a line to `<sandbox>/runs`, and whose BeforeInstall
/// waits (up to a minute) for `<sandbox>/release` when `<sandbox>/hold` exists.
fn bundle(s: &Sandbox, name: &str, rev: &str) -> PathBuf {
    let dest = s.dest().display().to_string();
    let dir = s.path().display().to_string();
    let spec = format!(
        "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {dest}/app\nhooks:\n  BeforeInstall:\n    - location: scripts/before.sh\n      timeout: 120\n  ApplicationStart:\n    - location: scripts/start.sh\n"
    );
    let before = format!(
        "#!/bin/sh\nif [ -e {dir}/hold ]; then\n  touch {dir}/holding\n  i=0\n  while [ ! -e {dir}/release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\nfi\n"
    );
    let start = format!("#!/bin/sh\necho \"$DEPLOYMENT_ID {rev}\" >> {dir}/runs\n");
    s.bundle(
        name,
        &[
            ("appspec.yml", &spec),
            ("app/version.txt", rev),
            ("scripts/before.sh", &before),
            ("scripts/start.sh", &start),
        ],
    )
}

fn runs(s: &Sandbox) -> Vec<String> {
    fs::read_to_string(s.path().join("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// [`support::tgz`], and the archive's bytes.
fn tgz_of(dir: &Path, out: &Path) -> Vec<u8> {
    support::tgz(dir, out);
    fs::read(out).expect("read tgz")
}

/// Deterministic bytes that do not compress (an xorshift stream).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const DEPLOY: [&str; 4] = [
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "ApplicationStart",
];
const INSTALL: [&str; 2] = ["DownloadBundle", "Install"];

#[test]
fn storms_of_5xx_throttling_and_resets_mid_response_lose_nothing() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    // Every operation gets connection resets mid-response; most get 5xx and throttling too.
    fake.inject(Some("PollHostCommand"), Fault::Reset, 1);
    fake.inject(Some("GetDeploymentSpecification"), Fault::Reset, 1);
    fake.inject(Some("GetDeploymentSpecification"), Fault::ServerError, 1);
    fake.inject(Some("PutHostCommandAcknowledgement"), Fault::Reset, 1);
    fake.inject(Some("PutHostCommandAcknowledgement"), Fault::ServerError, 1);
    fake.inject(Some("PutHostCommandComplete"), Fault::Reset, 1);
    fake.inject(Some("PutHostCommandComplete"), Fault::Throttle, 1);
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let b = bundle(&s, "storm", "storm");
    let spec = signed(&spec_json("d-STORM", "dg", &b));
    let completes = run_commands(&fake, "st", &DEPLOY, &spec, T);
    assert!(
        completes.iter().all(|c| c.command_status == "Succeeded"),
        "{completes:?}"
    );
    let ids: Vec<String> = completes
        .iter()
        .map(|c| c.host_command_identifier.clone())
        .collect();
    assert_one_report_each(&fake, &ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(runs(&s), ["d-STORM storm"], "ApplicationStart ran once");
    // Every injected fault was actually served.
    let requests = fake.requests();
    let resets = requests.iter().filter(|r| r.status == 0).count();
    let errors = requests
        .iter()
        .filter(|r| r.status == 500 || r.error.as_deref() == Some("ThrottlingException"))
        .count();
    assert_eq!(resets, 4, "resets served");
    assert_eq!(errors, 3, "5xx and throttles served");
    // A further deployment of the group after the storm.
    let after = run_commands(&fake, "st2", &DEPLOY, &spec, T);
    assert!(after.iter().all(|c| c.command_status == "Succeeded"));
    assert_eq!(runs(&s).len(), 2);
    assert_alive(&mut agent);
}

#[test]
fn a_complete_that_times_out_is_sent_again_and_accepted_later() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let mut agent = Daemon::start(&s, &fake, ":http_read_timeout: 2\n", &[]);
    let b = bundle(&s, "late", "late");
    let spec = signed(&spec_json("d-LATE", "dg", &b));
    run_commands(&fake, "l", &DEPLOY[..3], &spec, T);

    // The ack is accepted; the first two completes hang past the read timeout, unapplied.
    fake.time_out_completes(2, Duration::from_secs(5));
    let c = run_commands(&fake, "l2", &DEPLOY[3..], &spec, T);
    assert_eq!(c[0].command_status, "Succeeded");
    assert_one_report_each(&fake, &["l2-0-ApplicationStart"]);
    // The timed-out attempts are recorded when the fake gives up on them (after 5 s).
    let count = |records: &[support::fake_service::Recorded]| {
        records
            .iter()
            .filter(|r| {
                r.operation == "PutHostCommandComplete"
                    && r.raw_body.contains("l2-0-ApplicationStart")
            })
            .count()
    };
    assert!(fake.wait_until(T, |r| count(r) >= 3));
    assert_eq!(
        count(&fake.requests()),
        3,
        "two timed out, the third was accepted"
    );
    assert_eq!(fake.acks().len(), 4, "one ack per command");

    // The service accepts the complete but the answer never arrives in time: the agent sends
    // the same result again (at least once, never a different one), and runs nothing again.
    fake.inject(
        Some("PutHostCommandComplete"),
        Fault::AnswerLate(Duration::from_secs(5)),
        1,
    );
    let id = "l3-start";
    fake.set_spec("l3/exec", "CodeDeploy", spec.clone());
    fake.enqueue(HOST, command(id, "ApplicationStart", HOST, "l3/exec"));
    let both = fake.wait_until(T, |records| {
        records
            .iter()
            .filter(|r| {
                r.operation == "PutHostCommandComplete"
                    && r.status == 200
                    && r.raw_body.contains(id)
            })
            .count()
            == 2
    });
    assert!(both, "the lost answer was followed by a resend");
    let mine: Vec<Complete> = fake
        .completes()
        .into_iter()
        .filter(|c| c.host_command_identifier == id)
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0], mine[1], "the resend is the same result");
    assert_eq!(mine[0].command_status, "Succeeded");
    assert_eq!(
        runs(&s),
        ["d-LATE late", "d-LATE late"],
        "one run per command"
    );
    // No third send once the second was answered, however long the retry schedule.
    assert_eq!(
        support::daemon::wait_quiet(&fake, T)
            .iter()
            .filter(|c| c.host_command_identifier == id)
            .count(),
        2
    );
    assert_alive(&mut agent);
}

fn s3_spec(deployment: &str, key: &str, etag: &str) -> Value {
    let mut spec = spec_json(deployment, "dg", Path::new("/unused"));
    spec["Revision"] = json!({"RevisionType": "S3", "S3Revision": {
        "Bucket": "releases", "Key": key, "BundleType": "tgz", "ETag": etag}});
    spec
}

#[test]
fn slow_truncated_mislabelled_and_corrupted_s3_downloads() {
    if skip() {
        return;
    }
    let s = Sandbox::new();
    let fake = FakeService::start();
    let s3 = FakeS3::start();
    fake.add_credentials(TestCredentials::new("testing", "testing"));
    let mut agent = Daemon::start(
        &s,
        &fake,
        &format!(":s3_endpoint_override: {}\n", s3.url()),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    // A bundle with 96 KiB that do not compress, so the tgz is about that big.
    let dir = bundle(&s, "s3", "s3");
    let blob = noise(96 << 10, 7);
    fs::write(dir.join("app/blob.bin"), &blob).expect("blob");
    let tgz = tgz_of(&dir, &s.path().join("b.tgz"));
    let etag = s3.put("releases", "b.tgz", tgz.clone());
    let mut expected_runs = 0;
    let mut deploy = |n: &str, faults: S3Faults, etag: &str| -> Vec<Complete> {
        s3.set_faults(faults);
        let before = s3.requests().len();
        let spec = signed(&s3_spec(&format!("d-{n}"), "b.tgz", etag));
        let c = run_commands(&fake, n, &["DownloadBundle"], &spec, T);
        s3.set_faults(S3Faults::default());
        let gets = s3.wait_requests(before + 1, Duration::from_secs(10)).len() - before;
        assert!(gets >= 1, "{n}: no GET");
        if c[0].command_status == "Succeeded" {
            let rest = run_commands(&fake, &format!("{n}-rest"), &DEPLOY[1..], &spec, T);
            assert!(rest.iter().all(|c| c.command_status == "Succeeded"), "{n}");
            expected_runs += 1;
            assert_eq!(
                fs::read(s.dest().join("app/blob.bin")).expect("installed"),
                blob,
                "{n}: installed bytes"
            );
        }
        c
    };

    // Bytes trickle: 4 KiB every 100 ms (about 2.5 s for the bundle).
    let started = Instant::now();
    let c = deploy(
        "trickle",
        S3Faults {
            trickle: Some((4096, Duration::from_millis(100))),
            ..S3Faults::default()
        },
        &etag,
    );
    assert_eq!(c[0].command_status, "Succeeded", "{c:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Two responses cut off half way: resumed from the last byte, only while the ETag holds.
    let before = s3.requests().len();
    let c = deploy(
        "truncated",
        S3Faults {
            truncate_next: 2,
            ..S3Faults::default()
        },
        &etag,
    );
    assert_eq!(c[0].command_status, "Succeeded", "{c:?}");
    let gets: Vec<_> = s3.wait_requests(before + 3, Duration::from_secs(10))[before..].to_vec();
    assert_eq!(gets.len(), 3, "{gets:#?}");
    assert!(!gets[0].complete && !gets[1].complete && gets[2].complete);
    for resume in &gets[1..] {
        assert_eq!(
            resume.if_match.as_deref().map(|m| m.trim_matches('"')),
            Some(etag.as_str()),
            "resumes are pinned to the ETag"
        );
        assert!(
            resume
                .range
                .as_deref()
                .is_some_and(|r| !r.starts_with("bytes=0-"))
        );
    }

    // S3 answers another ETag than the spec names: refused, one clean failure.
    let c = deploy(
        "etag",
        S3Faults {
            etag_override: Some("0123456789abcdef0123456789abcdef".into()),
            ..S3Faults::default()
        },
        &etag,
    );
    assert_eq!(c[0].command_status, "Failed");
    let p = payload(&c[0]);
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("Expected deployment artifact bundle etag")),
        "{p}"
    );

    // The bytes do not match their MD5 ETag.
    let c = deploy(
        "corrupt",
        S3Faults {
            corrupt: true,
            ..S3Faults::default()
        },
        &etag,
    );
    assert_eq!(c[0].command_status, "Failed");
    let p = payload(&c[0]);
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("arrived corrupted")),
        "{p}"
    );

    // Every response breaks off: the resumes are bounded and the command fails cleanly.
    let before = s3.requests().len();
    let c = deploy(
        "broken",
        S3Faults {
            truncate_next: 1000,
            ..S3Faults::default()
        },
        &etag,
    );
    assert_eq!(c[0].command_status, "Failed");
    let p = payload(&c[0]);
    let gets = s3.wait_requests(before + 2, Duration::from_secs(10)).len() - before;
    assert!((2..=20).contains(&gets), "{gets} GETs");
    assert!(
        p["message"].as_str().is_some_and(|m| m.contains("b.tgz")),
        "{p}"
    );

    // And a normal deployment after all that.
    let c = deploy("after", S3Faults::default(), &etag);
    assert_eq!(c[0].command_status, "Succeeded");
    assert_eq!(runs(&s).len(), expected_runs);
    assert_eq!(expected_runs, 3);
    let ids: Vec<String> = fake
        .completes()
        .iter()
        .map(|c| c.host_command_identifier.clone())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "one final report per command: {ids:?}"
    );
    assert_alive(&mut agent);
}

#[test]
fn imds_down_at_start_then_credentials_expiring_mid_deployment() {
    if skip() {
        return;
    }
    use support::fake_imds::FakeImds;
    let s = Sandbox::new();
    let fake = FakeService::start();
    let imds = FakeImds::start();
    imds.set(|st| {
        st.region = "us-east-1".into();
        st.down = true;
    });
    let host = "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0";
    imds.rotate_credentials("ASIAONE", Duration::from_secs(240));
    fake.add_credentials(
        TestCredentials::new("ASIAONE", "secret-ASIAONE").with_session_token("session-ASIAONE"),
    );
    let url = imds.url();
    // No host identifier from the environment: the agent must learn it from IMDS.
    let mut agent = Daemon::start_as(
        &s,
        &fake,
        host,
        ":codedeploy_test_profile: prod\n",
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", url.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_HOST_IDENTIFIER", ""),
        ],
    );
    // IMDS stays down for a while; the agent keeps trying and does not exit.
    // (Before the fix the agent gave up and exited after about 6 s.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert_alive(&mut agent);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(imds.requests().len() >= 2, "the agent kept asking IMDS");
    assert!(fake.requests().is_empty(), "no identity, no service calls");
    imds.set(|st| st.down = false);

    // A deployment whose BeforeInstall is held while the credentials expire.
    let b = bundle(&s, "creds", "creds");
    let spec = signed(&spec_json("d-CREDS", "dg", &b));
    fs::write(s.path().join("hold"), "").expect("hold");
    for (i, name) in DEPLOY.iter().enumerate() {
        let exec = format!("c/exec/{i}");
        fake.set_spec(&exec, "CodeDeploy", spec.clone());
        fake.enqueue(host, command(&format!("c-{i}"), name, host, &exec));
        if *name == "BeforeInstall" {
            let holding = s.path().join("holding");
            let until = Instant::now() + T;
            while !holding.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(holding.exists(), "BeforeInstall is running");
            imds.rotate_credentials("ASIATWO", Duration::from_secs(3600));
            fake.add_credentials(
                TestCredentials::new("ASIATWO", "secret-ASIATWO")
                    .with_session_token("session-ASIATWO"),
            );
            fake.revoke_credentials("ASIAONE");
            fs::write(s.path().join("release"), "").expect("release");
        }
        fake.wait_for_completes(i + 1, T);
    }
    let completes = fake.completes();
    assert!(
        completes.iter().all(|c| c.command_status == "Succeeded"),
        "{completes:?}"
    );
    assert_one_report_each(&fake, &["c-0", "c-1", "c-2", "c-3"]);
    assert_eq!(runs(&s), ["d-CREDS creds"]);
    let keys: Vec<Option<String>> = fake
        .requests()
        .iter()
        .filter(|r| r.operation == "PutHostCommandComplete" && r.status == 200)
        .map(|r| r.access_key.clone())
        .collect();
    assert_eq!(keys[0].as_deref(), Some("ASIAONE"));
    assert_eq!(
        keys[1].as_deref(),
        Some("ASIATWO"),
        "the report after the expiry is signed with the new credentials"
    );
    assert_alive(&mut agent);
}

#[test]
fn disk_full_during_unpack_and_during_install() {
    if skip() {
        return;
    }
    // Unpack: the deployment root on a tmpfs with few inodes, a bundle of many small files;
    // the byte count fits (so the free-space check passes) and creating files fails half way.
    if !support::require::root() {
        return;
    }
    let Some(rootfs) = support::tmpfs::Tmpfs::mount("size=16m,nr_inodes=120") else {
        support::require::missing("a tmpfs mount", "mount -t tmpfs must work for root");
        return;
    };
    let Some(destfs) = support::tmpfs::Tmpfs::mount("size=2m") else {
        support::require::missing("a tmpfs mount", "mount -t tmpfs must work for root");
        return;
    };
    let s = Sandbox::new();
    let fake = FakeService::start();
    // The sandbox's deployment root is a symlink to the tmpfs.
    let root = s.root();
    std::os::unix::fs::symlink(rootfs.path(), &root).expect("symlink the root");
    let dest = destfs.path().join("dest");
    fs::create_dir_all(&dest).expect("dest");
    let mut agent = Daemon::start(&s, &fake, "", &[]);
    let appspec = |dir: &str| {
        format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: {}/{dir}\n",
            dest.display()
        )
    };
    let local_file = |deployment: &str, tgz: &Path| {
        let mut spec = spec_json(deployment, "dg", tgz);
        spec["Revision"] = json!({"RevisionType": "Local File", "LocalRevision": {
            "Location": tgz.display().to_string(), "BundleType": "tgz"}});
        signed(&spec)
    };

    // A small good deployment first, so the group has a previous install.
    let good = s.bundle(
        "good",
        &[("appspec.yml", &appspec("app")), ("app/v", "good")],
    );
    let good_tgz = s.path().join("good.tgz");
    tgz_of(&good, &good_tgz);
    let c = run_commands(&fake, "g", &INSTALL, &local_file("d-GOOD", &good_tgz), T);
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    let (bytes_before, inodes_before) = rootfs.free();

    let mut files: Vec<(String, String)> = vec![("appspec.yml".into(), appspec("app"))];
    for i in 0..300 {
        files.push((format!("app/f{i:03}"), format!("file {i}")));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let many = s.bundle("many", &refs);
    let many_tgz = s.path().join("many.tgz");
    tgz_of(&many, &many_tgz);
    let c = run_commands(
        &fake,
        "u",
        &INSTALL[..1],
        &local_file("d-MANY", &many_tgz),
        T,
    );
    assert_eq!(c[0].command_status, "Failed", "{c:?}");
    let message = payload(&c[0])["message"].as_str().unwrap_or("").to_owned();
    assert!(
        message.contains("No space left on device"),
        "a clear message: {message}"
    );
    let archive = root.join("dg/d-MANY/deployment-archive");
    assert!(
        !archive.exists() || fs::read_dir(&archive).expect("ls").next().is_none(),
        "no half-unpacked archive left"
    );
    let (bytes_after, inodes_after) = rootfs.free();
    assert!(
        inodes_after + 8 >= inodes_before && bytes_after + (256 << 10) >= bytes_before,
        "space reclaimed: inodes {inodes_before} -> {inodes_after}, bytes {bytes_before} -> {bytes_after}"
    );
    // The group's previous install is untouched, and its cleanup file still describes it.
    assert_eq!(fs::read_to_string(dest.join("app/v")).expect("v"), "good");

    // Install: the destination is a 2 MiB tmpfs, the bundle holds 3 MiB.
    let big = s.bundle("big", &[("appspec.yml", &appspec("big")), ("app/v", "big")]);
    for i in 0..3 {
        fs::write(big.join(format!("app/part{i}")), noise(1 << 20, i + 1)).expect("part");
    }
    let big_tgz = s.path().join("big.tgz");
    tgz_of(&big, &big_tgz);
    let spec = local_file("d-BIG", &big_tgz);
    let c = run_commands(&fake, "i", &INSTALL, &spec, T);
    assert_eq!(c[0].command_status, "Succeeded", "{c:?}");
    assert_eq!(c[1].command_status, "Failed", "{c:?}");
    let message = payload(&c[1])["message"].as_str().unwrap_or("").to_owned();
    assert!(
        // Copies run in parallel: whichever file hit the full disk first is named.
        message.contains("No space left on device")
            && message.contains(&format!("{}/big/", dest.display())),
        "a clear message naming the file: {message}"
    );
    // No half state the agent does not know about: whatever Install left in the destination
    // is in the group's cleanup file, so the next install removes it.
    let cleanup =
        fs::read_to_string(root.join("deployment-instructions/dg-cleanup")).expect("cleanup file");
    let recorded: Vec<&str> = cleanup.lines().collect();
    for entry in walk(&dest) {
        assert!(
            recorded.contains(&entry.to_str().expect("utf8")),
            "{} is not in the cleanup file:\n{cleanup}",
            entry.display()
        );
    }
    // The next deployment of the group succeeds and reclaims the space.
    let c = run_commands(&fake, "n", &INSTALL, &local_file("d-NEXT", &good_tgz), T);
    assert!(c.iter().all(|c| c.command_status == "Succeeded"), "{c:?}");
    assert!(
        !dest.join("big").exists(),
        "the partial install was removed"
    );
    assert_eq!(fs::read_to_string(dest.join("app/v")).expect("v"), "good");
    let (dest_free, _) = destfs.free();
    assert!(
        dest_free > (1900 << 10),
        "space reclaimed: {dest_free} bytes free"
    );
    let ids: Vec<String> = fake
        .completes()
        .iter()
        .map(|c| c.host_command_identifier.clone())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "one final report per command");
    assert_alive(&mut agent);
    drop(agent);
}

/// Every path under `dir` (not `dir` itself).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
