//! Copies stored values out into `Bytes` for outgoing messages without one allocation per message:
//! values are appended to a shared chunk and split off; a chunk is freed once every message cut
//! from it has been sent.

use bytes::{Bytes, BytesMut};

/// Bytes per chunk: a few hundred small values share one allocation.
const CHUNK_BYTES: usize = 32 * 1024;

#[derive(Default)]
pub struct ValueArena {
    chunk: BytesMut,
}

impl ValueArena {
    pub fn copy(&mut self, value: &[u8]) -> Bytes {
        if self.chunk.capacity() < value.len() {
            self.chunk = BytesMut::with_capacity(CHUNK_BYTES.max(value.len()));
        }
        self.chunk.extend_from_slice(value);
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_independent_and_share_chunks() {
        let mut arena = ValueArena::default();
        let a = arena.copy(b"first");
        let b = arena.copy(b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // Cut from one chunk, one after the other.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let big = arena.copy(&vec![7; CHUNK_BYTES * 2]);
        assert_eq!(big.len(), CHUNK_BYTES * 2);
        assert_eq!(&arena.copy(b"")[..], b"");
        drop((a, b));
        assert_eq!(&arena.copy(b"after")[..], b"after");
    }
}
