//! A one-pass CBOR reader over borrowed bytes (RFC 8949), for contract messages that are one map
//! with text keys: [`Fields::parse`] walks the map once, keeps the values of the keys it is told
//! about (text borrowed from the input) and checks the rest for well-formedness only.
//!
//! It reproduces the ciborium 0.2 `Value` decoder it replaced, error for error, because the
//! error's text reaches dead-letter headers. Where that decoder departs from RFC 8949 the
//! departure is kept and marked "ciborium:" below; `legacy` and the differential tests pin it.

use super::DecodeError;
use std::borrow::Cow;

/// How deep arrays, maps and tags may nest, counting the top-level map (ciborium's default).
const MAX_DEPTH: usize = 256;
/// ciborium reads a byte string of at most 16 bytes under tag 2 or 3 as an integer.
const MAX_BIGNUM_BYTES: u64 = 16;
const SIMPLE_ERROR: &str = "invalid type: simple, expected known simple value";
const BREAK_ERROR: &str = "invalid type: break, expected non-break";
const BIGNUM_ERROR: &str = "integer too large";

/// Why the reader stopped, before it becomes a [`DecodeError`].
#[derive(Debug)]
enum Fault {
    /// The input ended inside an item.
    Truncated,
    /// Not well-formed at this byte offset.
    Syntax(usize),
    /// Well-formed but not accepted (ciborium's "semantic" errors).
    Semantic(&'static str),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl From<Fault> for DecodeError {
    fn from(fault: Fault) -> DecodeError {
        match fault {
            Fault::Truncated => DecodeError::Truncated,
            Fault::Syntax(at) => DecodeError::Malformed(format!("syntax error at byte {at}")),
            Fault::Semantic(msg) => DecodeError::Malformed(msg.to_owned()),
            Fault::TooDeep => DecodeError::Malformed("nesting too deep".to_owned()),
        }
    }
}

/// The head of a data item (RFC 8949 §3): major type with its argument already applied. A
/// `None` length is the indefinite length of §3.2.
#[derive(Debug, Clone, Copy)]
enum Head {
    Unsigned(u64),
    Negative(u64),
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    Tag(u64),
    Simple(u8),
    Float(f64),
    Break,
}

/// A data item, reduced to what a reader of the contract looks at: small and `Copy` (no `i128`,
/// no owned text).
#[derive(Debug, Clone, Copy)]
enum Item<'a> {
    /// An unsigned integer (major type 0, or a bignum below 2^64).
    Unsigned(u64),
    /// The negative integer -1 - n (major type 1, or a bignum above -1 - 2^64).
    Negative(u64),
    /// A floating-point number of any width.
    Float(f64),
    /// A text string of definite length.
    Text(&'a str),
    /// A text string in chunks, by the offset of its head; joined when it is read.
    Chunked(usize),
    /// Anything else, by the name error messages give it.
    Other(&'static str),
}

impl Item<'_> {
    /// The name an error message gives this item's type.
    fn type_name(&self) -> &'static str {
        match self {
            Item::Unsigned(_) | Item::Negative(_) => "integer",
            Item::Float(_) => "float",
            Item::Text(_) | Item::Chunked(_) => "text",
            Item::Other(name) => name,
        }
    }
}

/// Bytes of the argument that follows an initial byte's additional information (RFC 8949
/// §3: 24..=27 mean 1, 2, 4, 8 bytes).
fn argument_width(info: u8) -> usize {
    match info {
        24 => 1,
        25 => 2,
        26 => 4,
        _ => 8,
    }
}

/// Length of the shortest head for an argument (RFC 8949 §4.2.1, preferred serialization).
fn shortest_head_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// A half-precision float (RFC 8949 §3.3 and Appendix D). NaNs keep their payload with the quiet
/// bit set, as the `half` crate that ciborium uses converts them.
fn f16_to_f64(half: u16) -> f64 {
    let sign = if half & 0x8000 == 0 { 1.0 } else { -1.0 };
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = half & 0x3ff;
    match exponent {
        0 => sign * f64::from(mantissa) * 2f64.powi(-24),
        31 if mantissa == 0 => sign * f64::INFINITY,
        31 => f64::from_bits(
            (u64::from(half & 0x8000) << 48) | 0x7ff8_0000_0000_0000 | (u64::from(mantissa) << 42),
        ),
        _ => sign * f64::from(mantissa + 0x400) * 2f64.powi(exponent - 25),
    }
}

