//! `deploy::plan::build` against real bundle directories in temp dirs.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use codedeploy_agent::appspec::{
    AclEntry, AclKind, AppSpec, FileExistsBehavior, FileMapping, Mode, ObjectType, Os, Permission,
    Position, SeContext, SeRange,
};
use codedeploy_agent::deploy::plan::{self, Instruction, PlanError, ProblemKind};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

struct Fixture {
    _bundle_dir: TempDir,
    _dest_dir: TempDir,
    /// The deployment archive (canonical).
    bundle: PathBuf,
    /// An existing, empty directory to install under (canonical).
    dest: PathBuf,
}

fn fixture() -> Fixture {
    let bundle_dir = tempfile::tempdir().expect("tempdir");
    let dest_dir = tempfile::tempdir().expect("tempdir");
    let bundle = fs::canonicalize(bundle_dir.path()).expect("canonical");
    let dest = fs::canonicalize(dest_dir.path()).expect("canonical");
    Fixture {
        _bundle_dir: bundle_dir,
        _dest_dir: dest_dir,
        bundle,
        dest,
    }
}

impl Fixture {
    /// Creates `rel` in the bundle: a directory when it ends with `/`, else a file.
    fn add(&self, rel: &str) -> &Self {
        let path = self.bundle.join(rel.trim_end_matches('/'));
        if rel.ends_with('/') {
            fs::create_dir_all(&path).expect("mkdir");
        } else {
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, rel).expect("write");
        }
        self
    }

    fn link(&self, rel: &str, target: &str) -> &Self {
        let path = self.bundle.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        symlink(target, path).expect("symlink");
        self
    }

    fn b(&self, rel: &str) -> PathBuf {
        self.bundle.join(rel)
    }

    fn d(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    /// `d(rel)` as the string an appspec would hold.
    fn ds(&self, rel: &str) -> String {
        self.d(rel).display().to_string()
    }

    fn build(&self, spec: &AppSpec) -> Result<plan::InstallPlan, PlanError> {
        plan::build(spec, &self.bundle)
    }
}

fn pos(line: usize) -> Position {
    Position { line, column: 3 }
}

fn spec(files: Vec<FileMapping>, permissions: Vec<Permission>) -> AppSpec {
    AppSpec {
        os: Os::Linux,
        files,
        permissions,
        hooks: Vec::new(),
        hook_positions: Vec::new(),
        file_exists_behavior: None,
    }
}

fn map(source: &str, destination: &str, line: usize) -> FileMapping {
    FileMapping {
        source: source.to_owned(),
        destination: destination.to_owned(),
        position: pos(line),
    }
}

fn perm(object: &str, line: usize) -> Permission {
    Permission {
        object: object.to_owned(),
        pattern: "**".to_owned(),
        except: Vec::new(),
        types: vec![ObjectType::File, ObjectType::Directory],
        owner: Some("app".to_owned()),
        group: None,
        mode: None,
        acls: Vec::new(),
        context: None,
        position: pos(line),
    }
}

fn copy(source: PathBuf, destination: PathBuf) -> Instruction {
    Instruction::Copy {
        source: source.into(),
        destination: destination.into(),
        symlink: false,
    }
}

fn link_copy(source: PathBuf, destination: PathBuf) -> Instruction {
    Instruction::Copy {
        source: source.into(),
        destination: destination.into(),
        symlink: true,
    }
}

fn mkdir(directory: PathBuf) -> Instruction {
    Instruction::Mkdir {
        directory: directory.into(),
    }
}

fn chown(file: PathBuf) -> Instruction {
    Instruction::Chown {
        owner: Some("app".into()),
        group: None,
        file: file.into(),
    }
}

/// The files that get a chown, in order.
fn chowned(plan: &plan::InstallPlan) -> Vec<PathBuf> {
    plan.instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::Chown { file, .. } => Some(file.to_path_buf()),
            _ => None,
        })
        .collect()
}

fn kinds(err: &PlanError) -> Vec<ProblemKind> {
    err.problems().map(|p| p.kind.clone()).collect()
}

// ---------------------------------------------------------------- files

#[test]
fn file_source_installs_as_destination_slash_basename_with_missing_ancestors() {
    let f = fixture();
    f.add("config/app.conf").add("config/other.conf");
    let plan = f
        .build(&spec(
            vec![map("config/app.conf", &f.ds("etc/app"), 1)],
            vec![],
        ))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("etc")),
            mkdir(f.d("etc/app")),
            copy(f.b("config/app.conf"), f.d("etc/app/app.conf")),
        ]
    );
}

