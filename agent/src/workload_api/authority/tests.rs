use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A header list: (name, value) pairs in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

const GRPC_PATH: &[u8] = b"/SpiffeWorkloadAPI/FetchX509SVID";
/// What grpcio sends for `unix:/tmp/agent/api.sock`.
const C_CORE_AUTHORITY: &[u8] = b"tmp%2Fagent%2Fapi.sock";

/// A gRPC request's fields with `authority`.
fn request_fields(authority: &[u8]) -> Fields {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", GRPC_PATH),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"workload.spiffe.io", b"true"),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

fn encode(encoder: &mut loona_hpack::Encoder<'_>, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = len[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame.
fn connection_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

fn rewrite(input: &[u8]) -> Result<(Vec<u8>, u64), AuthorityRewriteError> {
    let mut r = AuthorityRewrite::new();
    r.feed(input)?;
    Ok((drain(&mut r), r.rewritten()))
}

fn drain(r: &mut AuthorityRewrite) -> Vec<u8> {
    let mut out = Vec::new();
    while r.has_output() {
        let mut storage = [0u8; 1000];
        let mut buf = ReadBuf::new(&mut storage);
        r.read_into(&mut buf);
        out.extend_from_slice(buf.filled());
    }
    out
}

/// The frames after the preface, as (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    bytes = bytes.strip_prefix(PREFACE).unwrap();
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// Every header block in `bytes`, decoded (one decoder for the connection).
fn decoded_blocks(bytes: &[u8]) -> Vec<(u32, Fields)> {
    let mut decoder = loona_hpack::Decoder::new();
    let mut blocks = Vec::new();
    let mut open: Option<(u32, Vec<u8>)> = None;
    for (kind, flags, stream, payload) in frames(bytes) {
        match kind {
            HEADERS => {
                assert!(open.is_none());
                let skip = if flags & PRIORITY != 0 {
                    PRIORITY_LEN
                } else {
                    0
                };
                assert_eq!(flags & PADDED, 0, "the rewrite writes no padding");
                open = Some((stream, payload[skip..].to_vec()));
            }
            CONTINUATION => open.as_mut().unwrap().1.extend_from_slice(&payload),
            _ => continue,
        }
        if flags & END_HEADERS != 0 {
            let (stream, block) = open.take().unwrap();
            blocks.push((stream, decoder.decode(&block).unwrap()));
        }
    }
    blocks
}

/// What an h2 server (the one tonic runs on) makes of `input`: the
/// requests it accepts, as (authority, path, workload header). A PING after
/// `input` tells when h2 has processed all of it (this runtime has one
/// thread: the server task has handed over every request by the time the
/// PING's answer can be read).
async fn h2_accepts(input: Vec<u8>) -> Vec<(Option<String>, String, Option<String>)> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut conn = h2::server::handshake(server).await.unwrap();
        while let Some(Ok((request, _respond))) = conn.accept().await {
            let _ = tx.send((
                request.uri().authority().map(ToString::to_string),
                request.uri().path().to_owned(),
                request
                    .headers()
                    .get("workload.spiffe.io")
                    .map(|v| v.to_str().unwrap().to_owned()),
            ));
        }
    });
    let (mut read, mut write) = tokio::io::split(client);
    write.write_all(&input).await.unwrap();
    write
        .write_all(&frame(0x6, 0, 0, b"hallmark"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut head = [0u8; 9];
            read.read_exact(&mut head).await.unwrap();
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0; len];
            read.read_exact(&mut payload).await.unwrap();
            if head[3] == 0x6 && head[4] & 0x1 != 0 && payload == b"hallmark" {
                return;
            }
        }
    })
    .await
    .expect("h2 answered the PING (it did not close the connection)");
    server.abort();
    let mut requests = Vec::new();
    while let Ok(request) = rx.try_recv() {
        requests.push(request);
    }
    requests
}