/// A position in the input.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Whether a tag has been read (a bignum read as an integer included).
    tagged: bool,
}

impl<'a> Cursor<'a> {
    /// The next `len` bytes.
    fn take(&mut self, len: u64) -> Result<&'a [u8], Fault> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.at.checked_add(len))
            .ok_or(Fault::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(Fault::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    /// The argument of `width` bytes, big-endian (RFC 8949 §3).
    fn argument(&mut self, width: usize) -> Result<u64, Fault> {
        let bytes = self.take(width as u64)?;
        Ok(bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Consumes a break (0xff, RFC 8949 §3.2.1) if one is next.
    fn at_break(&mut self) -> bool {
        let found = self.bytes.get(self.at) == Some(&0xff);
        self.at += usize::from(found);
        found
    }

    /// Reads one head (RFC 8949 §3). Additional information 28..=30 is reserved (§3), and
    /// indefinite length (31) exists only for major types 2..=5 and the break (§3.2): both are
    /// syntax errors at the head's first byte.
    // Inlined: a head returned through memory costs a store-forwarding stall at every item.
    #[inline(always)]
    fn raw_head(&mut self) -> Result<RawHead, Fault> {
        let start = self.at;
        let [initial] = self.take(1)? else {
            return Err(Fault::Truncated);
        };
        let (major, info) = (initial >> 5, initial & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => self.argument(argument_width(info))?,
            31 if matches!(major, 2..=5 | 7) => 0,
            _ => return Err(Fault::Syntax(start)),
        };
        Ok(RawHead { major, info, arg })
    }

    /// Reads one head, typed.
    fn head(&mut self) -> Result<Head, Fault> {
        self.raw_head().map(RawHead::typed)
    }

    /// One data item of any type, at most `depth` containers deep.
    // Inlined, with `item_after`, so that the numbers and text of a reading stay in registers.
    #[inline(always)]
    fn item(&mut self, depth: usize) -> Result<Item<'a>, Fault> {
        let start = self.at;
        let head = self.raw_head()?;
        self.item_after(head, start, depth)
    }

    /// The rest of the item whose head, starting at `start`, has been read.
    #[inline(always)]
    fn item_after(&mut self, head: RawHead, start: usize, depth: usize) -> Result<Item<'a>, Fault> {
        match (head.major, head.info) {
            (0, _) => Ok(Item::Unsigned(head.arg)),
            (1, _) => Ok(Item::Negative(head.arg)),
            (3, 0..=27) => self.text(start, Some(head.arg)),
            (7, 25..=27) => Ok(Item::Float(float(head.info, head.arg))),
            _ => self.other(head.typed(), start, depth),
        }
    }

    /// The rest of any item; `item_after` handles numbers and text itself, inline.
    fn other(&mut self, head: Head, start: usize, depth: usize) -> Result<Item<'a>, Fault> {
        Ok(match head {
            Head::Bytes(len) => {
                self.string(len, false, None)?;
                Item::Other("byte string")
            }
            Head::Array(len) => {
                self.array(len, depth)?;
                Item::Other("array")
            }
            Head::Map(len) => {
                self.map(len, depth)?;
                Item::Other("map")
            }
            Head::Tag(tag) => self.tagged(tag, depth)?,
            Head::Simple(20 | 21) => Item::Other("bool"),
            // ciborium: `undefined` (23) reads as null.
            Head::Simple(22 | 23) => Item::Other("null"),
            Head::Simple(_) => return Err(Fault::Semantic(SIMPLE_ERROR)),
            Head::Break => return Err(Fault::Semantic(BREAK_ERROR)),
            Head::Unsigned(n) => Item::Unsigned(n),
            Head::Negative(n) => Item::Negative(n),
            Head::Float(f) => Item::Float(f),
            Head::Text(len) => self.text(start, len)?,
        })
    }

    /// A text string's content (RFC 8949 §3.1 major type 3, §3.2.3 chunks), checked as UTF-8.
    #[inline(always)]
    fn text(&mut self, start: usize, len: Option<u64>) -> Result<Item<'a>, Fault> {
        let Some(len) = len else {
            self.string(None, true, None)?;
            return Ok(Item::Chunked(start));
        };
        // ciborium reports invalid UTF-8 at the head's offset plus the bytes by which the head is
        // longer than the shortest one for its length: it pushes a head it peeked at back in
        // the shortest form (RFC 8949 §4.2.1) and counts the offset from that.
        let longer = (self.at - start).saturating_sub(shortest_head_len(len));
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(Item::Text)
            .map_err(|_| Fault::Syntax(start + longer))
    }