#[test]
fn directory_source_merges_its_contents_recursively_in_byte_order() {
    let f = fixture();
    f.add("web/index.html")
        .add("web/css/site.css")
        .add("web/.hidden")
        .add("web/Zeta")
        .add("web/empty/");
    let plan = f
        .build(&spec(vec![map("web/", &f.ds("var/www"), 1)], vec![]))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("var")),
            mkdir(f.d("var/www")),
            copy(f.b("web/.hidden"), f.d("var/www/.hidden")),
            copy(f.b("web/Zeta"), f.d("var/www/Zeta")),
            mkdir(f.d("var/www/css")),
            copy(f.b("web/css/site.css"), f.d("var/www/css/site.css")),
            mkdir(f.d("var/www/empty")),
            copy(f.b("web/index.html"), f.d("var/www/index.html")),
        ]
    );
}

#[test]
fn directories_that_exist_on_disk_are_not_created() {
    let f = fixture();
    f.add("web/css/site.css").add("web/js/app.js");
    fs::create_dir_all(f.d("www/css")).expect("mkdir");
    let plan = f
        .build(&spec(vec![map("web", &f.ds("www"), 1)], vec![]))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            copy(f.b("web/css/site.css"), f.d("www/css/site.css")),
            mkdir(f.d("www/js")),
            copy(f.b("web/js/app.js"), f.d("www/js/app.js")),
        ]
    );
}

#[test]
fn slash_and_dot_sources_mean_the_whole_archive() {
    for source in ["/", ".", "./", ""] {
        let f = fixture();
        f.add("appspec.yml").add("scripts/start.sh");
        let plan = f
            .build(&spec(vec![map(source, &f.ds(""), 1)], vec![]))
            .expect("plan");
        assert_eq!(
            plan.instructions,
            vec![
                copy(f.b("appspec.yml"), f.d("appspec.yml")),
                mkdir(f.d("scripts")),
                copy(f.b("scripts/start.sh"), f.d("scripts/start.sh")),
            ],
            "source {source:?}"
        );
    }
}

#[test]
fn destinations_are_normalised() {
    let f = fixture();
    f.add("a.txt");
    let destination = format!("{}//x/./y/../z/", f.dest.display());
    let plan = f
        .build(&spec(vec![map("./a.txt", &destination, 1)], vec![]))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("x")),
            mkdir(f.d("x/z")),
            copy(f.b("a.txt"), f.d("x/z/a.txt")),
        ]
    );
}

#[test]
fn repeated_mkdirs_are_merged_silently_with_or_without_trailing_slash() {
    let f = fixture();
    f.add("a/one").add("b/two");
    let plan = f
        .build(&spec(
            vec![
                map("a/one", &f.ds("new/dir"), 1),
                map("b/two", &format!("{}/", f.ds("new/dir")), 2),
            ],
            vec![],
        ))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("new")),
            mkdir(f.d("new/dir")),
            copy(f.b("a/one"), f.d("new/dir/one")),
            copy(f.b("b/two"), f.d("new/dir/two")),
        ]
    );
}

#[test]
fn two_sources_for_one_destination_fail_with_the_aws_message() {
    let f = fixture();
    f.add("a/x.txt").add("b/x.txt");
    let err = f
        .build(&spec(
            vec![
                map("a/x.txt", &f.ds("out"), 1),
                map("b/x.txt", &f.ds("out"), 2),
            ],
            vec![],
        ))
        .expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the application specification file specifies two source files named {} and {} for the same destination ({}). Remove one of the source file paths from the AppSpec file, and then try again.",
            f.b("b/x.txt").display(),
            f.b("a/x.txt").display(),
            f.d("out/x.txt").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(2)));
    assert_eq!(err.problems().count(), 1);
}

#[test]
fn a_copy_onto_a_planned_directory_fails_with_the_aws_message() {
    let f = fixture();
    f.add("tree/x/inner").add("file/x");
    let err = f
        .build(&spec(
            vec![map("tree", &f.ds(""), 1), map("file/x", &f.ds(""), 2)],
            vec![],
        ))
        .expect_err("collision");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the application specification file calls for installing the file {}, but a file with that name already exists at the location ({}). Update your AppSpec file or directory structure, and then try again.",
            f.b("file/x").display(),
            f.d("x").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(2)));
}

#[test]
fn a_directory_onto_a_planned_copy_fails_with_the_aws_message() {
    let f = fixture();
    f.add("tree/x/inner").add("file/x");
    let err = f
        .build(&spec(
            vec![map("file/x", &f.ds(""), 1), map("tree", &f.ds(""), 2)],
            vec![],
        ))
        .expect_err("collision");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the application specification file includes an mkdir command more than once for the same destination path ({}) from ({}). Update the files section of the AppSpec file, and then try again.",
            f.d("x").display(),
            f.b("file/x").display()
        )
    );
}

