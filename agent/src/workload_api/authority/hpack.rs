//! An HPACK decoder (RFC 7541), for the `:authority` rewrite: it follows
//! the client's dynamic table and hands each field to a callback.
//!
//! Written here rather than taken from a crate: `h2` keeps its decoder
//! private, and the published ones either build a Huffman table for every
//! string they decode (loona-hpack, hpack: about 50 µs a string, half a
//! millisecond per gRPC request, which would double the cached
//! `FetchX509SVID` latency) or index past their input on truncated integers
//! (httlib-hpack). HPACK is frozen; its two tables below were generated
//! from two independent implementations (`h2`'s and loona-hpack's) that
//! agree, and the tests check this decoder against loona-hpack on
//! arbitrary input.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// Why a header block does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ends inside a field.
    #[error("the block ends inside a field")]
    Truncated,
    /// An integer longer than any this decoder accepts (2^28).
    #[error("an integer is longer than 2^28")]
    IntegerTooLarge,
    /// An index that names no entry of the static or dynamic table.
    #[error("index {0} names no table entry")]
    BadIndex(usize),
    /// A dynamic table size update above what the server advertised.
    #[error("dynamic table size update to {size} exceeds the advertised {max}")]
    TableSizeTooLarge {
        /// The size asked for.
        size: usize,
        /// The size the server advertised.
        max: usize,
    },
    /// A dynamic table size update after the block's first field.
    #[error("dynamic table size update after the block's first field")]
    LateTableSizeUpdate,
    /// A Huffman-coded string containing EOS, or padded with more than 7
    /// bits or with bits other than EOS's.
    #[error("invalid Huffman-coded string")]
    Huffman,
}

/// Decodes a connection's header blocks, in order.
#[derive(Debug)]
pub struct Decoder {
    /// Newest entry first (index 62).
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// RFC 7541 §4.1 size of the entries.
    size: usize,
    /// The current maximum size, as the client last set it.
    max_size: usize,
    /// What the server advertised: no update may go above it.
    allowed: usize,
    /// The field being decoded (reused).
    name: Vec<u8>,
    value: Vec<u8>,
}

/// The largest integer accepted: lengths, indices and sizes are far below.
const MAX_INTEGER: u64 = 1 << 28;
/// RFC 7541 §4.1: what an entry costs beyond its name and value.
const ENTRY_OVERHEAD: usize = 32;

impl Decoder {
    /// A decoder for a connection whose server advertised a dynamic table
    /// of `allowed` bytes (the client starts with that size, §4.2).
    pub fn new(allowed: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: allowed,
            allowed,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Decodes one complete header block, calling `field` with each field's
    /// name and value in order. After an error the connection must be
    /// dropped (the dynamic table may be half updated).
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut first = true;
        while let Some(&byte) = block.first() {
            if byte & 0x80 != 0 {
                // Indexed field (§6.1).
                let (index, rest) = integer(block, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
                block = rest;
            } else if byte & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), only before the first
                // field (§4.2).
                if !first {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let (size, rest) = integer(block, 5)?;
                if size > self.allowed {
                    return Err(HpackError::TableSizeTooLarge {
                        size,
                        max: self.allowed,
                    });
                }
                self.max_size = size;
                self.evict(0);
                block = rest;
                continue;
            } else {
                // Literal (§6.2): with incremental indexing (01), without
                // indexing (0000) or never indexed (0001).
                let indexing = byte & 0x40 != 0;
                let (index, rest) = integer(block, if indexing { 6 } else { 4 })?;
                let mut name = std::mem::take(&mut self.name);
                let mut value = std::mem::take(&mut self.value);
                name.clear();
                value.clear();
                let rest = if index == 0 {
                    string(rest, &mut name)?
                } else {
                    name.extend_from_slice(self.entry(index)?.0);
                    rest
                };
                let rest = string(rest, &mut value)?;
                field(&name, &value);
                if indexing {
                    self.insert(name.clone(), value.clone());
                }
                self.name = name;
                self.value = value;
                block = rest;
            }
            first = false;
        }
        Ok(())
    }