    /// A byte or text string of length `len`, or in chunks (RFC 8949 §3.2.3); text chunks are
    /// appended to `out` if given. Each chunk is a definite string of the same major type, valid
    /// UTF-8 on its own for text. ciborium: a chunk may itself be indefinite, its chunks nested
    /// inside, each level ended by its own break.
    fn string(
        &mut self,
        len: Option<u64>,
        text: bool,
        mut out: Option<&mut String>,
    ) -> Result<(), Fault> {
        if let Some(len) = len {
            return self.take(len).map(drop);
        }
        let mut open = 1usize;
        while open > 0 {
            let start = self.at;
            match (self.head()?, text) {
                (Head::Break, _) => open -= 1,
                (Head::Bytes(None), false) | (Head::Text(None), true) => open += 1,
                (Head::Bytes(Some(len)), false) => {
                    self.take(len)?;
                }
                (Head::Text(Some(len)), true) => {
                    let chunk = std::str::from_utf8(self.take(len)?);
                    let chunk = chunk.map_err(|_| Fault::Syntax(start))?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push_str(chunk);
                    }
                }
                _ => return Err(Fault::Syntax(start)),
            }
        }
        Ok(())
    }

    /// An array's elements (RFC 8949 §3.1 major type 4; §3.2.2 indefinite length).
    fn array(&mut self, len: Option<u64>, depth: usize) -> Result<(), Fault> {
        let inner = depth.checked_sub(1).ok_or(Fault::TooDeep)?;
        self.entries(len, |cur| cur.item(inner).map(drop))
    }

    /// A map's keys and values, checked only (RFC 8949 §3.1 major type 5).
    fn map(&mut self, len: Option<u64>, depth: usize) -> Result<(), Fault> {
        let inner = depth.checked_sub(1).ok_or(Fault::TooDeep)?;
        self.entries(len, |cur| {
            cur.item(inner)?;
            cur.item(inner).map(drop)
        })
    }

    /// Calls `entry` `len` times, or until a break where an entry would start (RFC 8949 §3.2.2).
    /// Each entry consumes at least one byte, so a huge `len` ends at the end of the input.
    fn entries(
        &mut self,
        len: Option<u64>,
        mut entry: impl FnMut(&mut Self) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        match len {
            Some(len) => (0..len).try_for_each(|_| entry(self)),
            None => {
                while !self.at_break() {
                    entry(self)?;
                }
                Ok(())
            }
        }
    }

    /// A tagged item (RFC 8949 §3.4). Bignums (§3.4.3, tags 2 and 3 on a definite byte string
    /// of at most 16 bytes) are integers when they fit in the range of major types 0 and 1, and
    /// do not count towards the depth; every other tag wraps its item and counts one level.
    fn tagged(&mut self, tag: u64, depth: usize) -> Result<Item<'a>, Fault> {
        self.tagged = true;
        let start = self.at;
        let head = self.head()?;
        match (tag, head) {
            (2 | 3, Head::Bytes(Some(len))) if len <= MAX_BIGNUM_BYTES => {
                let raw = self.take(len)?;
                bignum(
                    tag == 3,
                    raw.iter().fold(0, |acc, &b| (acc << 8) | u128::from(b)),
                )
            }
            _ => {
                let inner = depth.checked_sub(1).ok_or(Fault::TooDeep)?;
                self.other(head, start, inner)?;
                Ok(Item::Other("tagged item"))
            }
        }
    }
}

