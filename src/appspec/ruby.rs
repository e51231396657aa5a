//! The Ruby side of reading an appspec: how Psych (YAML 1.1, `Psych::ScalarScanner#tokenize`)
//! types a plain scalar, and how Ruby then renders values (`to_s`, `inspect`) and converts them
//! (`String#to_i`). The AWS agent's messages interpolate these renderings, so they must match.

use std::fmt::Write as _;

/// A Ruby Integer: exact for any size the YAML can spell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RInt {
    Small(i128),
    /// Too big for `i128`: the sign and the decimal digits of the magnitude.
    Big {
        negative: bool,
        decimal: String,
    },
}

impl RInt {
    pub(super) fn is_zero(&self) -> bool {
        matches!(self, RInt::Small(0))
    }

    /// The value clamped into `i128` (only the sign matters beyond it).
    pub(super) fn clamped(&self) -> i128 {
        match self {
            RInt::Small(v) => *v,
            RInt::Big { negative: true, .. } => i128::MIN,
            RInt::Big {
                negative: false, ..
            } => i128::MAX,
        }
    }

    pub(super) fn to_ruby_s(&self) -> String {
        match self {
            RInt::Small(v) => v.to_string(),
            RInt::Big { negative, decimal } => {
                format!("{}{decimal}", if *negative { "-" } else { "" })
            }
        }
    }

    /// Parses `digits` (no sign, no prefix, no separators) in `radix`, exactly.
    fn from_digits(negative: bool, digits: &str, radix: u32) -> Option<RInt> {
        let mut small: Option<i128> = Some(0);
        for c in digits.chars() {
            let d = i128::from(c.to_digit(radix)?);
            small = small
                .and_then(|v| v.checked_mul(i128::from(radix)))
                .and_then(|v| v.checked_add(d));
            if small.is_none() {
                break;
            }
        }
        if let Some(v) = small {
            return Some(RInt::Small(if negative { -v } else { v }));
        }
        // Arbitrary precision: little-endian limbs in base 1e9.
        const BASE: u64 = 1_000_000_000;
        let mut limbs: Vec<u64> = vec![0];
        for c in digits.chars() {
            let mut carry = u64::from(c.to_digit(radix)?);
            for limb in &mut limbs {
                let v = *limb * u64::from(radix) + carry;
                *limb = v % BASE;
                carry = v / BASE;
            }
            while carry > 0 {
                limbs.push(carry % BASE);
                carry /= BASE;
            }
        }
        let mut decimal = String::new();
        let mut iter = limbs.iter().rev();
        if let Some(top) = iter.next() {
            let _ = write!(decimal, "{top}");
        }
        for limb in iter {
            let _ = write!(decimal, "{limb:09}");
        }
        Some(RInt::Big { negative, decimal })
    }
}

/// What Psych makes of a plain (unquoted, untagged) scalar.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plain {
    Null,
    Bool(bool),
    Int(RInt),
    Float(f64),
    Str,
    Sym(String),
    /// A date or timestamp: `YAML.load` (Psych 4, safe) raises `Psych::DisallowedClass`.
    Disallowed(&'static str),
}

fn is_first_regex_class(c: char) -> bool {
    c.is_alphabetic() || c.is_whitespace() || "_!@#$%^&*(){}<>|/\\~;=".contains(c)
}