#[test]
fn every_problem_is_collected_and_the_aws_one_comes_first() {
    let f = fixture();
    f.add("a/x").add("b/x");
    let err = f
        .build(&spec(
            vec![
                map("missing.txt", &f.ds(""), 1),
                map("a/x", &f.ds(""), 2),
                map("b/x", &f.ds(""), 3),
            ],
            vec![],
        ))
        .expect_err("problems");
    let all: Vec<_> = err.problems().collect();
    assert_eq!(all.len(), 2);
    assert!(matches!(
        all[0].kind,
        ProblemKind::DuplicateDestination { .. }
    ));
    assert_eq!(all[0].position, Some(pos(3)));
    assert!(matches!(all[1].kind, ProblemKind::SourceMissing { .. }));
    assert_eq!(all[1].position, Some(pos(1)));
    assert_eq!(err.to_string(), all[0].to_string());
}

#[test]
fn planning_never_writes() {
    let f = fixture();
    f.add("web/a/b/c.txt");
    f.build(&spec(
        vec![map("web", &f.ds("deep/er"), 1)],
        vec![perm(&f.ds("deep"), 2)],
    ))
    .expect("plan");
    assert_eq!(fs::read_dir(&f.dest).expect("read").count(), 0);
}

// ---------------------------------------------------------------- sources

#[test]
fn a_missing_source_is_an_error_naming_source_and_position() {
    let f = fixture();
    f.add("config/app.conf");
    let err = f
        .build(&spec(vec![map("config/nope.conf", &f.ds(""), 7)], vec![]))
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the files section of the AppSpec file names a source (config/nope.conf) that does not exist in the revision ({} not found). Correct the source in the files section of the AppSpec file, and then try again.",
            f.b("config/nope.conf").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(7)));
    // A path through a regular file is missing too.
    let err = f
        .build(&spec(vec![map("config/app.conf/x", &f.ds(""), 1)], vec![]))
        .expect_err("missing");
    assert!(matches!(
        err.first().kind,
        ProblemKind::SourceMissing { .. }
    ));
}

#[test]
fn sources_escaping_the_archive_are_errors() {
    let f = fixture();
    let outside = fixture();
    outside.add("secret/key").add("file.txt");
    f.add("inner/x")
        .link(
            "out-dir",
            &outside.bundle.join("secret").display().to_string(),
        )
        .link("rel-out", "../")
        .link("inner/up", "../..");
    for source in [
        "../x",
        "inner/../../x",
        "out-dir/key",
        "out-dir",
        "out-dir/",
        "rel-out",
        "inner/up/anything",
    ] {
        let err = f
            .build(&spec(vec![map(source, &f.ds(""), 4)], vec![]))
            .expect_err(source);
        assert!(
            matches!(&err.first().kind, ProblemKind::SourceEscapes { source_text, .. } if source_text == source),
            "{source}: {err}"
        );
        assert_eq!(err.first().position, Some(pos(4)));
    }
    let err = f
        .build(&spec(vec![map("out-dir/key", &f.ds(""), 1)], vec![]))
        .expect_err("escape");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the files section of the AppSpec file names a source (out-dir/key) that resolves outside the revision through the symbolic link {}. Sources must stay inside the revision. Correct the source in the files section of the AppSpec file, and then try again.",
            f.b("out-dir").display()
        )
    );
}

#[test]
fn a_named_symlink_to_a_directory_inside_is_walked_but_links_inside_it_are_not() {
    let f = fixture();
    f.add("build/web/index.html")
        .link("current", "build/web")
        .link("build/web/shared", "../../shared")
        .add("shared/lib.js");
    let plan = f
        .build(&spec(vec![map("current", &f.ds("www"), 1)], vec![]))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("www")),
            copy(f.b("build/web/index.html"), f.d("www/index.html")),
            link_copy(f.b("build/web/shared"), f.d("www/shared")),
        ]
    );
}

#[test]
fn leading_symlinks_inside_the_archive_are_followed() {
    let f = fixture();
    f.add("real/conf/app.conf").link("alias", "real");
    let plan = f
        .build(&spec(
            vec![map("alias/conf/app.conf", &f.ds(""), 1)],
            vec![],
        ))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![copy(f.b("real/conf/app.conf"), f.d("app.conf"))]
    );
}