    /// The entry at `index` of the static and dynamic tables (§2.3.3).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex(0)),
            1..=61 => Ok(STATIC_TABLE[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    /// Adds an entry, evicting the oldest as needed (§4.4); an entry larger
    /// than the table empties it and is not added.
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit (§4.3, §4.4).
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else {
                // Empty: nothing is left to account for.
                self.size = 0;
                return;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with a `prefix`-bit prefix (§5.1) at the start of `block`,
/// and the rest of the block.
fn integer(block: &[u8], prefix: u32) -> Result<(usize, &[u8]), HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    // prefix is 4 to 7: the mask fits in a byte.
    let max = ((1u16 << prefix) - 1) as u8;
    let mut value = u64::from(first & max);
    if value < u64::from(max) {
        return Ok((value as usize, rest));
    }
    let mut shift = 0;
    loop {
        let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
        rest = tail;
        value += u64::from(byte & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerTooLarge);
        }
        if byte & 0x80 == 0 {
            // At most 2^28: fits in usize.
            return Ok((value as usize, rest));
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerTooLarge);
        }
    }
}

/// A string literal (§5.2) at the start of `block`, decoded if
/// Huffman-coded, appended to `out`; returns the rest of the block.
fn string<'b>(block: &'b [u8], out: &mut Vec<u8>) -> Result<&'b [u8], HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, rest) = integer(block, 7)?;
    let (raw, rest) = rest.split_at_checked(len).ok_or(HpackError::Truncated)?;
    if huffman {
        huffman_decode(raw, out)?;
    } else {
        out.extend_from_slice(raw);
    }
    Ok(rest)
}

/// Marks a leaf of [`huffman_tree`]: the rest of the `u16` is the symbol.
const LEAF: u16 = 0x8000;
/// An absent child (the code is complete, so only a corrupt table has one).
const NONE: u16 = 0;
const EOS: u16 = 256;

/// The Huffman code as a binary tree: node `i` has children `[0-bit,
/// 1-bit]`, each a node index or `LEAF | symbol`. Built once.
fn huffman_tree() -> &'static [[u16; 2]] {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut tree = vec![[NONE; 2]];
        for (symbol, &(code, bits)) in (0u16..).zip(HUFFMAN_CODES.iter()) {
            let mut node = 0;
            for i in (0..bits).rev() {
                let bit = usize::from((code >> i) & 1 == 1);
                if i == 0 {
                    tree[node][bit] = LEAF | symbol;
                } else {
                    if tree[node][bit] == NONE {
                        // At most 2 x 257 nodes: fits in 15 bits.
                        tree.push([NONE; 2]);
                        tree[node][bit] = (tree.len() - 1) as u16;
                    }
                    node = usize::from(tree[node][bit]);
                }
            }
        }
        tree
    })
}

