//! `<dg>-install.json`: `{"instructions":[...]}` with the record shapes and key order of
//! agent-behaviour.md §6.2. The file is informational; nothing reads it back.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use super::{InstallPlan, Instruction};

#[derive(Serialize)]
struct InstallJson<'a> {
    instructions: Records<'a>,
}

/// The instructions as records, serialized one at a time (a plan of 100,000 files makes a
/// document of tens of MiB; it is streamed to the file, never held whole).
struct Records<'a>(&'a [Instruction]);

impl Serialize for Records<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(record))
    }
}

/// Serde writes the tag first, then the fields in declaration order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Record<'a> {
    Copy {
        source: Cow<'a, str>,
        destination: Cow<'a, str>,
    },
    Mkdir {
        directory: Cow<'a, str>,
    },
    Chmod {
        mode: &'a str,
        file: Cow<'a, str>,
    },
    Setfacl {
        acl: Vec<String>,
        file: Cow<'a, str>,
    },
    Semanage {
        context: Context<'a>,
        file: Cow<'a, str>,
    },
    Chown {
        owner: Option<&'a str>,
        group: Option<&'a str>,
        file: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct Context<'a> {
    user: Option<&'a str>,
    /// Roles are not supported; always null.
    role: Option<&'a str>,
    #[serde(rename = "type")]
    type_: &'a str,
    /// Null when the appspec gives no range (the AWS agent crashes there instead).
    range: Option<String>,
}

/// Paths are written as UTF-8; bytes that are not valid UTF-8 become U+FFFD.
fn text(path: &Path) -> Cow<'_, str> {
    path.to_string_lossy()
}

impl InstallPlan {
    /// The `-install.json` text: `{"instructions":[...]}`, compact, keys in the AWS order.
    pub fn to_install_json(&self) -> String {
        let mut out = Vec::new();
        self.write_install_json(&mut out)
            .expect("serializing strings, options and vectors of strings into memory cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// [`Self::to_install_json`], streamed to `w`.
    pub fn write_install_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(
            w,
            &InstallJson {
                instructions: Records(&self.instructions),
            },
        )
        .map_err(std::io::Error::other)
    }
}

fn record(instruction: &Instruction) -> Record<'_> {
    match instruction {
        Instruction::Copy {
            source,
            destination,
            ..
        } => Record::Copy {
            source: text(source),
            destination: text(destination),
        },
        Instruction::Mkdir { directory } => Record::Mkdir {
            directory: text(directory),
        },
        Instruction::Chmod { mode, file } => Record::Chmod {
            mode: &mode.text,
            file: text(file),
        },
        Instruction::Setfacl { acl, file } => Record::Setfacl {
            acl: acl.iter().map(ToString::to_string).collect(),
            file: text(file),
        },
        Instruction::Semanage { context, file } => Record::Semanage {
            context: Context {
                user: context.user.as_deref(),
                role: None,
                type_: &context.type_,
                range: context.range.as_ref().map(ToString::to_string),
            },
            file: text(file),
        },
        Instruction::Chown { owner, group, file } => Record::Chown {
            owner: owner.as_deref(),
            group: group.as_deref(),
            file: text(file),
        },
    }
}
