//! The Workload API serves whatever HTTP/2 `:authority` a client sends on
//! the agent's Unix socket (it identifies callers by the kernel): raw
//! HTTP/2 as gRPC C-core and grpc-java write it, without Python, and the
//! SETTINGS the agent's `:authority` rewrite relies on.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use hallmark_agent::workload_api::authority::{HEADER_TABLE_SIZE, MAX_FRAME_PAYLOAD};

use crate::kill::KillEnv;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = len[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Literal fields without indexing, new names, no Huffman coding (every
/// string here is under 127 bytes).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for s in [name, value] {
            out.push(u8::try_from(s.len()).unwrap());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

async fn read_frame(io: &mut UnixStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.unwrap();
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await.unwrap();
    let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
    (head[3], head[4], stream, payload)
}

/// Sends one `FetchX509Bundles` call with `authority` and returns the frames
/// the agent answers with on its stream, up to the response headers or a
/// reset (and its SETTINGS).
async fn call_with(socket: &std::path::Path, authority: &str) -> (Vec<(u16, u32)>, u8) {
    let mut io = UnixStream::connect(socket).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509Bundles"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("workload.spiffe.io", "true"),
    ]);
    out.extend(frame(HEADERS, 0x4, 1, &block));
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    io.write_all(&out).await.unwrap();
    let mut settings = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (kind, flags, stream, payload) = read_frame(&mut io).await;
            if kind == SETTINGS && flags & 0x1 == 0 {
                settings.extend(payload.chunks(6).map(|s| {
                    (
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    )
                }));
            }
            if (kind == HEADERS || kind == RST_STREAM) && stream == 1 || kind == GOAWAY {
                return kind;
            }
        }
    })
    .await
    .expect("the agent answers the call");
    (settings, answer)
}

#[tokio::test]
async fn any_authority_is_served_on_the_workload_socket() {
    let env = KillEnv::start().await;
    let agent = env.agent("a").await;
    for authority in [
        // gRPC C-core (grpcio, Ruby, PHP, C++, C#) since 1.57.
        "tmp%2Fhallmark%2Fagent%2Fapi.sock",
        // grpc-java, grpc-swift.
        "/tmp/hallmark/agent/api.sock",
        // grpc-go, tonic: passed as it is.
        "localhost",
    ] {
        let (settings, answer) = call_with(&agent.socket, authority).await;
        assert_eq!(
            answer, HEADERS,
            "the call with :authority {authority} was not answered with response headers"
        );
        // The rewrite assumes the client's HPACK table is at most the
        // default (SETTINGS_HEADER_TABLE_SIZE, 0x1, unset or 4096) and that
        // frames of 16 KiB are accepted (SETTINGS_MAX_FRAME_SIZE, 0x5).
        for (id, value) in settings {
            if id == 0x1 {
                assert_eq!(value as usize, HEADER_TABLE_SIZE);
            }
            if id == 0x5 {
                assert!(value as usize >= MAX_FRAME_PAYLOAD);
            }
        }
    }
    agent.handle.shutdown().await;
}