/// A head as read (RFC 8949 §3): major type, additional information, and argument (0 for an
/// indefinite length). Plain integers, so that the hot path keeps it in registers.
#[derive(Debug, Clone, Copy)]
struct RawHead {
    major: u8,
    info: u8,
    arg: u64,
}

impl RawHead {
    /// The head's meaning. Major type 7 (RFC 8949 §3.3) holds simple values and floats;
    /// ciborium: a one-byte simple value below 32 (not well-formed, §3.3) is read like the same
    /// value in the initial byte.
    fn typed(self) -> Head {
        let len = (self.info != 31).then_some(self.arg);
        match (self.major, self.info) {
            (0, _) => Head::Unsigned(self.arg),
            (1, _) => Head::Negative(self.arg),
            (2, _) => Head::Bytes(len),
            (3, _) => Head::Text(len),
            (4, _) => Head::Array(len),
            (5, _) => Head::Map(len),
            (6, _) => Head::Tag(self.arg),
            (_, 0..=24) => Head::Simple(self.arg as u8),
            (_, 25..=27) => Head::Float(float(self.info, self.arg)),
            _ => Head::Break,
        }
    }
}

/// The float of additional information 25, 26 or 27 (RFC 8949 §3.3: half, single, double).
fn float(info: u8, bits: u64) -> f64 {
    match info {
        25 => f16_to_f64(bits as u16),
        26 => f64::from(f32::from_bits(bits as u32)),
        _ => f64::from_bits(bits),
    }
}

/// The integer a bignum's magnitude stands for (RFC 8949 §3.4.3: tag 3 means -1 - n).
fn bignum(negative: bool, n: u128) -> Result<Item<'static>, Fault> {
    if negative && i128::try_from(n).is_err() {
        return Err(Fault::Semantic(BIGNUM_ERROR));
    }
    Ok(match u64::try_from(n) {
        Ok(n) if negative => Item::Negative(n),
        Ok(n) => Item::Unsigned(n),
        Err(_) => Item::Other("tagged item"),
    })
}

/// The text of a chunked string whose head is at `at` (already checked by the walk).
fn joined(bytes: &[u8], at: usize) -> Result<String, Fault> {
    let mut cur = Cursor {
        bytes,
        at,
        tagged: false,
    };
    let mut out = String::new();
    cur.head()?;
    cur.string(None, true, Some(&mut out))?;
    Ok(out)
}

/// The top-level map of a message: the values of its known text keys, by index in `names`.
/// Entries with other keys are checked and dropped (readers tolerate what they do not know).
pub(crate) struct Fields<'a, const N: usize> {
    bytes: &'a [u8],
    names: &'static [&'static str; N],
    items: [Option<Item<'a>>; N],
    /// Whether the map had an entry whose key is not one of `names` as a definite-length text
    /// string (an unknown key, a key of another type, a key in chunks), or a tag anywhere.
    others: bool,
}

/// What the walk of the top-level map found besides the known fields.
struct Walk<'a> {
    /// Text keys not in `names`, for the duplicate check.
    unknown: Vec<Cow<'a, str>>,
    /// The first key equal to an earlier one.
    duplicate: Option<Cow<'a, str>>,
    /// Where the next key most likely is in `names` (messages list keys in `names` order, with
    /// absent optional keys left out).
    hint: usize,
}