fn one_request(authority: &[u8]) -> Vec<u8> {
    let mut encoder = loona_hpack::Encoder::new();
    let mut input = connection_start();
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &encode(&mut encoder, &request_fields(authority)),
    ));
    input
}

#[tokio::test]
async fn h2_still_refuses_what_grpc_c_core_and_grpc_java_send() {
    // The reason this module exists. If this fails, h2 (or http) has
    // started to accept these authorities and the rewrite may be removable.
    for authority in [C_CORE_AUTHORITY, b"/tmp/agent/api.sock"] {
        assert_eq!(
            h2_accepts(one_request(authority)).await,
            [],
            "h2 now accepts {:?}",
            String::from_utf8_lossy(authority)
        );
    }
}

#[tokio::test]
async fn an_authority_h2_refuses_becomes_localhost_and_h2_accepts_the_request() {
    for authority in [C_CORE_AUTHORITY, b"/tmp/agent/api.sock", b""] {
        let (out, rewritten) = rewrite(&one_request(authority)).unwrap();
        assert_eq!(rewritten, 1);
        let accepted = h2_accepts(out).await;
        assert_eq!(
            accepted,
            [(
                Some("localhost".to_owned()),
                "/SpiffeWorkloadAPI/FetchX509SVID".to_owned(),
                Some("true".to_owned())
            )],
            "{:?}",
            String::from_utf8_lossy(authority)
        );
    }
}

#[tokio::test]
async fn an_authority_h2_accepts_is_left_as_it_is() {
    for authority in ["localhost", "workload.invalid", "[::1]:8080", "spire-agent"] {
        let input = one_request(authority.as_bytes());
        let (out, rewritten) = rewrite(&input).unwrap();
        assert_eq!(rewritten, 0);
        let accepted = h2_accepts(out).await;
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].0.as_deref(), Some(authority));
        // And the original, too: nothing this module does is needed here.
        assert_eq!(h2_accepts(input).await, accepted);
    }
}

/// Literal with incremental indexing, name from the static table.
fn literal_indexed(name_index: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40 | name_index, u8::try_from(value.len()).unwrap()];
    out.extend_from_slice(value);
    out
}

#[tokio::test]
async fn the_clients_dynamic_table_is_followed_across_requests() {
    // As C-core does: the authority goes into the dynamic table with the
    // first request and later requests name it by index.
    let mut first = vec![0x83, 0x86]; // :method POST, :scheme http
    first.extend(literal_indexed(4, GRPC_PATH)); // :path, indexed
    first.extend(literal_indexed(1, C_CORE_AUTHORITY)); // :authority, indexed
    // A new name, indexed: workload.spiffe.io: true.
    first.extend([0x40, 18]);
    first.extend_from_slice(b"workload.spiffe.io");
    first.extend([4]);
    first.extend_from_slice(b"true");
    // Dynamic table now: 62 workload header, 63 authority, 64 path.
    let second = vec![0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
    let mut input = connection_start();
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
    let (out, rewritten) = rewrite(&input).unwrap();
    assert_eq!(rewritten, 2);
    let accepted = h2_accepts(out).await;
    let expected = (
        Some("localhost".to_owned()),
        "/SpiffeWorkloadAPI/FetchX509SVID".to_owned(),
        Some("true".to_owned()),
    );
    assert_eq!(accepted, [expected.clone(), expected]);
}

#[test]
fn huffman_coded_fields_are_decoded() {
    // RFC 7541 C.4.1: GET http://www.example.com/ with Huffman-coded strings.
    let block = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let mut input = connection_start();
    input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    let (out, rewritten) = rewrite(&input).unwrap();
    assert_eq!(rewritten, 0);
    let blocks = decoded_blocks(&out);
    let fields: Vec<(&[u8], &[u8])> = blocks[0]
        .1
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(
        fields,
        [
            (&b":method"[..], &b"GET"[..]),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
        ]
    );
}

#[test]
fn other_frames_and_the_preface_pass_byte_for_byte() {
    let mut input = connection_start();
    input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0])); // WINDOW_UPDATE
    input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\x05hello")); // DATA
    input.extend(frame(0x6, 0, 0, &[7; 8])); // PING
    input.extend(frame(0x7, 0, 0, &[0; 8])); // GOAWAY
    assert_eq!(rewrite(&input).unwrap(), (input, 0));
}

