//! Safe, streaming unpacking of zip, tar and tgz bundles.