/// `Psych::ScalarScanner#tokenize` for a plain scalar (Psych 4, `strict_integer: false`).
pub(super) fn resolve_plain(s: &str) -> Plain {
    if s.is_empty() {
        return Plain::Null;
    }
    let mut chars = s.chars();
    let c0 = chars.next().expect("s is not empty");
    let c1 = chars.next();
    // %r{^[^\d.:-]?[[:alpha:]_\s!@#$%\^&*(){}<>|/\\~;=]+} || /\n/
    let wordy = is_first_regex_class(c0)
        || (!(c0.is_ascii_digit() || ".:-".contains(c0)) && c1.is_some_and(is_first_regex_class));
    if wordy || s.contains('\n') {
        if s.chars().count() > 5 || !"ytonfYTONF~".contains(c0) {
            return Plain::Str;
        }
        let lower = s.to_ascii_lowercase();
        return match lower.as_str() {
            "~" | "null" => Plain::Null,
            "yes" | "true" | "on" => Plain::Bool(true),
            "no" | "false" | "off" => Plain::Bool(false),
            _ => Plain::Str,
        };
    }
    if is_time(s) {
        return Plain::Disallowed("Time");
    }
    if is_date(s) {
        return Plain::Disallowed("Date");
    }
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        ".inf" | "+.inf" => return Plain::Float(f64::INFINITY),
        "-.inf" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" => return Plain::Float(f64::NAN),
        _ => {}
    }
    if c0 == ':' && c1.is_some() {
        return Plain::Sym(symbol_name(s));
    }
    if let Some(v) = sexagesimal_int(s) {
        return Plain::Int(v);
    }
    if let Some(v) = sexagesimal_float(s) {
        return Plain::Float(v);
    }
    if is_float(s) {
        if matches!(s, "." | "+." | "-.") {
            return Plain::Str;
        }
        let cleaned: String = s.chars().filter(|c| *c != ',' && *c != '_').collect();
        // gsub(/\.([Ee]|$)/, '\1'): "1." -> "1", "1.e+5" -> "1e+5".
        let cleaned = cleaned.replace(".e", "e").replace(".E", "E");
        let cleaned = cleaned.strip_suffix('.').unwrap_or(&cleaned);
        return match cleaned.parse::<f64>() {
            Ok(v) => Plain::Float(v),
            Err(_) => Plain::Str,
        };
    }
    if let Some(v) = legacy_int(s) {
        return Plain::Int(v);
    }
    Plain::Str
}

/// `:foo` -> `foo`; `:"foo bar"` -> `foo bar` (the name between the first and last quote).
fn symbol_name(s: &str) -> String {
    let rest = &s[1..];
    let mut name = rest;
    if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'')
        && let Some(end) = rest[1..].rfind(q)
    {
        name = &rest[1..1 + end];
    }
    name.strip_prefix(':').unwrap_or(name).to_owned()
}

/// A tiny cursor for the hand-written versions of Psych's regular expressions.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cur<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, f: impl Fn(u8) -> bool) -> bool {
        if self.peek().is_some_and(&f) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_n(&mut self, min: usize, max: usize, f: impl Fn(u8) -> bool) -> bool {
        let mut n = 0;
        while n < max && self.eat(&f) {
            n += 1;
        }
        n >= min
    }
    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.eat(&f) {}
        self.i - start
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn digit(c: u8) -> bool {
    c.is_ascii_digit()
}

fn space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// TIME = /^-?\d{4}-\d{1,2}-\d{1,2}(?:[Tt]|\s+)\d{1,2}:\d\d:\d\d(?:\.\d*)?
///          (?:\s*(?:Z|[-+]\d{1,2}:?(?:\d\d)?))?$/
fn is_time(s: &str) -> bool {
    let mut c = Cur {
        b: s.as_bytes(),
        i: 0,
    };
    c.eat(|b| b == b'-');
    if !(c.eat_n(4, 4, digit)
        && c.eat(|b| b == b'-')
        && c.eat_n(1, 2, digit)
        && c.eat(|b| b == b'-')
        && c.eat_n(1, 2, digit))
    {
        return false;
    }
    if !c.eat(|b| b == b'T' || b == b't') && c.eat_while(space) == 0 {
        return false;
    }
    if !(c.eat_n(1, 2, digit)
        && c.eat(|b| b == b':')
        && c.eat_n(2, 2, digit)
        && c.eat(|b| b == b':')
        && c.eat_n(2, 2, digit))
    {
        return false;
    }
    if c.eat(|b| b == b'.') {
        c.eat_while(digit);
    }
    if c.done() {
        return true;
    }
    c.eat_while(space);
    if c.eat(|b| b == b'Z') {
        return c.done();
    }
    if !c.eat(|b| b == b'-' || b == b'+') {
        return false;
    }
    // [-+]\d{1,2}:?(?:\d\d)?$
    let rest = &s[c.i..];
    let two_digits = |t: &str| t.is_empty() || (t.len() == 2 && t.bytes().all(digit));
    (1..=2).any(|h| {
        rest.len() >= h
            && rest.as_bytes()[..h].iter().all(|b| digit(*b))
            && two_digits(rest[h..].strip_prefix(':').unwrap_or(&rest[h..]))
    })
}

