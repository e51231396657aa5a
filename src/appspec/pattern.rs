//! Permission `pattern`/`except` globs: only `*` is special; matched in linear time.
