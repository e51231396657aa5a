//! Running one lifecycle event's scripts.