#[test]
fn symlinks_are_installed_as_symlinks_and_never_entered() {
    let f = fixture();
    let outside = fixture();
    outside.add("etc/passwd");
    f.add("app/bin/run")
        .link("app/etc", &outside.bundle.join("etc").display().to_string())
        .link("app/lib.so", "lib.so.1")
        .add("app/lib.so.1")
        .link("app/dangling", "nowhere")
        .link("app/bin/up", "..");
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![]))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            mkdir(f.d("srv")),
            mkdir(f.d("srv/bin")),
            copy(f.b("app/bin/run"), f.d("srv/bin/run")),
            link_copy(f.b("app/bin/up"), f.d("srv/bin/up")),
            link_copy(f.b("app/dangling"), f.d("srv/dangling")),
            link_copy(f.b("app/etc"), f.d("srv/etc")),
            link_copy(f.b("app/lib.so"), f.d("srv/lib.so")),
            copy(f.b("app/lib.so.1"), f.d("srv/lib.so.1")),
        ]
    );
}

#[test]
fn a_named_symlink_to_a_file_is_installed_as_a_symlink() {
    let f = fixture();
    f.link("passwd", "/etc/passwd").link("dangling", "x/y");
    let plan = f
        .build(&spec(
            vec![map("passwd", &f.ds(""), 1), map("dangling", &f.ds(""), 2)],
            vec![],
        ))
        .expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            link_copy(f.b("passwd"), f.d("passwd")),
            link_copy(f.b("dangling"), f.d("dangling")),
        ]
    );
}

#[test]
fn special_files_in_the_bundle_are_rejected() {
    let f = fixture();
    f.add("app/ok");
    nix::unistd::mkfifo(&f.b("app/pipe"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let err = f
        .build(&spec(vec![map("app", &f.ds(""), 1)], vec![]))
        .expect_err("fifo");
    assert_eq!(
        kinds(&err),
        vec![ProblemKind::UnsupportedEntry {
            path: f.b("app/pipe"),
            what: "named pipe"
        }]
    );
    let err = f
        .build(&spec(vec![map("app/pipe", &f.ds(""), 1)], vec![]))
        .expect_err("fifo");
    assert!(matches!(
        err.first().kind,
        ProblemKind::UnsupportedEntry { .. }
    ));
}

// ---------------------------------------------------------------- symlink traversal

#[test]
fn installing_inside_a_symlink_the_plan_installs_is_rejected() {
    let f = fixture();
    f.add("app/index.html")
        .link("app/link", "/etc")
        .add("extra/evil.conf");
    // Without the link on disk, the AWS agent's own collision fires first (mkdir over copy);
    // ours is reported as well.
    let err = f
        .build(&spec(
            vec![
                map("app", &f.ds("srv"), 1),
                map("extra/evil.conf", &f.ds("srv/link"), 2),
            ],
            vec![],
        ))
        .expect_err("through link");
    let all = kinds(&err);
    assert!(matches!(all[0], ProblemKind::DirectoryOntoCopy { .. }));
    assert!(all.contains(&ProblemKind::InstallsThroughSymlink {
        path: f.d("srv/link/evil.conf"),
        link: f.d("srv/link"),
        link_target: PathBuf::from("/etc"),
    }));

    // With a directory already on disk there, only our check catches it.
    fs::create_dir_all(f.d("srv/link")).expect("mkdir");
    let err = f
        .build(&spec(
            vec![
                map("app", &f.ds("srv"), 1),
                map("extra/evil.conf", &f.ds("srv/link"), 2),
            ],
            vec![],
        ))
        .expect_err("through link");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the AppSpec file installs {} inside {}, which this deployment installs as a symbolic link (to /etc). Installing through a link could write outside the destination. Update the files section of the AppSpec file, and then try again.",
            f.d("srv/link/evil.conf").display(),
            f.d("srv/link").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(2)));
    assert_eq!(err.problems().count(), 1);
}

#[test]
fn permissions_never_act_through_or_on_a_symlink_the_plan_installs() {
    let f = fixture();
    f.add("app/index.html").link("app/link", "/etc");
    let files = vec![map("app", &f.ds("srv"), 1)];

    // Through it.
    let err = f
        .build(&spec(files.clone(), vec![perm(&f.ds("srv/link/sub"), 5)]))
        .expect_err("through link");
    assert_eq!(
        kinds(&err),
        vec![ProblemKind::PermissionThroughSymlink {
            object: f.d("srv/link/sub"),
            link: f.d("srv/link"),
            link_target: PathBuf::from("/etc"),
        }]
    );
    assert_eq!(err.first().position, Some(pos(5)));

    // On it, as a file object.
    let err = f
        .build(&spec(files.clone(), vec![perm(&f.ds("srv/link"), 5)]))
        .expect_err("on link");
    assert!(matches!(
        err.first().kind,
        ProblemKind::PermissionOnSymlink { .. }
    ));

    // Under a directory object: the link is simply not selected.
    let plan = f
        .build(&spec(files, vec![perm(&f.ds("srv"), 5)]))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/index.html")]);
}

