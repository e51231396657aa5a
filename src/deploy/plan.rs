//! Appspec + unpacked bundle -> install plan.
