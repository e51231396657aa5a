//! The diagnostic tail of a failing event: AWS `ScriptLog#append_to_log` (agent-behaviour.md
//! §5.8), quirk included, so failure payloads carry the same lines AWS would send.

use std::collections::VecDeque;

/// The budget, in characters, that AWS trims against.
const BUDGET: usize = 2048;

/// How many of the newest entries AWS keeps after an append, given the entries' lengths in
/// characters, oldest first.
///
/// A transcription of the Ruby loop, off-by-one included:
///
/// ```text
/// index = size; remaining = 2048
/// while index > 0 && remaining - log[index-1].length > 0
///   index -= 1
///   remaining -= log[index-1].length   # the next older entry (log[-1], the newest, at 0)
/// end
/// log = log.drop(index) if index > 0
/// ```
///
/// So the newest entry survives only if shorter than 2048 characters, and each older one only
/// while `2048 - (kept entries other than the newest) - 2 × its length > 0`.
pub(crate) fn kept_count(lengths: &[usize]) -> usize {
    let n = lengths.len();
    let mut index = n;
    let mut remaining = BUDGET;
    // `remaining - len > 0` with signed Ruby integers; once `remaining` would go negative the
    // condition can never hold again, so saturating at 0 keeps the same result.
    while index > 0 && remaining > lengths[index - 1] {
        index -= 1;
        let next_older = if index == 0 {
            lengths[n - 1]
        } else {
            lengths[index - 1]
        };
        remaining = remaining.saturating_sub(next_older);
    }
    n - index
}

/// The in-memory tail: entries without timestamps, trimmed after every append. Its size is
/// bounded (every kept entry is shorter than 2048 characters and they share the budget).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// Each entry with its length in characters (Ruby's `String#length`).
    entries: VecDeque<(String, usize)>,
}

impl Tail {
    pub(crate) fn push(&mut self, entry: String) {
        let len = entry.chars().count();
        self.entries.push_back((entry, len));
        let lengths: Vec<usize> = self.entries.iter().map(|(_, len)| *len).collect();
        let drop = lengths.len() - kept_count(&lengths);
        self.entries.drain(..drop);
    }

    /// The kept entries joined, as AWS puts them in the payload's `log`.
    pub(crate) fn joined(&self) -> String {
        self.entries.iter().map(|(e, _)| e.as_str()).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(entries: impl IntoIterator<Item = String>) -> Tail {
        let mut tail = Tail::default();
        for e in entries {
            tail.push(e);
        }
        tail
    }

    #[test]
    fn fifty_lines_of_100_chars_keep_20() {
        let tail = tail_of((0..50).map(|i| format!("{i:0>99}\n")));
        assert_eq!(tail.len(), 20);
        assert!(tail.joined().starts_with(&format!("{:0>99}\n", 30)));
    }

    #[test]
    fn one_entry_of_2048_chars_or_more_keeps_nothing() {
        assert_eq!(tail_of(["x".repeat(2048)]).len(), 0);
        assert_eq!(tail_of(["x".repeat(5000)]).len(), 0);
        assert_eq!(tail_of(["x".repeat(2047)]).len(), 1);
    }

    #[test]
    fn entries_100_1900_100_keep_only_the_last() {
        let tail = tail_of(["a".repeat(100), "b".repeat(1900), "c".repeat(100)]);
        assert_eq!(tail.joined(), "c".repeat(100));
    }

    #[test]
    fn kept_count_is_the_pure_ruby_loop() {
        assert_eq!(kept_count(&[]), 0);
        assert_eq!(kept_count(&[100, 1900]), 2);
        assert_eq!(kept_count(&[100, 1900, 100]), 1);
        assert_eq!(kept_count(&[100; 50]), 20);
        assert_eq!(kept_count(&[usize::MAX, 1]), 1);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        // 1000 two-byte characters: 2000 bytes but 1000 chars. Counted in bytes it would be
        // dropped next to a newer 10-char entry (2048 - 2 × 2000 < 0); in chars it stays.
        let tail = tail_of(["é".repeat(1000), "0123456789".to_owned()]);
        assert_eq!(tail.len(), 2);
    }
}
