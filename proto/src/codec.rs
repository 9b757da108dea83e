//! The codec of every generated client and server: prost's, with smaller
//! buffers than tonic's default.
//!
//! Tonic allocates an encode buffer up front for every call and keeps it
//! for as long as the call lasts (and a decode buffer the same way), 8 KiB
//! each by default. Hallmark's long-lived streams are many and their
//! messages small: every agent holds a `Sync` stream on the issuer (about
//! 1.5 KiB per message), every workload a `FetchX509SVID` stream on its
//! agent. With 10,000 agents the default encode buffers alone are 80 MiB of
//! the issuer's memory. Buffers still grow to fit larger messages (a batch
//! of 16 X.509-SVIDs, an audit page), so only the allocation up front
//! changes; the bytes on the wire are prost's.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Bytes allocated up front for each call's encode and decode buffer.
pub const BUFFER_SIZE: usize = 2 * 1024;
/// Tonic's default: a stream yields to the runtime after encoding this much.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `application/grpc+proto` through prost, with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
