//! A `context` `range`, parsed exactly as the AWS agent's `RangeInfo` does
//! (`s<n>[-s<m>][:c<a>[.c<b>](,c<a>[.c<b>])*]`), with its short messages word for word.

use super::model::SeRange;

/// Highest category number SELinux allows.
const MAX_CATEGORY: usize = 1023;

/// Ruby `ensure_parts`: split once on `sep`; neither side may be empty.
fn ensure_parts(input: &str, sep: char) -> Result<Vec<&str>, String> {
    let parts: Vec<&str> = if input.is_empty() {
        Vec::new() // "".split(x, 2) == []
    } else {
        input.splitn(2, sep).collect()
    };
    let want = if input.contains(sep) { 2 } else { 1 };
    if parts.len() != want || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("invalid range part {input}"));
    }
    Ok(parts)
}

/// `s<digits>`; the number must fit in a `u32` (Ruby has no limit; no real policy comes close).
fn sensitivity(s: &str) -> Result<u32, String> {
    let err = || format!("invalid sensitivity {s}");
    let digits = s
        .strip_prefix('s')
        .filter(|d| !d.is_empty())
        .ok_or_else(err)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    digits.parse().map_err(|_| err())
}

/// `c<digits>`, at most 1023.
fn category(c: &str) -> Result<usize, String> {
    let err = || format!("invalid category {c}");
    let digits = c
        .strip_prefix('c')
        .filter(|d| !d.is_empty())
        .ok_or_else(err)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    // Leading zeros are fine ("c0007" is 7); anything too long is over 1023 anyway.
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 4 {
        return Err(err());
    }
    let n: usize = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().map_err(|_| err())?
    };
    if n > MAX_CATEGORY {
        return Err(err());
    }
    Ok(n)
}

/// Parses and normalises a range; the error is the AWS message for the first problem.
pub(super) fn parse_range(range: &str) -> Result<SeRange, String> {
    let parts = ensure_parts(range, ':')?;
    let sens = ensure_parts(parts[0], '-')?;
    let low = sensitivity(sens[0])?;
    let mut high = None;
    if sens.len() == 2 {
        let h = sensitivity(sens[1])?;
        if h < low {
            return Err(format!(
                "The deployment failed because of a problem with the SELinux range specified \
                 ({range}) for the context parameter in the permissions section of the \
                 application specification file. Make corrections in the permissions section of \
                 the AppSpec file, and then try again."
            ));
        }
        // Ruby keeps high == low and prints no "-s<high>" then.
        high = (h != low).then_some(h);
    }
    let mut categories = Vec::new();
    if parts.len() == 2 {
        // A bitset instead of Ruby's expanded array: memory stays bounded whatever the input.
        let mut seen = [false; MAX_CATEGORY + 1];
        let mut duplicate = false;
        let mut mark = |n: usize, seen: &mut [bool; MAX_CATEGORY + 1]| {
            duplicate |= seen[n];
            seen[n] = true;
        };
        // Ruby `split(",")` drops trailing empty fields.
        let mut items: Vec<&str> = parts[1].split(',').collect();
        while items.last().is_some_and(|s| s.is_empty()) {
            items.pop();
        }
        for item in items {
            if item.contains('.') {
                let ends = ensure_parts(item, '.')?;
                let a = category(ends[0])?;
                let b = category(ends[1])?;
                if b < a {
                    return Err(format!("invalid category range {}.{}", ends[0], ends[1]));
                }
                for n in a..=b {
                    mark(n, &mut seen);
                }
            } else {
                mark(category(item)?, &mut seen);
            }
        }
        if duplicate {
            return Err("duplicate categories".to_owned());
        }
        categories = (0..=MAX_CATEGORY)
            .filter(|n| seen[*n])
            .map(|n| u16::try_from(n).expect("categories are at most 1023"))
            .collect();
    }
    Ok(SeRange {
        low,
        high,
        categories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_round_trips() {
        let cases = [
            ("s0", "s0"),
            ("s3-s7:c5,c8.c10,c17", "s3-s7:c5,c8.c10,c17"),
            ("s0:c0.c7,c13", "s0:c0.c7,c13"),
            ("s0:c13,c0.c7", "s0:c0.c7,c13"),
            ("s0:c1,c2,c3", "s0:c1.c3"),
            ("s2-s2:c4", "s2:c4"),
            ("s0:c0.c1023", "s0:c0.c1023"),
            ("s0:c1,", "s0:c1"),
            ("s00:c007", "s0:c7"),
        ];
        for (input, want) in cases {
            let r = parse_range(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), want, "{input}");
            assert_eq!(parse_range(want).expect("canonical parses"), r, "{want}");
        }
        let r = parse_range("s0:c0.c7,c13").expect("valid");
        assert_eq!(r.categories, vec![0, 1, 2, 3, 4, 5, 6, 7, 13]);
        assert_eq!((r.low, r.high), (0, None));
        let r = parse_range("s3-s7:c5").expect("valid");
        assert_eq!((r.low, r.high), (3, Some(7)));
    }

    #[test]
    fn aws_messages() {
        let cases = [
            ("", "invalid range part "),
            (":c1", "invalid range part :c1"),
            ("s0:", "invalid range part s0:"),
            ("s0-", "invalid range part s0-"),
            ("x0", "invalid sensitivity x0"),
            ("s", "invalid sensitivity s"),
            ("s1a", "invalid sensitivity s1a"),
            ("s0-s1-s2", "invalid sensitivity s1-s2"),
            ("s0:c1024", "invalid category c1024"),
            ("s0:x1", "invalid category x1"),
            ("s0:c1,,c2", "invalid category "),
            ("s0:c1:c2", "invalid category c1:c2"),
            ("s0:c1.c2.c3", "invalid category c2.c3"),
            ("s0:c1.", "invalid range part c1."),
            ("s0:c5.c3", "invalid category range c5.c3"),
            ("s0:c1,c1", "duplicate categories"),
            ("s0:c0.c5,c3", "duplicate categories"),
            (
                "s0:c99999999999999999999",
                "invalid category c99999999999999999999",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_range(input).expect_err(input), want, "{input}");
        }
        assert_eq!(
            parse_range("s7-s3").expect_err("high < low"),
            "The deployment failed because of a problem with the SELinux range specified (s7-s3) \
             for the context parameter in the permissions section of the application \
             specification file. Make corrections in the permissions section of the AppSpec \
             file, and then try again."
        );
    }
}
