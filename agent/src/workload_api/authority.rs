//! Makes every Workload API request's HTTP/2 `:authority` one that `h2`
//! accepts, so gRPC clients other than grpc-go and tonic can call the agent.
//!
//! # Why
//!
//! On a Unix socket there is no host, and gRPC clients disagree on what to
//! send as `:authority`: grpc-go and tonic send `localhost` or a placeholder
//! host, gRPC C-core (grpcio for Python, and Ruby, PHP, C++, C#) sends the
//! socket path percent-encoded (`tmp%2Fagent%2Fapi.sock`, since C-core 1.57),
//! grpc-java sends the raw path. The `http` crate's `Authority` refuses a
//! `%` in a host and a `/` anywhere, and `h2` answers such a request with
//! `RST_STREAM(PROTOCOL_ERROR)` before tonic sees it: the client reports
//! `INTERNAL` on every call. Neither crate has a way around it today: `h2`
//! 0.4.21 has no option to skip the check (hyperium/h2#487 is open) and
//! `http` 1.5.0 still refuses percent-encoded hosts (hyperium/http#836,
//! #861 are open). Patching `h2` (`[patch.crates-io]`) would mean carrying
//! a fork through every `h2` security release; this module keeps `h2` as
//! published and is removable the day `http` accepts these authorities
//! (a test says when).
//!
//! The Workload API identifies callers by the kernel (peer credentials, a
//! pidfd), never by authority, so the agent may accept any. This module
//! sits on each connection's inbound bytes, below `h2`, and replaces a
//! `:authority` that `http` refuses by `localhost` (what grpc-go sends); an
//! authority `http` accepts is left as it is, so this does nothing for
//! clients that already work, and nothing at all once `http` accepts
//! percent-encoded hosts.
//!
//! # How
//!
//! HPACK compresses header blocks against a dynamic table that the client's
//! encoder and the server's decoder build together over the connection, so
//! one field cannot be changed in place. Instead every header block
//! (HEADERS and its CONTINUATION frames) is decoded here with a decoder that
//! follows the client's table ([`hpack`]), and re-encoded as literal fields
//! "without indexing", which never touch the dynamic table: `h2`'s decoder
//! then keeps an empty table and needs nothing from the client's. For a
//! new connection with one gRPC request this costs a few microseconds.
//! Everything else passes byte for byte: the client preface, every other
//! frame (DATA, SETTINGS, PING, ...) and, for a connection that does not
//! start with the HTTP/2 preface, the whole connection.
//!
//! What this relies on, each checked by a test (the agent's SETTINGS by
//! `tests/e2e/authority.rs`, against a running agent):
//! - `h2` advertises the default `SETTINGS_HEADER_TABLE_SIZE` (4096): the
//!   client's table is never larger ([`HEADER_TABLE_SIZE`]). Neither hyper
//!   nor tonic changes it unless told to.
//! - frames written here are at most 16 KiB, the smallest
//!   `SETTINGS_MAX_FRAME_SIZE` a peer may advertise, so `h2` takes them
//!   whatever it advertises.
//! - a header block (compressed, or decoded as RFC 7541 counts it) larger
//!   than [`MAX_HEADER_BLOCK`] closes the connection; that is four times
//!   what hyper lets `h2` accept, so ordinary oversize requests still get
//!   `h2`'s own answer.
//!
//! The same pass recognizes the answer to the agent's liveness challenge
//! (see [`super::connection`]): the first PING ACK whose 8 bytes are the
//! challenge's is taken out of the stream (`h2` did not send that PING and
//! must not see its answer) and reported by [`AuthorityRewrite::take_answer`].
//! Every other PING passes unchanged.
//!
//! Malformed framing that would leave the HPACK state unknown (a header
//! block interrupted by another frame, a `CONTINUATION` out of place, bad
//! padding, a block that does not decode) closes the connection, as `h2`
//! itself would with a connection error.

use http::uri::Authority;
use tokio::io::ReadBuf;

use self::hpack::{Decoder, HpackError};

pub mod hpack;

/// What a client sends first on an HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
/// A PING frame's payload: opaque data, echoed in the ACK.
pub const PING_LEN: usize = 8;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The priority fields of a HEADERS frame: stream dependency and weight.
const PRIORITY_LEN: usize = 5;
/// Pad length byte, at most 255 bytes of padding, the priority fields.
const HEADERS_OVERHEAD: usize = 1 + 255 + PRIORITY_LEN;