/// /^\d{4}-(?:1[012]|0\d|\d)-(?:[12]\d|3[01]|0\d|\d)$/
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let Some(dash) = b[5..].iter().position(|c| *c == b'-').map(|p| p + 5) else {
        return false;
    };
    let month = &s[5..dash];
    let day = &s[dash + 1..];
    let month_ok = match month.as_bytes() {
        [d] => d.is_ascii_digit(),
        [b'1', d] => matches!(d, b'0'..=b'2'),
        [b'0', d] => d.is_ascii_digit(),
        _ => false,
    };
    let day_ok = match day.as_bytes() {
        [d] => d.is_ascii_digit(),
        [b'1' | b'2' | b'0', d] => d.is_ascii_digit(),
        [b'3', d] => matches!(d, b'0' | b'1'),
        _ => false,
    };
    month_ok && day_ok
}

/// Splits `[-+]?[0-9][0-9_]*(:[0-5]?[0-9]){1,2}` (+ `rest` check) into its parts.
fn sexagesimal_parts(s: &str, float_tail: bool) -> Option<Vec<&str>> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let first = parts[0].strip_prefix(['-', '+']).unwrap_or(parts[0]);
    let fb = first.as_bytes();
    if fb.is_empty() || !fb[0].is_ascii_digit() || !fb.iter().all(|c| digit(*c) || *c == b'_') {
        return None;
    }
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate().skip(1) {
        let (head, tail) = if i == last && float_tail {
            let dot = part.find('.')?;
            (&part[..dot], Some(&part[dot + 1..]))
        } else {
            (*part, None)
        };
        let ok = match head.as_bytes() {
            [d] => d.is_ascii_digit(),
            [a, d] => matches!(a, b'0'..=b'5') && d.is_ascii_digit(),
            _ => false,
        };
        if !ok || tail.is_some_and(|t| !t.bytes().all(|c| digit(c) || c == b'_')) {
            return None;
        }
    }
    Some(parts)
}

/// Ruby `String#to_i` on one sexagesimal component (digits, underscores, optional sign).
fn component_to_i(part: &str) -> i128 {
    match string_to_i(part) {
        RInt::Small(v) => v,
        big => big.clamped(),
    }
}

fn sexagesimal_int(s: &str) -> Option<RInt> {
    let parts = sexagesimal_parts(s, false)?;
    // Psych: i += n.to_i * 60 ** (e - 2).abs (so "1:30" is 1*3600 + 30*60).
    let mut total: i128 = 0;
    for (e, part) in parts.iter().enumerate() {
        let weight = 60i128.pow(u32::try_from((e as i64 - 2).unsigned_abs()).unwrap_or(2));
        total = total.saturating_add(component_to_i(part).saturating_mul(weight));
    }
    Some(RInt::Small(total))
}

fn sexagesimal_float(s: &str) -> Option<f64> {
    let parts = sexagesimal_parts(s, true)?;
    let mut total = 0.0;
    for (e, part) in parts.iter().enumerate() {
        let weight = 60f64.powi(i32::try_from((e as i64 - 2).abs()).unwrap_or(2));
        total += string_to_f(part) * weight;
    }
    Some(total)
}

/// Ruby `String#to_f` for the simple shapes the sexagesimal form allows.
fn string_to_f(part: &str) -> f64 {
    let cleaned: String = part.chars().filter(|c| *c != '_').collect();
    let cleaned = cleaned.strip_suffix('.').unwrap_or(&cleaned);
    cleaned.parse().unwrap_or(0.0)
}

