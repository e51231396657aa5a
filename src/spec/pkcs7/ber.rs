//! BER to DER, for the BER that PKCS#7 signers emit: indefinite lengths (OpenSSL `-stream`,
//! Java's BouncyCastle), non-minimal lengths, and strings split into constructed segments
//! (`OCTET STRING` chunks of the attached content). The `der` crate reads DER only.
//!
//! Element order is kept: SET OF sorting is left to the decoder, and the signed attributes
//! stay in the order that was signed. A DER input comes out byte for byte unchanged.

/// Deeper nesting than this is refused (a SignedData with certificates nests about 12 deep).
const MAX_DEPTH: u32 = 64;

/// Universal string types that BER may encode constructed and DER requires primitive.
const STRING_TAGS: [u8; 13] = [3, 4, 12, 18, 19, 20, 21, 22, 25, 26, 27, 28, 30];
const BIT_STRING: u8 = 3;

/// What is wrong with the BER, as text for `Could not parse the PKCS7: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BerError(pub(super) String);

fn error<T>(detail: impl Into<String>) -> Result<T, BerError> {
    Err(BerError(detail.into()))
}

/// Re-encodes one BER element (the whole input) as DER.
pub(super) fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut cursor = Cursor { buf: input, pos: 0 };
    let Some(element) = cursor.element(0)? else {
        return error("unexpected end-of-contents at the top level");
    };
    if cursor.pos != input.len() {
        return error(format!(
            "{} bytes of trailing data after the PKCS7",
            input.len() - cursor.pos
        ));
    }
    let mut out = Vec::with_capacity(input.len());
    element.encode(&mut out);
    Ok(out)
}

/// One element: identifier octets (as read) and DER contents.
struct Element {
    identifier: Vec<u8>,
    contents: Vec<u8>,
}

impl Element {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.identifier);
        let len = self.contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(&self.contents);
    }

    fn constructed(&self) -> bool {
        self.identifier[0] & 0x20 != 0
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, BerError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| BerError("truncated (unexpected end of data)".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&[u8], BerError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                BerError(format!(
                    "truncated (an element of {len} bytes at offset {})",
                    self.pos
                ))
            })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// The next element, or `None` for an end-of-contents marker.
    fn element(&mut self, depth: u32) -> Result<Option<Element>, BerError> {
        if depth > MAX_DEPTH {
            return error(format!("nested more than {MAX_DEPTH} deep"));
        }
        let start = self.pos;
        let first = self.byte()?;
        if first & 0x1f == 0x1f {
            // High tag number: base-128 continuation octets.
            for _ in 0..4 {
                if self.byte()? & 0x80 == 0 {
                    break;
                }
            }
            if self.buf[self.pos - 1] & 0x80 != 0 {
                return error("tag number too large");
            }
        }
        let identifier = self.buf[start..self.pos].to_vec();
        let constructed = first & 0x20 != 0;

        let length = match self.byte()? {
            l if l < 0x80 => Some(usize::from(l)),
            0x80 => None,
            0xff => return error("reserved length octet 0xff"),
            l => {
                let n = usize::from(l & 0x7f);
                if n > 4 {
                    return error(format!("length of {n} octets is too long"));
                }
                let mut len = 0usize;
                for _ in 0..n {
                    len = (len << 8) | usize::from(self.byte()?);
                }
                Some(len)
            }
        };

        if identifier == [0x00] {
            return match length {
                Some(0) => Ok(None),
                _ => error("malformed end-of-contents"),
            };
        }

        let mut children = Vec::new();
        match length {
            Some(len) if !constructed => {
                let contents = self.take(len)?.to_vec();
                return Ok(Some(Element {
                    identifier,
                    contents,
                }));
            }
            None if !constructed => return error("indefinite length on a primitive element"),
            Some(len) => {
                let mut inner = Cursor {
                    buf: self.take(len)?,
                    pos: 0,
                };
                while inner.pos < inner.buf.len() {
                    match inner.element(depth + 1)? {
                        Some(child) => children.push(child),
                        None => return error("end-of-contents inside a definite length"),
                    }
                }
            }
            None => {
                while let Some(child) = self.element(depth + 1)? {
                    children.push(child);
                }
            }
        }

        // A universal string in constructed form: DER wants the segments joined, primitive.
        let universal = first & 0xc0 == 0;
        let number = first & 0x1f;
        if universal && STRING_TAGS.contains(&number) {
            return join_segments(number, &children).map(Some);
        }
        let mut contents = Vec::new();
        for child in &children {
            child.encode(&mut contents);
        }
        Ok(Some(Element {
            identifier,
            contents,
        }))
    }
}

/// The segments of a constructed string (already flattened to primitive by the recursion).
fn join_segments(number: u8, segments: &[Element]) -> Result<Element, BerError> {
    let mut contents = Vec::new();
    if number == BIT_STRING {
        contents.push(0); // unused bits of the whole string: those of the last segment
    }
    for (i, segment) in segments.iter().enumerate() {
        if segment.identifier != [number] || segment.constructed() {
            return error(format!(
                "a constructed string of type {number} holds a segment of another type"
            ));
        }
        if number == BIT_STRING {
            let (&unused, bits) = segment
                .contents
                .split_first()
                .ok_or_else(|| BerError("empty BIT STRING segment".into()))?;
            if unused != 0 && i + 1 != segments.len() {
                return error("BIT STRING segment other than the last has unused bits");
            }
            contents[0] = unused;
            contents.extend_from_slice(bits);
        } else {
            contents.extend_from_slice(&segment.contents);
        }
    }
    Ok(Element {
        identifier: vec![number],
        contents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_is_unchanged() {
        let der = [
            0x30, 0x0a, 0x02, 0x01, 0x01, 0xa0, 0x05, 0x04, 0x03, b'a', b'b', b'c',
        ];
        assert_eq!(to_der(&der), Ok(der.to_vec()));
        let long = [vec![0x04, 0x81, 0x80], vec![7u8; 0x80]].concat();
        assert_eq!(to_der(&long), Ok(long.clone()));
    }

    #[test]
    fn indefinite_lengths_and_segments_are_normalised() {
        // SEQUENCE (indef) { [0] (indef) { OCTET STRING (constructed, indef) { "ab", "c" } } }
        let ber = [
            0x30, 0x80, 0xa0, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x81, 0x01, b'c',
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let der = [0x30, 0x07, 0xa0, 0x05, 0x04, 0x03, b'a', b'b', b'c'];
        assert_eq!(to_der(&ber), Ok(der.to_vec()));
    }

    #[test]
    fn bit_string_segments_keep_the_last_unused_bits() {
        let ber = [0x23, 0x08, 0x03, 0x02, 0x00, 0xff, 0x03, 0x02, 0x04, 0xf0];
        assert_eq!(to_der(&ber), Ok(vec![0x03, 0x03, 0x04, 0xff, 0xf0]));
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x02],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x30, 0x80, 0x02, 0x01, 0x01],
            &[0x30, 0x02, 0x00, 0x00],
            &[0x00, 0x00],
            &[0x30, 0x00, 0x00],
            &[0x24, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x85, 1, 0, 0, 0, 0],
        ] {
            assert!(to_der(bad).is_err(), "{bad:02x?}");
        }
        let deep = [[0x30u8, 0x80]; 100].concat();
        assert_eq!(
            to_der(&deep),
            Err(BerError(format!("nested more than {MAX_DEPTH} deep")))
        );
    }
}
