//! Entry names: raw bytes in, a validated relative path out.
//!
//! Names are never decoded: a component is whatever bytes sit between separators, so non-UTF-8
//! names round-trip exactly. Anything that could point outside the bundle root is refused here,
//! before the file system is touched.

use super::Rejection;

/// Longest entry path we accept, in bytes (Linux `PATH_MAX`).
pub(super) const PATH_MAX: usize = 4096;
/// Deepest entry path we accept, in components.
pub(super) const MAX_DEPTH: usize = 256;
/// Longest single component (Linux `NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;

/// A validated path relative to the bundle root: every component is non-empty, is neither `.`
/// nor `..`, and holds no `/` and no NUL. An empty list is the root itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct RelPath {
    comps: Vec<Vec<u8>>,
}

impl RelPath {
    pub(super) fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    pub(super) fn components(&self) -> &[Vec<u8>] {
        &self.comps
    }

    /// The parent's components and the last component; `None` for the root.
    pub(super) fn split_last(&self) -> Option<(&[u8], &[Vec<u8>])> {
        self.comps
            .split_last()
            .map(|(last, parent)| (last.as_slice(), parent))
    }

    pub(super) fn from_components(comps: Vec<Vec<u8>>) -> Self {
        Self { comps }
    }

    /// The path as `a/b/c` bytes, for messages.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        join(&self.comps)
    }
}

/// Joins components with `/`.
pub(super) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

/// Validates an entry name. `backslash_is_separator` is set for zip entries written on
/// DOS/Windows, whose tools used `\` between components (Info-ZIP `unzip` does the same).
pub(super) fn normalize(raw: &[u8], backslash_is_separator: bool) -> Result<RelPath, Rejection> {
    if raw.is_empty() {
        return Err(Rejection::EmptyName);
    }
    if raw.contains(&0) {
        return Err(Rejection::NulInName);
    }
    if raw.len() > PATH_MAX {
        return Err(Rejection::TooLong);
    }
    let is_sep = |b: &u8| *b == b'/' || (backslash_is_separator && *b == b'\\');
    if is_sep(&raw[0]) {
        return Err(Rejection::AbsolutePath);
    }
    let mut comps = Vec::new();
    for comp in raw.split(is_sep) {
        match comp {
            b"" | b"." => {}
            b".." => return Err(Rejection::ParentComponent),
            c if c.len() > NAME_MAX => return Err(Rejection::TooLong),
            c => comps.push(c.to_vec()),
        }
    }
    if comps.len() > MAX_DEPTH {
        return Err(Rejection::TooDeep);
    }
    Ok(RelPath { comps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &[u8]) -> Vec<Vec<u8>> {
        normalize(raw, false).unwrap().comps
    }

    #[test]
    fn plain_and_dotted_names() {
        assert_eq!(
            ok(b"a/b/c"),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(ok(b"./a//b/"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(ok(b"./").is_empty());
        assert_eq!(ok(b"a\\b"), vec![b"a\\b".to_vec()]);
        assert_eq!(ok(b"\xff\xfe/x"), vec![b"\xff\xfe".to_vec(), b"x".to_vec()]);
    }

    #[test]
    fn hostile_names() {
        assert!(matches!(normalize(b"", false), Err(Rejection::EmptyName)));
        assert!(matches!(
            normalize(b"a\0b", false),
            Err(Rejection::NulInName)
        ));
        assert!(matches!(
            normalize(b"/etc/passwd", false),
            Err(Rejection::AbsolutePath)
        ));
        assert!(matches!(
            normalize(b"a/../b", false),
            Err(Rejection::ParentComponent)
        ));
        assert!(matches!(
            normalize(b"..", false),
            Err(Rejection::ParentComponent)
        ));
        assert!(matches!(
            normalize(b"a\\..\\b", true),
            Err(Rejection::ParentComponent)
        ));
        assert!(matches!(
            normalize(b"\\x", true),
            Err(Rejection::AbsolutePath)
        ));
        let deep = b"a/".repeat(MAX_DEPTH + 1);
        assert!(matches!(normalize(&deep, false), Err(Rejection::TooDeep)));
        let long = vec![b'x'; NAME_MAX + 1];
        assert!(matches!(normalize(&long, false), Err(Rejection::TooLong)));
        let longer = vec![b'x'; PATH_MAX + 1];
        assert!(matches!(normalize(&longer, false), Err(Rejection::TooLong)));
    }
}