/// The HPACK dynamic table size the agent's HTTP/2 server advertises: the
/// protocol's default, as neither hyper nor tonic sets
/// `SETTINGS_HEADER_TABLE_SIZE`. A client's dynamic table is never larger.
pub const HEADER_TABLE_SIZE: usize = 4096;

/// The largest frame payload written: the initial
/// `SETTINGS_MAX_FRAME_SIZE`, which every HTTP/2 peer accepts.
pub const MAX_FRAME_PAYLOAD: usize = 16_384;

/// The largest header block accepted, compressed or decoded (name, value
/// and 32 bytes per field, as RFC 7541 §4.1 counts): four times hyper's
/// default `SETTINGS_MAX_HEADER_LIST_SIZE` (16 KiB).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What an authority that `http` refuses becomes: what grpc-go sends on a
/// Unix socket.
pub const REPLACEMENT: &[u8] = b"localhost";

/// Why a connection's bytes cannot be passed on to the HTTP/2 server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityRewriteError {
    /// A header block over [`MAX_HEADER_BLOCK`].
    #[error(
        "HTTP/2 header block of stream {stream} is over {MAX_HEADER_BLOCK} bytes: send fewer or smaller headers"
    )]
    HeaderBlockTooLarge {
        /// The stream the block belongs to.
        stream: u32,
    },
    /// A HEADERS frame whose padding or priority fields do not fit in it.
    #[error(
        "HTTP/2 HEADERS frame of stream {stream} is shorter than its padding and priority fields"
    )]
    BadHeadersFrame {
        /// The frame's stream.
        stream: u32,
    },
    /// A frame other than the CONTINUATION of an open header block.
    #[error(
        "HTTP/2 frame of type {frame_type:#x} on stream {stream} inside the header block of stream {open}: only its CONTINUATION may follow"
    )]
    ExpectedContinuation {
        /// The frame's type.
        frame_type: u8,
        /// The frame's stream.
        stream: u32,
        /// The stream whose header block is open.
        open: u32,
    },
    /// A CONTINUATION frame with no header block open.
    #[error("HTTP/2 CONTINUATION frame on stream {stream} with no header block open")]
    UnexpectedContinuation {
        /// The frame's stream.
        stream: u32,
    },
    /// A PUSH_PROMISE frame, which only servers may send.
    #[error("HTTP/2 PUSH_PROMISE frame from a client (only servers push)")]
    PushPromise,
    /// A header block that is not valid HPACK.
    #[error("HTTP/2 header block of stream {stream} is not valid HPACK: {source}")]
    Hpack {
        /// The stream the block belongs to.
        stream: u32,
        /// What the decoder found.
        #[source]
        source: HpackError,
    },
}

/// One connection's inbound bytes, with every header block re-encoded and
/// its `:authority` made acceptable (see the module docs). Feed it what the
/// client wrote; read what the server should see.
pub struct AuthorityRewrite {
    state: State,
    /// The frame header being read, and how much of it has arrived.
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// The HEADERS or CONTINUATION frame whose payload is being gathered.
    frame: Frame,
    payload: Vec<u8>,
    /// The header block being gathered (HEADERS without END_HEADERS yet).
    block: Option<Block>,
    /// Follows the client's dynamic table across the connection's blocks.
    decoder: Decoder,
    /// Output not yet read, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// Authorities replaced so far.
    rewritten: u64,
    /// The liveness challenge's PING payload, until its ACK arrives.
    challenge: Option<[u8; PING_LEN]>,
    /// The challenge was answered, not yet reported.
    answer: bool,
}

impl std::fmt::Debug for AuthorityRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewrite")
            .field("state", &self.state)
            .field("pending_output", &(self.out.len() - self.out_pos))
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Matching the client preface; this many bytes matched so far.
    Preface(usize),
    /// Not HTTP/2 with prior knowledge: everything passes unchanged.
    Opaque,
    /// Reading a frame header.
    Head,
    /// Passing this many more payload bytes of a frame unchanged.
    Copy(usize),
    /// Gathering this many more payload bytes of a HEADERS or CONTINUATION
    /// frame, or of a PING ACK that may answer the challenge.
    Gather(usize),
}

#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

#[derive(Debug)]
struct Block {
    stream: u32,
    /// END_STREAM and PRIORITY of the HEADERS frame that opened it.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
}

impl Default for AuthorityRewrite {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewrite {
    /// A rewrite for a new connection that also watches for the ACK of a
    /// PING carrying `challenge` (see the module docs).
    pub fn with_challenge(challenge: [u8; PING_LEN]) -> Self {
        Self {
            challenge: Some(challenge),
            ..Self::new()
        }
    }