#[test]
fn the_challenge_answer_is_taken_out_once_and_other_pings_pass() {
    let challenge = [9, 8, 7, 6, 5, 4, 3, 2];
    let mut r = AuthorityRewrite::with_challenge(challenge);
    let mut expected = connection_start();
    let other_ack = frame(0x6, 0x1, 0, &[1; 8]);
    let ping = frame(0x6, 0, 0, &challenge);
    expected.extend(&other_ack);
    expected.extend(&ping);
    // The answer, split across two reads, between frames h2 must see.
    let answer = frame(0x6, 0x1, 0, &challenge);
    let mut input = connection_start();
    input.extend(&other_ack);
    input.extend(&answer[..5]);
    r.feed(&input).unwrap();
    assert!(!r.take_answer());
    let mut rest = answer[5..].to_vec();
    rest.extend(&ping);
    r.feed(&rest).unwrap();
    assert!(r.take_answer());
    assert!(!r.take_answer(), "reported once");
    assert_eq!(drain(&mut r), expected);
    // A second echo is not the challenge's any more: h2 sees it (and
    // ignores an ACK of a PING it did not send).
    r.feed(&answer).unwrap();
    assert!(!r.take_answer());
    assert_eq!(drain(&mut r), answer);
    // Without a challenge every PING passes.
    assert_eq!(rewrite(&answer).unwrap(), (answer.clone(), 0));
}

#[test]
fn a_connection_that_is_not_http2_passes_unchanged() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PRI * HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
    ] {
        assert_eq!(rewrite(input).unwrap(), (input.to_vec(), 0));
    }
}

#[test]
fn padding_and_priority_are_handled_and_the_priority_kept() {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request_fields(C_CORE_AUTHORITY));
    let priority = [0x80, 0, 0, 1, 200];
    let mut payload = vec![3];
    payload.extend_from_slice(&priority);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let mut input = connection_start();
    input.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM | PADDED | PRIORITY,
        5,
        &payload,
    ));
    let (out, rewritten) = rewrite(&input).unwrap();
    assert_eq!(rewritten, 1);
    let headers = &frames(&out)[1];
    assert_eq!(headers.0, HEADERS);
    assert_eq!(headers.1, END_HEADERS | END_STREAM | PRIORITY);
    assert_eq!(headers.2, 5);
    assert_eq!(headers.3[..PRIORITY_LEN], priority);
    let blocks = decoded_blocks(&out);
    let authority = &blocks[0].1[3];
    assert_eq!(authority, &(b":authority".to_vec(), REPLACEMENT.to_vec()));
}

#[test]
fn a_large_block_is_written_in_frames_the_server_accepts() {
    let mut fields = request_fields(C_CORE_AUTHORITY);
    fields.push((b"x-large".to_vec(), vec![b'a'; 40_000]));
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &fields);
    let mut input = connection_start();
    // Sent in frames of 10,000 bytes: HEADERS, then CONTINUATIONs.
    let mut chunks = block.chunks(10_000).peekable();
    let mut kind = HEADERS;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        input.extend(frame(kind, flags, 1, chunk));
        kind = CONTINUATION;
    }
    let (out, _) = rewrite(&input).unwrap();
    let written = frames(&out);
    assert!(written.len() >= 4, "HEADERS and CONTINUATIONs");
    for (kind, flags, _, payload) in &written[1..] {
        assert!(payload.len() <= MAX_FRAME_PAYLOAD);
        assert!([HEADERS, CONTINUATION].contains(kind));
        assert_eq!(
            flags & END_HEADERS != 0,
            std::ptr::eq(payload, &written.last().unwrap().3)
        );
    }
    let mut expected = fields;
    expected[3].1 = REPLACEMENT.to_vec();
    assert_eq!(decoded_blocks(&out), [(1, expected)]);
}

