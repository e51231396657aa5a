//! The EC2/on-premises appspec: parse `appspec.yml` exactly as the AWS agent reads it
//! (agent-behaviour.md §5.2–§5.6), but report every problem at once with `line:column`.

mod acl;
pub mod model;
mod parse;
pub mod pattern;
mod ruby;
mod selinux;
mod yaml;

pub use model::*;
pub use parse::*;