    /// Whether the challenge's ACK arrived since the last call: `true` once.
    pub fn take_answer(&mut self) -> bool {
        std::mem::take(&mut self.answer)
    }

    /// A rewrite for a new connection.
    pub fn new() -> Self {
        Self {
            state: State::Preface(0),
            head: [0; FRAME_HEADER_LEN],
            head_len: 0,
            frame: Frame::default(),
            payload: Vec::new(),
            block: None,
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            out: Vec::new(),
            out_pos: 0,
            rewritten: 0,
            challenge: None,
            answer: false,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Whether output is waiting to be read.
    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Moves as much waiting output as fits into `buf`.
    pub fn read_into(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.out.len() - self.out_pos);
        buf.put_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // A large header block passed: do not keep its buffer for the
            // connection's lifetime.
            if self.out.capacity() > MAX_FRAME_PAYLOAD {
                self.out.shrink_to(MAX_FRAME_PAYLOAD);
            }
        }
    }

    /// Takes the next bytes the client wrote. Afterwards, what the server
    /// should read is waiting (possibly nothing yet, for a partial frame).
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), AuthorityRewriteError> {
        while !input.is_empty() {
            match self.state {
                State::Opaque => {
                    self.out.extend_from_slice(input);
                    return Ok(());
                }
                State::Preface(seen) => {
                    let want = &PREFACE[seen..];
                    let n = want.len().min(input.len());
                    if input[..n] != want[..n] {
                        // Not an HTTP/2 client preface: h2 will refuse the
                        // connection, with its own answer.
                        self.state = State::Opaque;
                        continue;
                    }
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if seen + n == PREFACE.len() {
                        State::Head
                    } else {
                        State::Preface(seen + n)
                    };
                }
                State::Head => {
                    let n = (FRAME_HEADER_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEADER_LEN {
                        self.head_len = 0;
                        self.start_frame()?;
                    }
                }
                State::Copy(remaining) => {
                    let n = remaining.min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == remaining {
                        State::Head
                    } else {
                        State::Copy(remaining - n)
                    };
                }
                State::Gather(remaining) => {
                    let n = remaining.min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == remaining {
                        self.state = State::Head;
                        self.end_frame()?;
                    } else {
                        self.state = State::Gather(remaining - n);
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete frame header has arrived in `head`.
    fn start_frame(&mut self) -> Result<(), AuthorityRewriteError> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let frame = Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        };
        if let Some(open) = &self.block {
            // RFC 9113 §6.10: nothing may interrupt a header block.
            if frame.kind != CONTINUATION || frame.stream != open.stream {
                return Err(AuthorityRewriteError::ExpectedContinuation {
                    frame_type: frame.kind,
                    stream: frame.stream,
                    open: open.stream,
                });
            }
        }
        match frame.kind {
            HEADERS | CONTINUATION => {
                if frame.kind == CONTINUATION && self.block.is_none() {
                    return Err(AuthorityRewriteError::UnexpectedContinuation {
                        stream: frame.stream,
                    });
                }
                let gathered = self.block.as_ref().map_or(0, |b| b.fragment.len());
                if gathered + len > MAX_HEADER_BLOCK + HEADERS_OVERHEAD {
                    return Err(AuthorityRewriteError::HeaderBlockTooLarge {
                        stream: frame.stream,
                    });
                }
                self.frame = frame;
                self.payload.clear();
                self.state = State::Gather(len);
                if len == 0 {
                    self.state = State::Head;
                    self.end_frame()?;
                }
            }
            // Perhaps the challenge's answer: gathered, then dropped or
            // passed on by `end_frame`.
            PING if frame.flags & ACK != 0 && len == PING_LEN && self.challenge.is_some() => {
                self.frame = frame;
                self.payload.clear();
                self.state = State::Gather(len);
            }
            // Its header block would change the dynamic table; h2 refuses
            // the frame from a client anyway.
            PUSH_PROMISE => return Err(AuthorityRewriteError::PushPromise),
            _ => {
                self.out.extend_from_slice(&h);
                self.state = if len == 0 {
                    State::Head
                } else {
                    State::Copy(len)
                };
            }
        }
        Ok(())
    }

    /// The payload of the HEADERS or CONTINUATION frame in `frame` is complete.
    fn end_frame(&mut self) -> Result<(), AuthorityRewriteError> {
        let frame = self.frame;
        if frame.kind == PING {
            if self.challenge.is_some_and(|c| c[..] == self.payload[..]) {
                self.challenge = None;
                self.answer = true;
            } else {
                self.write_frame_header(PING_LEN, PING, frame.flags, frame.stream);
                self.out.extend_from_slice(&self.payload);
            }
            return Ok(());
        }
        if frame.kind == HEADERS {
            let bad = || AuthorityRewriteError::BadHeadersFrame {
                stream: frame.stream,
            };
            let mut body = self.payload.as_slice();
            let mut padding = 0;
            if frame.flags & PADDED != 0 {
                let (&pad, rest) = body.split_first().ok_or_else(bad)?;
                padding = usize::from(pad);
                body = rest;
            }
            let mut priority = None;
            if frame.flags & PRIORITY != 0 {
                let (fields, rest) = body.split_at_checked(PRIORITY_LEN).ok_or_else(bad)?;
                let mut p = [0; PRIORITY_LEN];
                p.copy_from_slice(fields);
                priority = Some(p);
                body = rest;
            }
            let fragment_len = body.len().checked_sub(padding).ok_or_else(bad)?;
            self.block = Some(Block {
                stream: frame.stream,
                flags: frame.flags & (END_STREAM | PRIORITY),
                priority,
                fragment: body[..fragment_len].to_vec(),
            });
        } else if let Some(block) = &mut self.block {
            block.fragment.extend_from_slice(&self.payload);
        }
        let Some(block) = self.block.take_if(|_| frame.flags & END_HEADERS != 0) else {
            return Ok(());
        };
        if block.fragment.len() > MAX_HEADER_BLOCK {
            return Err(AuthorityRewriteError::HeaderBlockTooLarge {
                stream: block.stream,
            });
        }
        let encoded = self.reencode(&block)?;
        self.write_block(&block, &encoded);
        Ok(())
    }

    /// The block's fields as literals without indexing, the authority made
    /// acceptable.
    fn reencode(&mut self, block: &Block) -> Result<Vec<u8>, AuthorityRewriteError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        let mut decoded_size = 0usize;
        let mut rewritten = 0;
        self.decoder
            .decode(&block.fragment, |name, value| {
                decoded_size = decoded_size.saturating_add(name.len() + value.len() + 32);
                if decoded_size > MAX_HEADER_BLOCK {
                    // Keep decoding (the dynamic table must stay in step)
                    // but stop copying; refused below.
                    return;
                }
                let value = if name == b":authority" && Authority::try_from(value).is_err() {
                    rewritten += 1;
                    REPLACEMENT
                } else {
                    value
                };
                encode_literal(&mut encoded, name, value);
            })
            .map_err(|source| AuthorityRewriteError::Hpack {
                stream: block.stream,
                source,
            })?;
        if decoded_size > MAX_HEADER_BLOCK {
            return Err(AuthorityRewriteError::HeaderBlockTooLarge {
                stream: block.stream,
            });
        }
        if rewritten > 0 {
            tracing::trace!(
                stream = block.stream,
                "replaced a :authority that h2 refuses by localhost"
            );
        }
        self.rewritten += rewritten;
        Ok(encoded)
    }

    /// `encoded` as a HEADERS frame and as many CONTINUATION frames as the
    /// frame size needs.
    fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| p.as_slice());
        let first = encoded.len().min(MAX_FRAME_PAYLOAD - priority.len());
        let (head, mut rest) = encoded.split_at(first);
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        self.write_frame_header(
            priority.len() + head.len(),
            HEADERS,
            block.flags | end,
            block.stream,
        );
        self.out.extend_from_slice(priority);
        self.out.extend_from_slice(head);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
            let end = if tail.is_empty() { END_HEADERS } else { 0 };
            self.write_frame_header(chunk.len(), CONTINUATION, end, block.stream);
            self.out.extend_from_slice(chunk);
            rest = tail;
        }
    }

    fn write_frame_header(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        // `len` <= MAX_FRAME_PAYLOAD < 2^24: the three low bytes hold it.
        let len = (len as u32).to_be_bytes();
        self.out.extend_from_slice(&len[1..]);
        self.out.push(kind);
        self.out.push(flags);
        self.out.extend_from_slice(&stream.to_be_bytes());
    }
}

/// A literal header field without indexing, new name, no Huffman coding
/// (RFC 7541 §6.2.2). Fields the client sent "never indexed" (§6.2.3)
/// become this too: the agent is their last hop, there is no further
/// encoder left that could index them.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

/// A string literal, not Huffman-coded (RFC 7541 §5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// An integer with an `prefix`-bit prefix, the first byte's other bits
/// `first` (RFC 7541 §5.1).
fn encode_integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        // Fits in the prefix: below 2^prefix <= 128.
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

#[cfg(test)]
mod tests;
