//! The deployment engine. It never opens a network connection: it turns a spec, a bundle on
//! disk and an appspec into files, permissions and hook runs under the deployment root.

pub mod cancel;
pub mod dest;
pub mod executor;
pub mod hooks;
pub mod install;
pub mod layout;
pub mod permissions;
pub mod plan;
pub mod reuse;
