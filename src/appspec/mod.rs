//! The EC2/on-premises appspec: parse `appspec.yml` exactly as the AWS agent reads it
//! (agent-behaviour.md §5.2–§5.6), but report every problem at once with `line:column`.
//! `platform` checks ECS and Lambda appspecs (recognised by their `Resources` list) for `validate`.

mod acl;
pub mod events;
pub mod model;
pub mod open;
mod parse;
pub mod pattern;
pub mod platform;
pub(crate) mod ruby;
mod selinux;
mod yaml;

pub use model::*;
pub use open::{MAX_APPSPEC_BYTES, OpenAppSpecError, OpenedAppSpec, open_appspec};
pub use parse::*;

/// The `acls` and `context.range` grammars on their own, for the fuzz targets in `fuzz/`.
/// Not part of the API: the appspec parser is the only real caller.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses one `acls` entry (see `acl::parse_ace`); `Err` is the AWS message.
    pub fn parse_ace(ace: &str) -> Result<super::AclEntry, String> {
        super::acl::parse_ace(ace)
    }

    /// Parses one SELinux `range` (see `selinux::parse_range`); `Err` is the AWS message.
    pub fn parse_range(range: &str) -> Result<super::SeRange, String> {
        super::selinux::parse_range(range)
    }
}