// ---------------------------------------------------------------- permissions

/// Bundle `app/` installed at `<dest>/srv`:
/// a.sh, b.txt, bin/ (c.sh, deep/ (d.sh)), logs/ (x.log)
fn permission_fixture() -> (Fixture, Vec<FileMapping>) {
    let f = fixture();
    f.add("app/a.sh")
        .add("app/b.txt")
        .add("app/bin/c.sh")
        .add("app/bin/deep/d.sh")
        .add("app/logs/x.log");
    let files = vec![map("app", &f.ds("srv"), 1)];
    (f, files)
}

#[test]
fn double_star_matches_every_depth_copies_first_and_never_the_object() {
    let (f, files) = permission_fixture();
    let plan = f
        .build(&spec(files, vec![perm(&f.ds("srv"), 2)]))
        .expect("plan");
    assert_eq!(
        chowned(&plan),
        vec![
            f.d("srv/a.sh"),
            f.d("srv/b.txt"),
            f.d("srv/bin/c.sh"),
            f.d("srv/bin/deep/d.sh"),
            f.d("srv/logs/x.log"),
            f.d("srv/bin"),
            f.d("srv/bin/deep"),
            f.d("srv/logs"),
        ]
    );
}

#[test]
fn other_patterns_match_immediate_children_only() {
    let (f, files) = permission_fixture();
    let mut p = perm(&f.ds("srv"), 2);
    p.pattern = "*.sh".to_owned();
    let plan = f.build(&spec(files.clone(), vec![p])).expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/a.sh")]);

    let mut p = perm(&f.ds("srv"), 2);
    p.pattern = "*".to_owned();
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(
        chowned(&plan),
        vec![
            f.d("srv/a.sh"),
            f.d("srv/b.txt"),
            f.d("srv/bin"),
            f.d("srv/logs")
        ]
    );
}

#[test]
fn except_applies_to_immediate_children_only() {
    let (f, files) = permission_fixture();
    let mut p = perm(&f.ds("srv"), 2);
    p.except = vec!["*.sh".to_owned(), "logs".to_owned()];
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(
        chowned(&plan),
        vec![
            f.d("srv/b.txt"),
            f.d("srv/bin/c.sh"),
            f.d("srv/bin/deep/d.sh"),
            f.d("srv/logs/x.log"),
            f.d("srv/bin"),
            f.d("srv/bin/deep"),
        ]
    );
}

#[test]
fn type_selects_files_or_directories() {
    let (f, files) = permission_fixture();
    let mut p = perm(&f.ds("srv/bin"), 2);
    p.types = vec![ObjectType::Directory];
    let plan = f.build(&spec(files.clone(), vec![p])).expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/bin/deep")]);

    let mut p = perm(&f.ds("srv/bin"), 2);
    p.types = vec![ObjectType::File];
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(
        chowned(&plan),
        vec![f.d("srv/bin/c.sh"), f.d("srv/bin/deep/d.sh")]
    );
}

#[test]
fn an_existing_directory_on_disk_qualifies_as_object_but_disk_files_are_never_matched() {
    let f = fixture();
    f.add("app/a.sh");
    fs::create_dir_all(f.d("srv/old")).expect("mkdir");
    fs::write(f.d("srv/stray.sh"), "x").expect("write");
    let plan = f
        .build(&spec(
            vec![map("app", &f.ds("srv"), 1)],
            vec![perm(&f.ds("srv"), 2), perm(&f.ds("elsewhere"), 3)],
        ))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/a.sh")]);
    // The object given with a trailing slash or dots is the same object.
    let plan = f
        .build(&spec(
            vec![map("app", &f.ds("srv"), 1)],
            vec![perm(&format!("{}/./", f.ds("srv")), 2)],
        ))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/a.sh")]);
}

#[test]
fn a_copied_file_object_gets_permissions_alone() {
    let (f, files) = permission_fixture();
    let plan = f
        .build(&spec(files.clone(), vec![perm(&f.ds("srv/a.sh"), 2)]))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/a.sh")]);

    // `type: directory` on a file object does nothing at all.
    let mut p = perm(&f.ds("srv/a.sh"), 2);
    p.types = vec![ObjectType::Directory];
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(chowned(&plan), Vec::<PathBuf>::new());
}