/// Decodes a Huffman-coded string (§5.2) onto `out`.
fn huffman_decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let tree = huffman_tree();
    let mut node = 0usize;
    // Bits since the last symbol, and whether they were all ones (a prefix
    // of EOS, the only padding allowed).
    let mut pending = 0u32;
    let mut all_ones = true;
    for &byte in coded {
        for i in (0..8).rev() {
            let bit = (byte >> i) & 1;
            let next = tree[node][usize::from(bit)];
            pending += 1;
            all_ones &= bit == 1;
            if next & LEAF != 0 {
                let symbol = next & !LEAF;
                if symbol == EOS {
                    return Err(HpackError::Huffman);
                }
                // Symbols below 256 are bytes.
                out.push(symbol as u8);
                node = 0;
                pending = 0;
                all_ones = true;
            } else if next == NONE {
                return Err(HpackError::Huffman);
            } else {
                node = usize::from(next);
            }
        }
    }
    if pending > 7 || !all_ones {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// The static table (RFC 7541 Appendix A), indices 1 to 61.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The Huffman code (RFC 7541 Appendix B): (code, length in bits) of
/// each byte value, then of EOS (256).
const HUFFMAN_CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
        Ok(fields)
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Huffman-codes `s` with this module's table (EOS-padded).
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &b in s {
            let (code, len) = HUFFMAN_CODES[usize::from(b)];
            acc = acc << len | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push((acc << (8 - bits)) as u8 | (0xff >> bits));
        }
        out
    }

    #[test]
    fn the_huffman_code_is_complete_and_agrees_with_loona_hpack() {
        // Complete: every node has both children (no input is undecodable
        // for want of a code).
        let tree = huffman_tree();
        assert_eq!(tree.len(), 256);
        assert!(tree.iter().flatten().all(|&child| child != NONE));
        // Every byte, coded with this table, decoded by another
        // implementation's, and by this one.
        for b in 0..=255u8 {
            let coded = huffman_encode(&[b, b'a', b]);
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&coded)
                .unwrap();
            assert_eq!(theirs, [b, b'a', b]);
            let mut ours = Vec::new();
            huffman_decode(&coded, &mut ours).unwrap();
            assert_eq!(ours, [b, b'a', b]);
        }
    }

    #[test]
    fn bad_huffman_strings_are_refused() {
        // EOS itself (30 ones), padding of 8 bits, padding with a zero bit.
        for coded in [&[0xff, 0xff, 0xff, 0xfc][..], &[0x1f, 0xff], &[0x1e]] {
            assert_eq!(
                huffman_decode(coded, &mut Vec::new()),
                Err(HpackError::Huffman),
                "{coded:x?}"
            );
        }
        // "a" (00011) padded with three ones is fine.
        let mut out = Vec::new();
        huffman_decode(&[0x1f], &mut out).unwrap();
        assert_eq!(out, b"a");
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman_coding() {
        let mut decoder = Decoder::new(4096);
        let first = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(decode(&mut decoder, &first).unwrap(), fields(&base));
        let second = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        let mut expected = base.to_vec();
        expected.push(("cache-control", "no-cache"));
        assert_eq!(decode(&mut decoder, &second).unwrap(), fields(&expected));
        let third = [
            0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
            0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
        ];
        assert_eq!(
            decode(&mut decoder, &third).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.table.len(), 3);
        assert_eq!(decoder.size, 164);
    }

    #[test]
    fn rfc_7541_c6_eviction_with_a_256_byte_table() {
        let mut decoder = Decoder::new(256);
        let first = [
            0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0,
            0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81,
            0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e, 0x91, 0x9d, 0x29, 0xad, 0x17, 0x18,
            0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
        ];
        let date = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let location = ("location", "https://www.example.com");
        assert_eq!(
            decode(&mut decoder, &first).unwrap(),
            fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                date,
                location
            ])
        );
        assert_eq!(decoder.size, 222);
        let second = [0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
        assert_eq!(
            decode(&mut decoder, &second).unwrap(),
            fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                date,
                location
            ])
        );
        assert_eq!(decoder.size, 222);
        let third = [
            0x88, 0xc1, 0x61, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20,
            0x05, 0x95, 0x04, 0x0b, 0x81, 0x66, 0xe0, 0x84, 0xa6, 0x2d, 0x1b, 0xff, 0xc0, 0x5a,
            0x83, 0x9b, 0xd9, 0xab, 0x77, 0xad, 0x94, 0xe7, 0x82, 0x1d, 0xd7, 0xf2, 0xe6, 0xc7,
            0xb3, 0x35, 0xdf, 0xdf, 0xcd, 0x5b, 0x39, 0x60, 0xd5, 0xaf, 0x27, 0x08, 0x7f, 0x36,
            0x72, 0xc1, 0xab, 0x27, 0x0f, 0xb5, 0x29, 0x1f, 0x95, 0x87, 0x31, 0x60, 0x65, 0xc0,
            0x03, 0xed, 0x4e, 0xe5, 0xb1, 0x06, 0x3d, 0x50, 0x07,
        ];
        assert_eq!(
            decode(&mut decoder, &third).unwrap(),
            fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                location,
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                ),
            ])
        );
        assert_eq!(decoder.size, 215);
        assert_eq!(decoder.table.len(), 3);
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let cases: [(&[u8], HpackError); 9] = [
            (&[0x80], HpackError::BadIndex(0)),
            (&[0xbe], HpackError::BadIndex(62)),
            (&[0x7f], HpackError::Truncated),
            (&[0x41, 0x05, b'a'], HpackError::Truncated),
            (&[0x00], HpackError::Truncated),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                HpackError::IntegerTooLarge,
            ),
            (
                &[0x3f, 0xe2, 0x1f],
                HpackError::TableSizeTooLarge {
                    size: 4097,
                    max: 4096,
                },
            ),
            (&[0x82, 0x20], HpackError::LateTableSizeUpdate),
            (&[0x41, 0x81, 0x00], HpackError::Huffman),
        ];
        for (block, expected) in cases {
            assert_eq!(
                decode(&mut Decoder::new(4096), block),
                Err(expected),
                "{block:x?}"
            );
        }
        // A size update first, then fields, is fine; so is a smaller table.
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decode(&mut decoder, &[0x20, 0x3f, 0xe1, 0x1f, 0x82]).unwrap(),
            fields(&[(":method", "GET")])
        );
        assert_eq!(decoder.max_size, 4096);
    }

    /// One field representation, as a client might choose it.
    #[derive(Debug, Clone)]
    enum Rep {
        /// Index into the static table (1-61) or, modulo its length, the
        /// dynamic table.
        Indexed(usize),
        /// Literal: representation bits (0x40 indexing, 0x00 without, 0x10
        /// never), name index (0 = literal name), name, value, Huffman.
        Literal(u8, usize, Vec<u8>, Vec<u8>, bool),
    }

    fn rep() -> impl Strategy<Value = Rep> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (1usize..200).prop_map(Rep::Indexed),
            (
                prop_oneof![Just(0x40u8), Just(0x00), Just(0x10)],
                0usize..70,
                bytes(),
                bytes(),
                any::<bool>()
            )
                .prop_map(|(kind, index, name, value, huffman)| Rep::Literal(
                    kind, index, name, value, huffman
                )),
        ]
    }

    fn push_integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    fn push_string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
        if huffman {
            let coded = huffman_encode(s);
            push_integer(out, 0x80, 7, coded.len());
            out.extend(coded);
        } else {
            push_integer(out, 0, 7, s.len());
            out.extend_from_slice(s);
        }
    }

    fn encode(reps: &[Rep], table_len: &mut usize) -> Vec<u8> {
        let mut out = Vec::new();
        for rep in reps {
            match rep {
                Rep::Indexed(i) => {
                    let index = if *i <= 61 || *table_len == 0 {
                        (*i).min(61)
                    } else {
                        62 + i % *table_len
                    };
                    push_integer(&mut out, 0x80, 7, index);
                }
                Rep::Literal(kind, index, name, value, huffman) => {
                    let prefix = if *kind == 0x40 { 6 } else { 4 };
                    let index = if *index > 61 { 0 } else { *index };
                    push_integer(&mut out, *kind, prefix, index);
                    if index == 0 {
                        push_string(&mut out, name, *huffman);
                    }
                    push_string(&mut out, value, *huffman);
                    if *kind == 0x40 {
                        // An upper bound: evictions only make indices fail
                        // in both decoders alike.
                        *table_len += 1;
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Blocks of every representation, over one connection with a small
        /// table (so entries are evicted): this decoder and loona-hpack
        /// agree on every field, or both refuse the block.
        #[test]
        fn agrees_with_loona_hpack(
            blocks in proptest::collection::vec(proptest::collection::vec(rep(), 0..12), 1..6),
            table in prop_oneof![Just(4096usize), Just(256), Just(64)],
        ) {
            let mut ours = Decoder::new(table);
            let mut theirs = loona_hpack::Decoder::new();
            theirs.set_max_allowed_table_size(table);
            theirs.set_max_table_size(table);
            let mut table_len = 0;
            for reps in &blocks {
                let block = encode(reps, &mut table_len);
                let expected = theirs.decode(&block);
                let got = decode(&mut ours, &block);
                match (expected, got) {
                    (Ok(expected), Ok(got)) => prop_assert_eq!(got, expected),
                    (Err(_), Err(_)) => break,
                    (expected, got) => prop_assert!(false, "loona {expected:?}, ours {got:?}"),
                }
            }
        }

        #[test]
        fn arbitrary_blocks_never_panic(
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..6),
        ) {
            let mut decoder = Decoder::new(4096);
            for block in &blocks {
                if decode(&mut decoder, block).is_err() {
                    break;
                }
            }
        }
    }
}
