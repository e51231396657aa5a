//! Reads the appspec's YAML into a small positioned tree of Ruby-typed values, the way
//! `YAML.load` (Psych 4) would see them: plain scalars typed by `ruby::resolve_plain`, quoted
//! ones always strings, a repeated key replacing the earlier value, `<<` merge keys merged.
//!
//! Bounded on purpose: aliases are refused (never expanded), nesting deeper than
//! [`MAX_DEPTH`] and more than [`MAX_NODES`] nodes are refused, and only the first document
//! is read.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span, Tag};

use super::parse::{Diagnostic, Severity};
use super::ruby::{self, Plain, RInt};
use crate::appspec::Position;

/// Deepest nesting of sequences and mappings accepted.
pub(super) const MAX_DEPTH: usize = 64;
/// Most YAML nodes accepted in one appspec (a real one has a few hundred).
pub(super) const MAX_NODES: usize = 200_000;
/// After this many alias/tag errors, stop looking for more.
const MAX_REPORTED: usize = 100;

/// A YAML node after Psych's typing, with where it starts.
#[derive(Debug, Clone)]
pub(super) struct Val {
    pub pos: Position,
    pub kind: Kind,
    /// The scalar's text as the parser delivered it (empty for collections).
    pub text: String,
    /// True for any non-plain scalar (quoted or block): Psych never types those.
    pub quoted: bool,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Null,
    Bool(bool),
    Int(RInt),
    Float(f64),
    /// A String; its value is `Val::text`.
    Str,
    Sym(String),
    Seq(Vec<Val>),
    /// Keys are unique (later duplicates already replaced earlier values).
    Map(Vec<(Val, Val)>),
}

impl Val {
    pub(super) fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// Ruby truthiness: everything but `nil` and `false`.
    pub(super) fn truthy(&self) -> bool {
        !matches!(self.kind, Kind::Null | Kind::Bool(false))
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        matches!(self.kind, Kind::Str).then_some(self.text.as_str())
    }