#[test]
fn a_copied_file_object_needs_the_double_star_pattern() {
    let (f, files) = permission_fixture();
    let object = format!("{}/", f.ds("srv/a.sh"));
    let mut p = perm(&object, 2);
    p.pattern = "*.sh".to_owned();
    let err = f.build(&spec(files, vec![p])).expect_err("pattern");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the application specification file includes an object ({object}) with an invalid pattern (*.sh), such as a pattern for a file applied to a directory. Correct the permissions section of the AppSpec file, and then try again."
        )
    );
    assert_eq!(err.first().position, Some(pos(2)));
}

#[test]
fn a_copied_file_object_takes_no_except() {
    let (f, files) = permission_fixture();
    let object = f.ds("srv/a.sh");
    let mut p = perm(&object, 2);
    p.except = vec!["glob".to_owned()];
    let err = f.build(&spec(files, vec![p])).expect_err("except");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the except parameter for a pattern in the permissions section ([\"glob\"]) for the object named {object} contains an invalid format. Update the AppSpec file, and then try again."
        )
    );
}

#[test]
fn a_path_selected_twice_fails_with_the_aws_message() {
    let (f, files) = permission_fixture();
    let mut second = perm(&f.ds("srv/bin"), 3);
    second.pattern = "c.sh".to_owned();
    let err = f
        .build(&spec(files, vec![perm(&f.ds("srv"), 2), second]))
        .expect_err("twice");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because the permissions setting for ({}) is specified more than once in the application specification file. Update the files section of the AppSpec file, and then try again.",
            f.d("srv/bin/c.sh").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(3)));
}

#[test]
fn a_default_acl_on_a_file_fails_with_the_aws_message() {
    let (f, files) = permission_fixture();
    let default_acl = AclEntry {
        default: true,
        kind: AclKind::User,
        name: "bob".to_owned(),
        perm: 7,
    };
    let message = "The deployment failed because the -d parameter has been specified to apply an acl setting to a file. This parameter is supported for directories only. Update the AppSpec file, and then try again.";

    let mut p = perm(&f.ds("srv"), 2);
    p.acls = vec![default_acl.clone()];
    let err = f.build(&spec(files.clone(), vec![p])).expect_err("-d");
    assert_eq!(err.to_string(), message);

    let mut p = perm(&f.ds("srv/a.sh"), 2);
    p.acls = vec![default_acl.clone()];
    let err = f.build(&spec(files.clone(), vec![p])).expect_err("-d");
    assert_eq!(err.to_string(), message);

    // Directories only: fine.
    let mut p = perm(&f.ds("srv"), 2);
    p.acls = vec![default_acl];
    p.types = vec![ObjectType::Directory];
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(chowned(&plan).len(), 3);
}

#[test]
fn instructions_run_files_first_then_chmod_setfacl_semanage_chown_per_object() {
    let f = fixture();
    f.add("app/x").add("app/y");
    let mut p = perm(&f.ds("srv"), 2);
    p.mode = Some(Mode {
        text: "644".to_owned(),
        bits: 0o644,
    });
    p.group = Some("web".to_owned());
    p.acls = vec![AclEntry {
        default: false,
        kind: AclKind::User,
        name: "bob".to_owned(),
        perm: 6,
    }];
    p.context = Some(SeContext {
        user: None,
        type_: "httpd_sys_content_t".to_owned(),
        range: None,
    });
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![p.clone()]))
        .expect("plan");
    let mut want = vec![
        mkdir(f.d("srv")),
        copy(f.b("app/x"), f.d("srv/x")),
        copy(f.b("app/y"), f.d("srv/y")),
    ];
    for file in [f.d("srv/x"), f.d("srv/y")] {
        want.extend([
            Instruction::Chmod {
                mode: p.mode.clone().expect("mode").into(),
                file: file.clone().into(),
            },
            Instruction::Setfacl {
                acl: p.acls.clone().into(),
                file: file.clone().into(),
            },
            Instruction::Semanage {
                context: p.context.clone().expect("context").into(),
                file: file.clone().into(),
            },
            Instruction::Chown {
                owner: Some("app".into()),
                group: Some("web".into()),
                file: file.into(),
            },
        ]);
    }
    assert_eq!(plan.instructions, want);

    // Nothing to set: no instructions.
    let mut bare = perm(&f.ds("srv"), 2);
    bare.owner = None;
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![bare]))
        .expect("plan");
    assert_eq!(plan.instructions.len(), 3);
}