/// FLOAT = /^(?:[-+]?([0-9][0-9_,]*)?\.[0-9]*([eE][-+][0-9]+)?)$/
fn is_float(s: &str) -> bool {
    let mut c = Cur {
        b: s.as_bytes(),
        i: 0,
    };
    c.eat(|b| b == b'-' || b == b'+');
    if c.eat(digit) {
        c.eat_while(|b| digit(b) || b == b'_' || b == b',');
    }
    if !c.eat(|b| b == b'.') {
        return false;
    }
    c.eat_while(digit);
    if c.eat(|b| b == b'e' || b == b'E') {
        return c.eat(|b| b == b'-' || b == b'+') && c.eat_while(digit) > 0 && c.done();
    }
    c.done()
}

/// INTEGER_LEGACY, then `Integer(string.delete(',_'))`.
fn legacy_int(s: &str) -> Option<RInt> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let sep = |c: char| c == '_' || c == ',';
    let strip = |t: &str| -> String { t.chars().filter(|c| !sep(*c)).collect() };
    let prefixed = |rest: &str, ok: fn(char) -> bool| -> bool {
        let t = rest.trim_start_matches(sep);
        t.chars().next().is_some_and(ok) && t.chars().all(|c| ok(c) || sep(c))
    };
    if let Some(rest) = body.strip_prefix("0b") {
        if prefixed(rest, |c| c == '0' || c == '1') {
            return RInt::from_digits(negative, &strip(rest), 2);
        }
        return None;
    }
    if let Some(rest) = body.strip_prefix("0x") {
        if prefixed(rest, |c| c.is_ascii_hexdigit()) {
            return RInt::from_digits(negative, &strip(rest), 16);
        }
        return None;
    }
    if body == "0" {
        return Some(RInt::Small(0));
    }
    if let Some(rest) = body.strip_prefix('0') {
        if prefixed(rest, |c| ('0'..='7').contains(&c)) {
            return RInt::from_digits(negative, &strip(rest), 8);
        }
        return None;
    }
    // [1-9](?:[0-9]|,[0-9]|_[0-9])*
    let b = body.as_bytes();
    if b.is_empty() || !matches!(b[0], b'1'..=b'9') {
        return None;
    }
    let mut i = 1;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            i += 1;
        } else if (b[i] == b',' || b[i] == b'_') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 2;
        } else {
            return None;
        }
    }
    RInt::from_digits(negative, &strip(body), 10)
}

/// Ruby `String#to_i`: leading whitespace, a sign, an optional `0d`, then digits with single
/// underscores between them; stops at the first other character; `0` when there are none.
pub(super) fn string_to_i(s: &str) -> RInt {
    let t = s.trim_start_matches(|c: char| c.is_ascii() && space(c as u8));
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let t = match t.as_bytes() {
        [b'0', b'd' | b'D', d, ..] if d.is_ascii_digit() => &t[2..],
        _ => t,
    };
    let b = t.as_bytes();
    let mut digits = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            digits.push(char::from(b[i]));
            i += 1;
        } else if b[i] == b'_' && i > 0 && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
        } else {
            break;
        }
    }
    if digits.is_empty() {
        return RInt::Small(0);
    }
    RInt::from_digits(negative, &digits, 10).unwrap_or(RInt::Small(0))
}

/// Ruby `Float#to_s`: shortest round-trip digits, fixed notation for exponents -4..16,
/// otherwise `d.ddde+XX`.
pub(super) fn float_to_s(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // `{:e}` gives the shortest digits: "-1.2345e-7".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1; // position of the decimal point relative to the digits
    let n = i32::try_from(digits.len()).expect("f64 has at most 17 significant digits");
    let body = if decpt > 0 && decpt <= 16 {
        if decpt >= n {
            format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        }
    } else if decpt <= 0 && decpt > -4 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else {
        let frac = if digits.len() > 1 { &digits[1..] } else { "0" };
        format!(
            "{}.{frac}e{}{:02}",
            &digits[..1],
            if decpt - 1 < 0 { '-' } else { '+' },
            (decpt - 1).abs()
        )
    };
    format!("{sign}{body}")
}