impl<'a, const N: usize> Fields<'a, N> {
    /// Parses `bytes` as exactly one CBOR map, bounded by `max` bytes, keeping the values of the
    /// keys in `names`. Errors come in the old decoder's order: the first fault in the input;
    /// trailing bytes; not a map; a duplicate text key (RFC 8949 §5.6).
    ///
    /// Same errors as ciborium for `max` up to 4096, its scratch buffer: ciborium reads a longer
    /// definite string in 4096-byte pieces, and could find bad UTF-8 in the first piece before
    /// the end of the input; here every string longer than what is left is truncated.
    pub(crate) fn parse(
        bytes: &'a [u8],
        max: usize,
        names: &'static [&'static str; N],
    ) -> Result<Fields<'a, N>, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max,
            });
        }
        let mut cur = Cursor {
            bytes,
            at: 0,
            tagged: false,
        };
        let head = cur.head()?;
        let Head::Map(len) = head else {
            let item = cur.other(head, 0, MAX_DEPTH)?;
            trailing(&cur)?;
            return Err(DecodeError::NotAMap(item.type_name()));
        };
        let mut fields = Fields {
            bytes,
            names,
            items: [None; N],
            others: false,
        };
        let duplicate = fields.walk(&mut cur, len)?;
        fields.others |= cur.tagged;
        trailing(&cur)?;
        match duplicate {
            Some(key) => Err(DecodeError::DuplicateKey(key.into_owned())),
            None => Ok(fields),
        }
    }

    /// Reads the entries of the top-level map, whose head has been read; the first repeated
    /// text key, if any.
    fn walk(
        &mut self,
        cur: &mut Cursor<'a>,
        len: Option<u64>,
    ) -> Result<Option<Cow<'a, str>>, Fault> {
        let inner = MAX_DEPTH - 1;
        let mut walk = Walk {
            unknown: Vec::new(),
            duplicate: None,
            hint: 0,
        };
        cur.entries(len, |cur| {
            let key = cur.item(inner)?;
            let value = cur.item(inner)?;
            match key {
                Item::Text(key) => self.keep(&mut walk, Cow::Borrowed(key), value),
                Item::Chunked(at) => {
                    self.others = true;
                    self.keep(&mut walk, Cow::Owned(joined(cur.bytes, at)?), value)
                }
                _ => self.others = true,
            }
            Ok(())
        })?;
        Ok(walk.duplicate)
    }

    /// Files one text-keyed entry: a known key's value in its slot, an unknown key in the list;
    /// notes the first repeated key.
    fn keep(&mut self, walk: &mut Walk<'a>, key: Cow<'a, str>, value: Item<'a>) {
        let known = |i: &usize| self.names.get(*i) == Some(&key.as_ref());
        // Search on from the hint, then from the start: keys in `names` order with absent
        // optional ones between them are found a few steps on (names are distinct).
        let found = (walk.hint..N).chain(0..walk.hint).find(known);
        let repeated = match found {
            Some(i) => {
                walk.hint = i + 1;
                self.items
                    .get_mut(i)
                    .and_then(|slot| slot.replace(value))
                    .is_some()
            }
            None if walk.unknown.contains(&key) => true,
            None => {
                self.others = true;
                walk.unknown.push(key.clone());
                false
            }
        };
        if repeated && walk.duplicate.is_none() {
            walk.duplicate = Some(key);
        }
    }

    /// Whether the map had entries besides the known keys as definite-length text, or a tag (a
    /// bignum integer included: serde's decoders do not all read those as the reader does).
    pub(crate) fn has_others(&self) -> bool {
        self.others
    }

    fn take(&mut self, i: usize) -> Option<Item<'a>> {
        self.items.get_mut(i).and_then(Option::take)
    }

    fn name(&self, i: usize) -> &'static str {
        self.names.get(i).copied().unwrap_or_default()
    }

    fn wrong(&self, i: usize, expected: &'static str, found: &Item<'_>) -> DecodeError {
        DecodeError::WrongType {
            field: self.name(i),
            expected,
            found: found.type_name().to_owned(),
        }
    }

    /// An optional unsigned integer field, `names[i]`.
    pub(crate) fn opt_u64(&mut self, i: usize) -> Result<Option<u64>, DecodeError> {
        match self.take(i) {
            None => Ok(None),
            Some(Item::Unsigned(n)) => Ok(Some(n)),
            Some(Item::Negative(n)) => Err(DecodeError::WrongType {
                field: self.name(i),
                expected: "an unsigned integer",
                found: format!("integer {}", -1 - i128::from(n)),
            }),
            Some(other) => Err(self.wrong(i, "an unsigned integer", &other)),
        }
    }

    /// A required unsigned integer field.
    pub(crate) fn u64(&mut self, i: usize) -> Result<u64, DecodeError> {
        self.opt_u64(i)?
            .ok_or(DecodeError::MissingField(self.name(i)))
    }

    /// An optional unsigned integer field that must fit in `u32`.
    pub(crate) fn opt_u32(&mut self, i: usize) -> Result<Option<u32>, DecodeError> {
        let Some(n) = self.opt_u64(i)? else {
            return Ok(None);
        };
        u32::try_from(n)
            .map(Some)
            .map_err(|_| DecodeError::WrongType {
                field: self.name(i),
                expected: "an unsigned integer below 2^32",
                found: n.to_string(),
            })
    }

    /// A required unsigned integer field that must fit in `u32`.
    pub(crate) fn u32(&mut self, i: usize) -> Result<u32, DecodeError> {
        self.opt_u32(i)?
            .ok_or(DecodeError::MissingField(self.name(i)))
    }

    /// An optional number. Integers are accepted where the contract says float: a device that
    /// sends `0` for `0.0` is speaking the contract.
    // Integers convert with rounding to nearest, like the i128 -> f64 of the old decoder; exact
    // for every value a sensor could mean.
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn opt_f64(&mut self, i: usize) -> Result<Option<f64>, DecodeError> {
        match self.take(i) {
            None => Ok(None),
            Some(Item::Float(f)) => Ok(Some(f)),
            Some(Item::Unsigned(n)) => Ok(Some(n as f64)),
            Some(Item::Negative(n)) => Ok(Some((-1 - i128::from(n)) as f64)),
            Some(other) => Err(self.wrong(i, "a number", &other)),
        }
    }

    /// A required number.
    pub(crate) fn f64(&mut self, i: usize) -> Result<f64, DecodeError> {
        self.opt_f64(i)?
            .ok_or(DecodeError::MissingField(self.name(i)))
    }

    /// A required text field, borrowed from the input unless it came in chunks.
    pub(crate) fn str(&mut self, i: usize) -> Result<Cow<'a, str>, DecodeError> {
        match self.take(i) {
            None => Err(DecodeError::MissingField(self.name(i))),
            Some(Item::Text(text)) => Ok(Cow::Borrowed(text)),
            Some(Item::Chunked(at)) => Ok(Cow::Owned(joined(self.bytes, at)?)),
            Some(other) => Err(self.wrong(i, "text", &other)),
        }
    }

    /// A required text field, owned.
    pub(crate) fn text(&mut self, i: usize) -> Result<String, DecodeError> {
        self.str(i).map(Cow::into_owned)
    }
}

