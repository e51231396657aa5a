//! Parsing and validation of appspec text (filled in by the appspec work).