#[test]
fn malformed_framing_closes_the_connection() {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request_fields(b"localhost"));
    let start = connection_start();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            frame(CONTINUATION, END_HEADERS, 1, &block),
            "no header block open",
        ),
        (
            [frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")].concat(),
            "only its CONTINUATION may follow",
        ),
        (
            [
                frame(HEADERS, 0, 1, &block),
                frame(CONTINUATION, END_HEADERS, 3, &[]),
            ]
            .concat(),
            "only its CONTINUATION may follow",
        ),
        (
            frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 1, 2]),
            "shorter than its padding",
        ),
        (
            frame(HEADERS, END_HEADERS | PRIORITY, 1, &[1, 2]),
            "shorter than its padding",
        ),
        (
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]),
            "PUSH_PROMISE",
        ),
        (
            frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]),
            "not valid HPACK",
        ),
        (
            frame(HEADERS, END_HEADERS, 1, &[0x41, 10, b'a']),
            "not valid HPACK",
        ),
        // A size update above what the agent advertises.
        (
            frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe1, 0x3f, 0x82]),
            "not valid HPACK",
        ),
    ];
    for (frames, message) in cases {
        let err = rewrite(&[start.clone(), frames].concat()).unwrap_err();
        assert!(
            err.to_string().contains(message),
            "{err} (expected {message:?})"
        );
    }
}

#[test]
fn header_blocks_over_the_limit_are_refused_before_being_buffered() {
    // Compressed: one frame header announcing more than the limit.
    let mut input = connection_start();
    input.extend_from_slice(&[0x02, 0x00, 0x00, HEADERS, 0, 0, 0, 0, 1]);
    let err = rewrite(&input).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityRewriteError::HeaderBlockTooLarge { stream: 1 }
        ),
        "{err}"
    );

    // Decoded: a 4,000-byte field in the dynamic table, then named 20 times
    // in 20 bytes (an HPACK bomb).
    let mut block = vec![0x40, 1, b'x', 0x7f];
    let mut len = Vec::new();
    encode_integer(&mut len, 0, 7, 3_960);
    block.extend_from_slice(&len[1..]);
    block.extend(std::iter::repeat_n(b'v', 3_960));
    block.extend(std::iter::repeat_n(0x80 | 62, 20));
    let mut input = connection_start();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let err = rewrite(&input).unwrap_err();
    assert!(
        matches!(
            err,
            AuthorityRewriteError::HeaderBlockTooLarge { stream: 1 }
        ),
        "{err}"
    );
}

#[test]
fn integers_are_encoded_as_rfc_7541_says() {
    // C.1.1, C.1.2, C.1.3 (first-byte bits left clear).
    let cases: [(u32, usize, &[u8]); 4] = [
        (5, 10, &[10]),
        (5, 1337, &[31, 154, 10]),
        (8, 42, &[42]),
        (7, 127, &[127, 0]),
    ];
    for (prefix, value, expected) in cases {
        let mut out = Vec::new();
        encode_integer(&mut out, 0, prefix, value);
        assert_eq!(out, expected, "{value} with a {prefix}-bit prefix");
    }
}

/// A header name HPACK and h2 accept: lowercase token characters.
fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![b'a'..=b'z', Just(b'-'), b'0'..=b'9'], 1..20)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0x20u8..0x7f, 0..300)
}