/// A value a fast path leaves to the full decoder: not in the plain form our producers write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unusual;

impl<'a, const N: usize> Fields<'a, N> {
    /// Whether `names[i]` was absent from the map.
    pub(crate) fn is_absent(&self, i: usize) -> bool {
        self.items.get(i).is_none_or(Option::is_none)
    }

    /// `names[i]` if absent or a plain unsigned integer.
    pub(crate) fn plain_u64(&mut self, i: usize) -> Result<Option<u64>, Unusual> {
        match self.take(i) {
            None => Ok(None),
            Some(Item::Unsigned(n)) => Ok(Some(n)),
            Some(_) => Err(Unusual),
        }
    }

    /// `names[i]` if absent or a float that is not NaN (whose payload bits a conversion from a
    /// narrower float may not keep alike in two decoders).
    pub(crate) fn plain_f64(&mut self, i: usize) -> Result<Option<f64>, Unusual> {
        match self.take(i) {
            None => Ok(None),
            Some(Item::Float(f)) if !f.is_nan() => Ok(Some(f)),
            Some(_) => Err(Unusual),
        }
    }

    /// `names[i]` if absent or a definite-length text string.
    pub(crate) fn plain_str(&mut self, i: usize) -> Result<Option<&'a str>, Unusual> {
        match self.take(i) {
            None => Ok(None),
            Some(Item::Text(t)) => Ok(Some(t)),
            Some(_) => Err(Unusual),
        }
    }
}

/// RFC 8949 §5.1 (well-formed): the item must end the input.
fn trailing(cur: &Cursor<'_>) -> Result<(), DecodeError> {
    match cur.bytes.len().saturating_sub(cur.at) {
        0 => Ok(()),
        n => Err(DecodeError::Malformed(format!(
            "{n} trailing bytes after the item"
        ))),
    }
}
