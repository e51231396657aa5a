//! Getting a revision's bundle onto disk: fetching (S3, GitHub, local) and safe unpacking.

pub mod archive;