// ---------------------------------------------------------------- install.json

#[test]
fn install_json_has_the_aws_record_shapes_and_key_order() {
    let f = fixture();
    f.add("app/x");
    let mut p = perm(&f.ds("srv/x"), 2);
    p.mode = Some(Mode {
        text: "0755".to_owned(),
        bits: 0o755,
    });
    p.acls = vec![
        AclEntry {
            default: false,
            kind: AclKind::User,
            name: "bob".to_owned(),
            perm: 6,
        },
        AclEntry {
            default: false,
            kind: AclKind::Mask,
            name: String::new(),
            perm: 0,
        },
    ];
    p.context = Some(SeContext {
        user: Some("u".to_owned()),
        type_: "t".to_owned(),
        range: Some(SeRange {
            low: 0,
            high: Some(1),
            categories: vec![0, 1, 2, 3, 5],
        }),
    });
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![p]))
        .expect("plan");
    let json = plan.to_install_json();
    let x = f.d("srv/x").display().to_string();
    let want = format!(
        concat!(
            r#"{{"instructions":["#,
            r#"{{"type":"mkdir","directory":"{srv}"}},"#,
            r#"{{"type":"copy","source":"{src}","destination":"{x}"}},"#,
            r#"{{"type":"chmod","mode":"0755","file":"{x}"}},"#,
            r#"{{"type":"setfacl","acl":["user:bob:rw-","mask::---"],"file":"{x}"}},"#,
            r#"{{"type":"semanage","context":{{"user":"u","role":null,"type":"t","range":"s0-s1:c0.c3,c5"}},"file":"{x}"}},"#,
            r#"{{"type":"chown","owner":"app","group":null,"file":"{x}"}}"#,
            "]}}"
        ),
        srv = f.ds("srv"),
        src = f.b("app/x").display(),
        x = x,
    );
    assert_eq!(json, want);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(parsed["instructions"][5]["group"], serde_json::Value::Null);
    assert_eq!(
        parsed["instructions"][4]["context"]["role"],
        serde_json::Value::Null
    );
}

#[test]
fn install_json_semanage_without_range_writes_null() {
    let plan = plan::InstallPlan {
        instructions: vec![Instruction::Semanage {
            context: SeContext {
                user: None,
                type_: "t".to_owned(),
                range: None,
            }
            .into(),
            file: PathBuf::from("/srv/a \"b\"").into(),
        }],
    };
    assert_eq!(
        plan.to_install_json(),
        r#"{"instructions":[{"type":"semanage","context":{"user":null,"role":null,"type":"t","range":null},"file":"/srv/a \"b\""}]}"#
    );
    assert_eq!(
        plan::InstallPlan::default().to_install_json(),
        r#"{"instructions":[]}"#
    );
}

// ---------------------------------------------------------------- scale

#[test]
fn a_twenty_thousand_file_bundle_plans_without_quadratic_work() {
    let f = fixture();
    for d in 0..200 {
        let dir = f.b(&format!("app/d{d:03}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..100 {
            fs::write(dir.join(format!("f{i:03}.txt")), "").expect("write");
        }
    }
    // Files at every depth, except an immediate child named d007 (which is a directory, so
    // the except changes nothing), then the directories d000..d009.
    let mut wide = perm(&f.ds("srv"), 2);
    wide.except = vec!["d007".to_owned()];
    wide.types = vec![ObjectType::File];
    let mut narrow = perm(&f.ds("srv"), 3);
    narrow.pattern = "d00*".to_owned();
    narrow.types = vec![ObjectType::Directory];
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![wide, narrow]))
        .expect("plan");
    let copies = plan
        .instructions
        .iter()
        .filter(|i| matches!(i, Instruction::Copy { .. }))
        .count();
    assert_eq!(copies, 20_000);
    assert_eq!(chowned(&plan).len(), 20_000 + 10);
    assert_eq!(chown(f.d("srv/d000/f000.txt")), plan.instructions[20_201]);
    assert_eq!(chown(f.d("srv/d009")), plan.instructions[20_201 + 20_009]);

    // Every file selected twice: every one is reported, the first one first.
    let err = f
        .build(&spec(
            vec![map("app", &f.ds("srv"), 1)],
            vec![perm(&f.ds("srv"), 2), perm(&f.ds("srv"), 3)],
        ))
        .expect_err("twice");
    assert_eq!(
        err.first().kind,
        ProblemKind::PermissionSetTwice {
            path: f.d("srv/d000/f000.txt")
        }
    );
    assert_eq!(err.problems().count(), 20_200);
}