fn authority() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(C_CORE_AUTHORITY.to_vec()),
        Just(b"/tmp/agent/api.sock".to_vec()),
        Just(b"localhost".to_vec()),
        value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Several requests on one connection (the encoder's dynamic table in
    /// use), each split into HEADERS and CONTINUATIONs, DATA in between,
    /// the bytes arriving in arbitrary pieces: every field survives, in
    /// order, and only an authority `http` refuses is replaced.
    #[test]
    fn every_field_survives_and_only_refused_authorities_change(
        requests in proptest::collection::vec(
            (authority(), proptest::collection::vec((name(), value()), 0..8), 1usize..400),
            1..6,
        ),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
    ) {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = connection_start();
        let mut expected = Vec::new();
        for (i, (authority, extra, split)) in requests.iter().enumerate() {
            let stream = u32::try_from(2 * i + 1).unwrap();
            let mut fields = request_fields(authority);
            fields.extend(extra.iter().cloned());
            let block = encode(&mut encoder, &fields);
            let mut chunks = block.chunks(*split).peekable();
            let mut kind = HEADERS;
            while let Some(chunk) = chunks.next() {
                let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
                input.extend(frame(kind, flags, stream, chunk));
                kind = CONTINUATION;
            }
            input.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
            if Authority::try_from(authority.as_slice()).is_err() {
                fields[3].1 = REPLACEMENT.to_vec();
            }
            expected.push((stream, fields));
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len())).collect();
        points.sort_unstable();
        let mut r = AuthorityRewrite::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in points.into_iter().chain([input.len()]) {
            r.feed(&input[from..to]).unwrap();
            out.extend(drain(&mut r));
            from = to;
        }
        prop_assert_eq!(decoded_blocks(&out), expected);
        let data: Vec<_> = frames(&out).into_iter().filter(|f| f.0 == 0x0).collect();
        prop_assert_eq!(data.len(), requests.len());
    }

    /// Whatever a client writes, the rewrite answers with output or an
    /// error, never a panic.
    #[test]
    fn arbitrary_frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut r = AuthorityRewrite::new();
        let _ = r.feed(&connection_start()).and_then(|()| r.feed(&body));
        drain(&mut r);
    }

    /// Arbitrary bytes inside well-formed HEADERS frames: the HPACK decoder
    /// is exercised, not just the framing.
    #[test]
    fn arbitrary_header_blocks_never_panic(
        blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
    ) {
        let mut r = AuthorityRewrite::new();
        r.feed(&connection_start()).unwrap();
        for (i, block) in blocks.iter().enumerate() {
            let stream = u32::try_from(2 * i + 1).unwrap();
            if r.feed(&frame(HEADERS, END_HEADERS, stream, block)).is_err() {
                break;
            }
        }
        drain(&mut r);
    }
}

/// The bytes an h2 client (tonic's, Huffman-coding its strings) writes for
/// one gRPC request with the C-core authority, up to its request body.
async fn h2_client_bytes() -> Vec<u8> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (mut send, conn) = h2::client::handshake(client).await.unwrap();
    let driver = tokio::spawn(conn);
    let request = http::Request::post("http://localhost/SpiffeWorkloadAPI/FetchX509SVID")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("workload.spiffe.io", "true")
        .header(
            "user-agent",
            "grpc-python/1.85.3 grpc-c/52.0.0 (linux; chttp2)",
        )
        .body(())
        .unwrap();
    let (_response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(bytes_of_grpc_message(), true).unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.ends_with(&bytes_of_grpc_message()) {
        let n = server.read(&mut chunk).await.unwrap();
        seen.extend_from_slice(&chunk[..n]);
    }
    driver.abort();
    seen
}

fn bytes_of_grpc_message() -> bytes::Bytes {
    bytes::Bytes::from_static(b"\0\0\0\0\0")
}

/// The cost of the rewrite per new connection with one request, as an h2
/// client sends it (Huffman-coded strings). Run with `cargo test -p
/// hallmark-agent --lib -- --ignored --nocapture rewrite_cost`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn rewrite_cost() {
    let input = h2_client_bytes().await;
    let n = 20_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut r = AuthorityRewrite::new();
        r.feed(std::hint::black_box(&input)).unwrap();
        std::hint::black_box(drain(&mut r));
    }
    println!(
        "rewrite of a {}-byte connection start with one request: {:?} each",
        input.len(),
        start.elapsed() / n
    );
}