/// Ruby `String#inspect` for a UTF-8 string.
pub(crate) fn inspect_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            '\x08' => out.push_str("\\b"),
            '\x07' => out.push_str("\\a"),
            '\x1b' => out.push_str("\\e"),
            '\x7f' => out.push_str("\\x7F"),
            '#' if matches!(chars.peek(), Some('{' | '$' | '@')) => out.push_str("\\#"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Ruby's `Array#inspect` of strings, as string interpolation of an array renders it:
/// `["a", "b\"c"]`.
pub(crate) fn inspect_str_array(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| inspect_str(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// Ruby `Symbol#inspect`: `:foo`, or `:"foo bar"` when the name is not a plain identifier.
pub(super) fn inspect_sym(name: &str) -> String {
    let simple = name
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if simple {
        format!(":{name}")
    } else {
        format!(":{}", inspect_str(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i128) -> Plain {
        Plain::Int(RInt::Small(v))
    }

    #[test]
    fn psych_plain_scalar_table() {
        let cases: &[(&str, Plain)] = &[
            ("", Plain::Null),
            ("~", Plain::Null),
            ("null", Plain::Null),
            ("Null", Plain::Null),
            ("NULL", Plain::Null),
            ("nUlL", Plain::Null),
            ("true", Plain::Bool(true)),
            ("True", Plain::Bool(true)),
            ("TRUE", Plain::Bool(true)),
            ("yes", Plain::Bool(true)),
            ("Yes", Plain::Bool(true)),
            ("on", Plain::Bool(true)),
            ("ON", Plain::Bool(true)),
            ("false", Plain::Bool(false)),
            ("no", Plain::Bool(false)),
            ("No", Plain::Bool(false)),
            ("off", Plain::Bool(false)),
            ("y", Plain::Str),
            ("n", Plain::Str),
            ("truely", Plain::Str),
            ("0", int(0)),
            ("00", int(0)),
            ("-0", int(0)),
            ("42", int(42)),
            ("+42", int(42)),
            ("-42", int(-42)),
            ("1_000", int(1000)),
            ("1,000", int(1000)),
            ("1__0", Plain::Str),
            ("0644", int(420)),
            ("0_7", int(7)),
            ("08", Plain::Str),
            ("0x1F", int(31)),
            ("-0x1f", int(-31)),
            ("0b101", int(5)),
            ("0o17", Plain::Str),
            ("1:30", int(5400)),
            ("1:30:00", int(5400)),
            ("1:60", Plain::Str),
            ("0.0", Plain::Float(0.0)),
            ("1.5", Plain::Float(1.5)),
            ("1.", Plain::Float(1.0)),
            (".5", Plain::Float(0.5)),
            ("-.5", Plain::Float(-0.5)),
            ("1_000.5", Plain::Float(1000.5)),
            ("1.0e+3", Plain::Float(1000.0)),
            ("1e3", Plain::Str),
            ("1.0e3", Plain::Str),
            (".", Plain::Str),
            ("-", Plain::Str),
            (".inf", Plain::Float(f64::INFINITY)),
            ("-.Inf", Plain::Float(f64::NEG_INFINITY)),
            ("+.INF", Plain::Float(f64::INFINITY)),
            ("inf", Plain::Str),
            (":foo", Plain::Sym("foo".into())),
            (":'a b'", Plain::Sym("a b".into())),
            (":", Plain::Str),
            ("2020-01-01", Plain::Disallowed("Date")),
            ("2020-1-1", Plain::Disallowed("Date")),
            ("2001-12-14t21:59:43.10-05:00", Plain::Disallowed("Time")),
            ("2001-12-14 21:59:43", Plain::Disallowed("Time")),
            ("2020-13-01", Plain::Str),
            ("linux", Plain::Str),
            ("u:bob:7", Plain::Str),
            ("m:0", Plain::Str),
            ("s0:c1", Plain::Str),
            ("scripts/start.sh", Plain::Str),
            // Psych's own test_scalar_scanner.rb cases.
            ("0.E+0", Plain::Float(0.0)),
            ("1.2", Plain::Float(1.2)),
            ("_100", Plain::Str),
            ("450D", Plain::Str),
            ("100_", Plain::Str),
            ("0x_,_", Plain::Str),
            ("+0__,,", Plain::Str),
            ("-0b,_,", Plain::Str),
            ("123,456,789", int(123_456_789)),
            ("1_2,3,4_5,6_789", int(123_456_789)),
            ("0b0,1_0,1_,0,1_01,0", int(0b0_1010_1010)),
            ("0_,,,1_2,_34567", int(0o1234567)),
            ("0x12_,34,_56,_789abcdef__", int(0x0123_4567_89ab_cdef)),
            ("00:00:00:00:0f", Plain::Str),
            ("00:00:00:00:00", Plain::Str),
            ("190:20:30", int(685_230)),
            ("190:20:30.15", Plain::Float(685_230.15)),
            ("+.", Plain::Str),
            ("2001-12-15T02:59:43.1Z", Plain::Disallowed("Time")),
            ("2001-12-14 21:59:43.10 -5", Plain::Disallowed("Time")),
            ("2011-02-24 11:17:06 -0800", Plain::Disallowed("Time")),
            // Safe loading refuses the class before validating the value.
            ("2001-12-15T02:59:73.1Z", Plain::Disallowed("Time")),
            ("2000-1-31", Plain::Disallowed("Date")),
            ("2000-11-31", Plain::Disallowed("Date")),
            ("2000-15-01", Plain::Str),
            ("2000-10-32", Plain::Str),
        ];
        for (text, want) in cases {
            let got = resolve_plain(text);
            match (want, &got) {
                (Plain::Float(a), Plain::Float(b)) if a.is_nan() => assert!(b.is_nan(), "{text}"),
                _ => assert_eq!(&got, want, "resolving {text:?}"),
            }
        }
        assert!(matches!(resolve_plain(".NaN"), Plain::Float(v) if v.is_nan()));
    }

    #[test]
    fn huge_integers_are_exact() {
        let Plain::Int(v) = resolve_plain("123456789012345678901234567890123456789012345") else {
            panic!("not an int");
        };
        assert_eq!(
            v.to_ruby_s(),
            "123456789012345678901234567890123456789012345"
        );
        let Plain::Int(v) = resolve_plain("-0xffffffffffffffffffffffffffffffffff") else {
            panic!("not an int");
        };
        assert_eq!(v.to_ruby_s(), "-87112285931760246646623899502532662132735");
        assert_eq!(v.clamped(), i128::MIN);
    }

    #[test]
    fn ruby_string_to_i() {
        let cases = [
            ("90", 90),
            ("  90", 90),
            ("+90", 90),
            ("-5", -5),
            ("12abc", 12),
            ("foo", 0),
            ("1_000", 1000),
            ("1__000", 1),
            ("_1", 0),
            ("1_", 1),
            ("0x1A", 0),
            ("0d12", 12),
            ("1.9", 1),
            ("", 0),
        ];
        for (s, want) in cases {
            assert_eq!(string_to_i(s), RInt::Small(want), "{s:?}.to_i");
        }
    }

    #[test]
    fn ruby_float_to_s() {
        let cases = [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (1.5, "1.5"),
            (1000.0, "1000.0"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1.0e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1.0e+16"),
            (1.25e20, "1.25e+20"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(float_to_s(v), want, "{v}.to_s");
        }
    }

    #[test]
    fn ruby_inspect() {
        assert_eq!(inspect_str("unconfined_u"), r#""unconfined_u""#);
        assert_eq!(inspect_str("a\"b\\c\n#{x}"), r#""a\"b\\c\n\#{x}""#);
        assert_eq!(inspect_str("\u{1}"), r#""\u0001""#);
        assert_eq!(inspect_sym("foo"), ":foo");
        assert_eq!(inspect_sym("a b"), r#":"a b""#);
    }
}