#[test]
fn under_an_object_means_under_its_path_components_not_its_text() {
    let f = fixture();
    f.add("app/bin/a")
        .add("app/bin2/b")
        .add("app/bin-x/c")
        .add("app/bin.d");
    let files = vec![map("app", &f.ds("srv"), 1)];
    let plan = f
        .build(&spec(files.clone(), vec![perm(&f.ds("srv/bin"), 2)]))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/bin/a")]);

    // The root as object: every file the plan copies, wherever it is, in copy order.
    let mut p = perm("/", 2);
    p.types = vec![ObjectType::File];
    let plan = f.build(&spec(files, vec![p])).expect("plan");
    assert_eq!(
        chowned(&plan),
        vec![
            f.d("srv/bin/a"),
            f.d("srv/bin-x/c"),
            f.d("srv/bin.d"),
            f.d("srv/bin2/b"),
        ]
    );
}

// ---------------------------------------------------------------- file_exists_behavior

#[test]
fn build_for_install_disallow_fails_on_an_existing_file_with_the_aws_message() {
    let f = fixture();
    f.add("a.txt").add("b.txt");
    fs::create_dir_all(f.d("srv")).expect("mkdir");
    fs::write(f.d("srv/a.txt"), "foreign").expect("write");
    let files = vec![map("a.txt", &f.ds("srv"), 1), map("b.txt", &f.ds("srv"), 2)];
    let err = plan::build_for_install(
        &spec(files.clone(), vec![]),
        &f.bundle,
        FileExistsBehavior::Disallow,
    )
    .expect_err("exists");
    assert_eq!(
        err.to_string(),
        format!(
            "The deployment failed because a specified file already exists at this location: {}",
            f.d("srv/a.txt").display()
        )
    );
    assert_eq!(err.first().position, Some(pos(1)));
    // `build` leaves the decision to the installer.
    assert_eq!(
        f.build(&spec(files, vec![]))
            .expect("plan")
            .instructions
            .len(),
        2
    );
}

#[test]
fn build_for_install_overwrite_copies_and_retain_leaves_the_file_out_of_the_plan() {
    let f = fixture();
    f.add("app/a.txt").add("app/b.txt");
    fs::create_dir_all(f.d("srv")).expect("mkdir");
    fs::write(f.d("srv/a.txt"), "foreign").expect("write");
    let mut s = spec(
        vec![map("app", &f.ds("srv"), 1)],
        vec![perm(&f.ds("srv"), 2)],
    );

    let plan = plan::build_for_install(&s, &f.bundle, FileExistsBehavior::Overwrite).expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/a.txt"), f.d("srv/b.txt")]);

    let plan = plan::build_for_install(&s, &f.bundle, FileExistsBehavior::Retain).expect("plan");
    assert_eq!(
        plan.instructions,
        vec![
            copy(f.b("app/b.txt"), f.d("srv/b.txt")),
            chown(f.d("srv/b.txt"))
        ]
    );

    // The appspec's value wins over the deployment's.
    s.file_exists_behavior = Some(FileExistsBehavior::Retain);
    let plan = plan::build_for_install(&s, &f.bundle, FileExistsBehavior::Overwrite).expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv/b.txt")]);
}

#[test]
fn build_for_install_reports_disallow_before_a_later_collision() {
    let f = fixture();
    f.add("a/x").add("b/x").add("c.txt");
    fs::write(f.d("c.txt"), "foreign").expect("write");
    let err = plan::build_for_install(
        &spec(
            vec![
                map("c.txt", &f.ds(""), 1),
                map("a/x", &f.ds(""), 2),
                map("b/x", &f.ds(""), 3),
            ],
            vec![],
        ),
        &f.bundle,
        FileExistsBehavior::Disallow,
    )
    .expect_err("problems");
    let all = kinds(&err);
    assert!(matches!(all[0], ProblemKind::FileExists { .. }));
    assert!(matches!(all[1], ProblemKind::DuplicateDestination { .. }));
}

#[test]
fn names_that_are_not_utf8_are_planned_matched_and_written_lossily_to_json() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let f = fixture();
    f.add("app/");
    let name = OsStr::from_bytes(b"caf\xe9");
    fs::write(f.b("app").join(name), "").expect("write");
    let mut p = perm(&f.ds("srv"), 2);
    p.pattern = "caf*".to_owned();
    let plan = f
        .build(&spec(vec![map("app", &f.ds("srv"), 1)], vec![p]))
        .expect("plan");
    assert_eq!(chowned(&plan), vec![f.d("srv").join(name)]);
    assert!(plan.to_install_json().contains("srv/caf\u{fffd}\""));
}
