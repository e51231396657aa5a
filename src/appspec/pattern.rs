//! Permission `pattern`/`except` globs: only `*` is special; matched in linear time.
//!
//! The AWS agent (`linux_permission_info.rb#matches_simple_glob`) runs a small NFA over the
//! pattern's characters. Its language is the ordinary one: `*` matches any run of characters,
//! including none; every other character, `?`, `[` and `\` included, matches itself. It is
//! case-sensitive. This module matches the same language without backtracking.
//!
//! `**` as "any depth" is *not* handled here: the caller (the install plan) decides whether a
//! pattern is exactly `**` and, if not, only offers names without `/`. As a glob, `**` is the
//! same as `*`.

/// A compiled permission glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal pieces between the stars, in order: with `n` stars there are `n + 1` pieces,
    /// some possibly empty.
    pieces: Vec<String>,
}

impl Pattern {
    /// Compiles `text`. Never fails: every string is a valid glob.
    pub fn new(text: &str) -> Self {
        // `n` stars give `n + 1` pieces. Consecutive stars leave empty middle pieces, which
        // match anywhere and cost nothing.
        let pieces = text.split('*').map(str::to_owned).collect();
        Pattern {
            text: text.to_owned(),
            pieces,
        }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches the whole glob.
    ///
    /// Cost: O(len(name) + len(pattern)). The first piece must be a prefix and the last a
    /// suffix; each middle piece is then found left-to-right with `str::find` (the Two-Way
    /// algorithm, linear in the text it scans plus the piece) in what is left between them,
    /// and each search starts where the previous match ended, so no byte of `name` is scanned
    /// twice. Taking the leftmost match of each piece is always safe: a later piece can only
    /// gain room by an earlier piece matching further left.
    pub fn matches(&self, name: &str) -> bool {
        let Some((first, rest)) = self.pieces.split_first() else {
            return name.is_empty();
        };
        let Some((last, middle)) = rest.split_last() else {
            // No star: a plain comparison.
            return name == first;
        };
        if name.len() < first.len() + last.len()
            || !name.starts_with(first.as_str())
            || !name.ends_with(last.as_str())
        {
            return false;
        }
        let mut window = &name[first.len()..name.len() - last.len()];
        for piece in middle {
            match window.find(piece.as_str()) {
                Some(at) => window = &window[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The AWS agent's NFA, transcribed, as an oracle for small inputs.
    fn ruby_simple_glob(name: &str, pattern: &str) -> bool {
        fn expand(mut option: Vec<char>) -> Vec<Vec<char>> {
            let mut previous = None;
            while option.first() == Some(&'*') {
                previous = Some(option.clone());
                option.remove(0);
            }
            match previous {
                Some(p) => vec![p, option],
                None => vec![option],
            }
        }
        let mut options = expand(pattern.chars().collect());
        for c in name.chars() {
            let mut next = Vec::new();
            for mut option in options {
                if option.first() == Some(&'*') {
                    next.extend(expand(option));
                } else if option.first() == Some(&c) {
                    option.remove(0);
                    next.extend(expand(option));
                }
            }
            options = next;
            if options.iter().any(|o| o == &['*']) {
                return true;
            }
        }
        options.iter().any(|o| o.is_empty())
    }

    #[test]
    fn literal_patterns_match_exactly() {
        let p = Pattern::new("app.conf");
        assert!(p.matches("app.conf"));
        assert!(!p.matches("app.conf2"));
        assert!(!p.matches("xapp.conf"));
        assert!(!p.matches("App.conf"));
        assert!(!p.matches(""));
        assert!(Pattern::new("").matches(""));
        assert!(!Pattern::new("").matches("a"));
    }

    #[test]
    fn only_star_is_special() {
        assert!(Pattern::new("a?c").matches("a?c"));
        assert!(!Pattern::new("a?c").matches("abc"));
        assert!(Pattern::new("[ab]").matches("[ab]"));
        assert!(!Pattern::new("[ab]").matches("a"));
        assert!(Pattern::new("a\\*").matches("a\\xyz"));
        assert!(!Pattern::new("a\\*").matches("a*"));
    }

    #[test]
    fn stars_match_any_run_including_none() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("**", "x", true),
            ("***", "", true),
            ("*.sh", "start.sh", true),
            ("*.sh", ".sh", true),
            ("*.sh", "start.sh.bak", false),
            ("file*", "file_target", true),
            ("filefile*", "file_target", false),
            ("*target", "file_target", true),
            ("*et", "target", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("*a*", "bab", true),
            ("*a*", "bbb", false),
            ("a**b", "ab", true),
            ("a**b", "a/b", true),
            ("é*ü", "éaü", true),
            ("*ü", "ü", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                want,
                "{pattern:?} vs {name:?}"
            );
            assert_eq!(
                ruby_simple_glob(name, pattern),
                want,
                "oracle {pattern:?} vs {name:?}"
            );
        }
    }

    #[test]
    fn agrees_with_the_ruby_nfa_on_every_small_input() {
        // All patterns and names over {a, b, *} up to length 5 / 6.
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut frontier = vec![String::new()];
            for _ in 0..max {
                let mut next = Vec::new();
                for s in &frontier {
                    for c in alphabet {
                        let mut t = s.clone();
                        t.push(*c);
                        next.push(t);
                    }
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            out
        }
        let patterns = all(&['a', 'b', '*'], 5);
        let names = all(&['a', 'b'], 6);
        for p in &patterns {
            let compiled = Pattern::new(p);
            for n in &names {
                assert_eq!(
                    compiled.matches(n),
                    ruby_simple_glob(n, p),
                    "{p:?} vs {n:?}"
                );
            }
        }
    }

    #[test]
    fn adversarial_inputs_finish_fast() {
        let name = "a".repeat(200_000);
        let started = Instant::now();
        assert!(!Pattern::new("*a*a*a*a*b").matches(&name));
        assert!(Pattern::new("*a*a*a*a*").matches(&name));
        let many = "*a".repeat(5_000) + "*b";
        assert!(!Pattern::new(&many).matches(&name));
        let long_piece = format!("*{}b*", "a".repeat(5_000));
        assert!(!Pattern::new(&long_piece).matches(&name));
        // Generous bound: a backtracking matcher takes minutes here, a linear one milliseconds.
        assert!(started.elapsed().as_secs() < 20);
    }

    #[test]
    fn as_str_returns_the_text() {
        assert_eq!(Pattern::new("*.sh").as_str(), "*.sh");
    }
}