    pub(super) fn as_map(&self) -> Option<&[(Val, Val)]> {
        match &self.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub(super) fn is_scalar(&self) -> bool {
        !matches!(self.kind, Kind::Seq(_) | Kind::Map(_))
    }

    /// What kind of YAML value this is, for our own messages.
    pub(super) fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str => "a string",
            Kind::Sym(_) => "a symbol",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// Ruby `to_s` of the value.
    pub(super) fn to_ruby_s(&self) -> String {
        match &self.kind {
            Kind::Null => String::new(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_ruby_s(),
            Kind::Float(f) => ruby::float_to_s(*f),
            Kind::Str => self.text.clone(),
            Kind::Sym(name) => name.clone(),
            Kind::Seq(_) | Kind::Map(_) => self.inspect(),
        }
    }

    /// Ruby `inspect` of the value (`Hash#inspect` in the pre-3.4 `{"k"=>"v"}` form).
    pub(super) fn inspect(&self) -> String {
        match &self.kind {
            Kind::Null => "nil".to_owned(),
            Kind::Str => ruby::inspect_str(&self.text),
            Kind::Sym(name) => ruby::inspect_sym(name),
            Kind::Seq(items) => {
                let items: Vec<String> = items.iter().map(Val::inspect).collect();
                format!("[{}]", items.join(", "))
            }
            Kind::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}=>{}", k.inspect(), v.inspect()))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
            _ => self.to_ruby_s(),
        }
    }

    /// An identity for Ruby hash-key equality (`eql?`), for scalar keys.
    fn key_id(&self) -> Option<String> {
        Some(match &self.kind {
            Kind::Null => "n".to_owned(),
            Kind::Bool(b) => format!("b{b}"),
            Kind::Int(i) => format!("i{}", i.to_ruby_s()),
            Kind::Float(f) => format!("f{}", f.to_bits()),
            Kind::Str => format!("s{}", self.text),
            Kind::Sym(name) => format!("y{name}"),
            Kind::Seq(_) | Kind::Map(_) => return None,
        })
    }
}

fn position(m: &Marker) -> Position {
    Position {
        line: m.line(),
        column: m.col() + 1,
    }
}

fn error(pos: Position, message: String) -> Diagnostic {
    Diagnostic {
        position: Some(pos),
        severity: Severity::Error,
        message,
    }
}

fn warning(pos: Position, message: String) -> Diagnostic {
    Diagnostic {
        position: Some(pos),
        severity: Severity::Warning,
        message,
    }
}

/// The first document, if there is one, and the warnings about how it was read.
#[derive(Debug)]
pub(super) struct Loaded {
    pub root: Option<Val>,
    pub warnings: Vec<Diagnostic>,
}

enum Frame {
    Seq {
        start: Position,
        items: Vec<Val>,
    },
    Map {
        start: Position,
        entries: Vec<(Val, Val)>,
        key: Option<Val>,
    },
}

struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    nodes: usize,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// Parses `text` into its first document's tree. Errors: one YAML syntax error, or the list of
/// aliases and values `YAML.load` would refuse, or a size limit.
pub(super) fn load(text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder {
        text,
        stack: Vec::new(),
        nodes: 0,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut root: Option<Val> = None;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                let pos = position(e.marker());
                if e.info() == "recursion limit exceeded" {
                    // The scanner's own flow-nesting limit (255), reached while it looks ahead.
                    return Err(vec![too_deep(pos)]);
                }
                return Err(vec![error(
                    pos,
                    format!(
                        "The appspec is not valid YAML: {} (at line {}, column {}).",
                        e.info(),
                        pos.line,
                        pos.column
                    ),
                )]);
            }
        };
        let pos = position(&span.start);
        let done = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if root.is_some() {
                    b.warnings.push(warning(
                        pos,
                        "The appspec has more than one YAML document; only the first is read (as \
                         the AWS agent does) and the rest is ignored."
                            .to_owned(),
                    ));
                    break;
                }
                None
            }
            Event::DocumentEnd => None,
            Event::Alias(_) => {
                let name = b.source(&span);
                b.push_error(error(
                    pos,
                    format!(
                        "YAML aliases are not allowed in an appspec: {name} at line {}, column {} \
                         (anchors are accepted, but a value must be written out where it is used; \
                         the AWS agent fails with \"Unknown alias\").",
                        pos.line, pos.column
                    ),
                ));
                Some(b.node(pos, Kind::Null, String::new(), false)?)
            }
            Event::Scalar(value, style, _anchor, tag) => {
                Some(b.scalar(pos, value.into_owned(), style, tag.as_deref())?)
            }
            Event::SequenceStart(_, tag) => {
                b.check_collection_tag(pos, tag.as_deref());
                b.open(pos)?;
                b.stack.push(Frame::Seq {
                    start: pos,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(_, tag) => {
                b.check_collection_tag(pos, tag.as_deref());
                b.open(pos)?;
                b.stack.push(Frame::Map {
                    start: pos,
                    entries: Vec::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match b.stack.pop() {
                Some(Frame::Seq { start, items }) => Some(Val {
                    pos: start,
                    kind: Kind::Seq(items),
                    text: String::new(),
                    quoted: false,
                }),
                _ => unreachable_frame(pos)?,
            },
            Event::MappingEnd => match b.stack.pop() {
                Some(Frame::Map { start, entries, .. }) => {
                    let entries = b.finish_map(entries);
                    Some(Val {
                        pos: start,
                        kind: Kind::Map(entries),
                        text: String::new(),
                        quoted: false,
                    })
                }
                _ => unreachable_frame(pos)?,
            },
        };
        if let Some(v) = done {
            match b.stack.last_mut() {
                None => root = Some(v),
                Some(Frame::Seq { items, .. }) => items.push(v),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => *key = Some(v),
                    Some(k) => entries.push((k, v)),
                },
            }
        }
        if b.errors.len() >= MAX_REPORTED {
            break;
        }
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    Ok(Loaded {
        root,
        warnings: b.warnings,
    })
}

fn too_deep(pos: Position) -> Diagnostic {
    error(
        pos,
        format!(
            "The appspec is nested too deeply: more than {MAX_DEPTH} levels of lists and mappings \
             at line {}, column {}.",
            pos.line, pos.column
        ),
    )
}

/// The parser's events are well nested; a stray end event would be a parser bug.
fn unreachable_frame(pos: Position) -> Result<Option<Val>, Vec<Diagnostic>> {
    Err(vec![error(
        pos,
        "The appspec's YAML could not be read (unbalanced structure).".to_owned(),
    )])
}

impl Builder<'_> {
    /// The source text of `span` (for naming an alias).
    fn source(&self, span: &Span) -> String {
        let len = span.end.index().saturating_sub(span.start.index()).min(200);
        self.text
            .chars()
            .skip(span.start.index())
            .take(len)
            .collect()
    }

    fn push_error(&mut self, d: Diagnostic) {
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(d);
        }
    }

    fn count(&mut self, pos: Position) -> Result<(), Vec<Diagnostic>> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(vec![error(
                pos,
                format!("The appspec is too large: more than {MAX_NODES} YAML values."),
            )]);
        }
        Ok(())
    }

    fn open(&mut self, pos: Position) -> Result<(), Vec<Diagnostic>> {
        self.count(pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(vec![too_deep(pos)]);
        }
        Ok(())
    }

    fn node(
        &mut self,
        pos: Position,
        kind: Kind,
        text: String,
        quoted: bool,
    ) -> Result<Val, Vec<Diagnostic>> {
        self.count(pos)?;
        Ok(Val {
            pos,
            kind,
            text,
            quoted,
        })
    }

    fn check_collection_tag(&mut self, pos: Position, tag: Option<&Tag>) {
        if let Some(tag) = tag
            && let Some(msg) = refused_tag(tag)
        {
            self.push_error(error(pos, msg));
        }
    }

    fn scalar(
        &mut self,
        pos: Position,
        text: String,
        style: ScalarStyle,
        tag: Option<&Tag>,
    ) -> Result<Val, Vec<Diagnostic>> {
        let quoted = !matches!(style, ScalarStyle::Plain);
        if let Some(tag) = tag
            && let Some(msg) = refused_tag(tag)
        {
            self.push_error(error(pos, msg));
            return self.node(pos, Kind::Null, text, quoted);
        }
        let suffix = tag.map(|t| t.suffix.as_str());
        let core = tag.is_some_and(|t| t.is_yaml_core_schema() || t.handle == "!");
        if quoted || (core && suffix == Some("str")) {
            return self.node(pos, Kind::Str, text, quoted);
        }
        let kind = match ruby::resolve_plain(&text) {
            Plain::Null => Kind::Null,
            Plain::Bool(b) => Kind::Bool(b),
            Plain::Int(i) => Kind::Int(i),
            Plain::Float(f) => Kind::Float(f),
            Plain::Str => Kind::Str,
            Plain::Sym(name) => Kind::Sym(name),
            Plain::Disallowed(class) => {
                self.push_error(error(
                    pos,
                    format!(
                        "Tried to load unspecified class: {class} (the unquoted value {text} at \
                         line {}, column {} is read by YAML as a {}; put it in quotes).",
                        pos.line,
                        pos.column,
                        class.to_ascii_lowercase()
                    ),
                ));
                Kind::Str
            }
        };
        let kind = if core && suffix == Some("float") {
            match kind {
                Kind::Int(i) => Kind::Float(i.clamped() as f64),
                Kind::Float(f) => Kind::Float(f),
                _ => {
                    self.push_error(error(
                        pos,
                        format!("The value {text} tagged !!float is not a number."),
                    ));
                    Kind::Null
                }
            }
        } else {
            kind
        };
        self.node(pos, kind, text, quoted)
    }

    /// Applies Ruby `Hash#[]=` semantics: a repeated key keeps its first place and takes the
    /// last value (with a warning); a `<<` key merges a mapping (or a list of them) in.
    fn finish_map(&mut self, entries: Vec<(Val, Val)>) -> Vec<(Val, Val)> {
        let mut out: Vec<(Val, Val)> = Vec::with_capacity(entries.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut insert =
            |out: &mut Vec<(Val, Val)>, k: Val, v: Val, warn: Option<&mut Vec<Diagnostic>>| match k
                .key_id()
            {
                Some(id) => match index.get(&id) {
                    Some(&i) => {
                        if let Some(warnings) = warn {
                            warnings.push(warning(
                                k.pos,
                                format!(
                                    "Duplicate key {} (first at line {}, column {}): the last \
                                     value is used, as the AWS agent does.",
                                    k.to_ruby_s(),
                                    out[i].0.pos.line,
                                    out[i].0.pos.column
                                ),
                            ));
                        }
                        out[i].1 = v;
                    }
                    None => {
                        index.insert(id, out.len());
                        out.push((k, v));
                    }
                },
                None => out.push((k, v)),
            };
        for (k, v) in entries {
            let is_merge = k.text == "<<" && matches!(k.kind, Kind::Str);
            if is_merge {
                match v.kind {
                    Kind::Map(merged) => {
                        for (mk, mv) in merged {
                            insert(&mut out, mk, mv, None);
                        }
                        continue;
                    }
                    Kind::Seq(ref items) if items.iter().all(|i| i.as_map().is_some()) => {
                        // Ruby: h = {}; val.reverse_each { h.merge!(value) }; hash.merge!(h)
                        let Kind::Seq(items) = v.kind else { continue };
                        let mut merged: Vec<(Val, Val)> = Vec::new();
                        for item in items.into_iter().rev() {
                            if let Kind::Map(m) = item.kind {
                                merged.extend(m);
                            }
                        }
                        for (mk, mv) in merged {
                            insert(&mut out, mk, mv, None);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            insert(&mut out, k, v, Some(&mut self.warnings));
        }
        out
    }
}

/// Tags `YAML.load` refuses (Ruby objects) or that we do not decode; `None` for tags that
/// change nothing (`!!str`/`!!float` are handled by the caller, others are ignored as Psych
/// ignores unknown tags).
fn refused_tag(tag: &Tag) -> Option<String> {
    let s = &tag.suffix;
    let ruby = tag.handle == "!" && s.starts_with("ruby/");
    let unsupported = (tag.is_yaml_core_schema() || tag.handle == "!")
        && matches!(s.as_str(), "binary" | "set" | "omap" | "timestamp");
    (ruby || unsupported)
        .then(|| format!("The YAML tag {tag} is not supported in an appspec; remove the tag."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Val {
        load(text).expect("loads").root.expect("has a document")
    }

    #[test]
    fn positions_are_one_based() {
        let v = root("a: 1\nb:\n  - x\n");
        let Kind::Map(entries) = &v.kind else {
            panic!("map")
        };
        assert_eq!(entries[0].1.pos, Position { line: 1, column: 4 });
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!("seq")
        };
        assert_eq!(items[0].pos, Position { line: 3, column: 5 });
    }

    #[test]
    fn quoted_scalars_are_strings() {
        let v = root("a: '0.0'\nb: 0.0\nc: !!str 1\nd: \"yes\"\n");
        let Kind::Map(e) = &v.kind else { panic!("map") };
        assert!(matches!(e[0].1.kind, Kind::Str) && e[0].1.quoted);
        assert!(matches!(e[1].1.kind, Kind::Float(_)));
        assert!(matches!(e[2].1.kind, Kind::Str));
        assert!(matches!(e[3].1.kind, Kind::Str));
    }

    #[test]
    fn duplicate_keys_last_wins_first_place() {
        let loaded = load("a: 1\nb: 2\na: 3\n").expect("loads");
        let v = loaded.root.expect("doc");
        let Kind::Map(e) = &v.kind else { panic!("map") };
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0.text, "a");
        assert_eq!(e[0].1.text, "3");
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(
            loaded.warnings[0].position,
            Some(Position { line: 3, column: 1 })
        );
    }

    #[test]
    fn merge_keys_merge() {
        let v = root("a: 1\n<<: {a: 2, b: 3}\n");
        assert_eq!(v.inspect(), r#"{"a"=>2, "b"=>3}"#);
    }

    #[test]
    fn aliases_are_refused_with_their_position() {
        let errs = load("a: &x 1\nb: *x\nc: *x\n").expect_err("aliases");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].position, Some(Position { line: 2, column: 4 }));
        assert!(errs[0].message.contains("*x"), "{}", errs[0].message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let errs = load(&deep).expect_err("too deep");
        assert!(errs[0].message.contains("nested too deeply"));
        assert!(load(&format!("{}{}", "[".repeat(60), "]".repeat(60))).is_ok());
    }

    #[test]
    fn only_the_first_document_is_read() {
        let loaded = load("a: 1\n---\nb: 2\n").expect("loads");
        assert_eq!(loaded.root.expect("doc").inspect(), r#"{"a"=>1}"#);
        assert_eq!(loaded.warnings.len(), 1);
    }

    #[test]
    fn ruby_objects_are_refused() {
        assert!(load("a: !ruby/object:File {}\n").is_err());
    }
}
