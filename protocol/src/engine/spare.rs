//! A few emptied buffers kept per thread for the next engine that needs one.
//!
//! An engine gives its input buffer up once no partial frame is left and its output buffer once everything
//! in it is taken, so an idle connection holds none; a busy one would then allocate (and free) a buffer of
//! several KiB per socket read and per write, and with glibc each such allocation first consolidates every
//! small freed chunk. Instead the emptied buffer waits here, on the thread that used it, for the next
//! engine on that thread. An input buffer may still be shared with frames split off it; it is reused only
//! once they are gone ([`BytesMut::try_reclaim`]), and otherwise dropped, leaving the allocation to them.
//! At most [`KEPT`] buffers of at most [`LARGEST`] bytes each are kept per thread.

use std::cell::RefCell;

use bytes::BytesMut;

/// How many emptied buffers a thread keeps.
const KEPT: usize = 8;
/// The largest buffer kept: bigger ones (a large frame's) are freed.
const LARGEST: usize = 128 << 10;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `want` bytes: a kept one if one is free, else a new one.
pub(super) fn take(want: usize) -> BytesMut {
    while let Some(mut buf) = SPARE.with(|s| s.borrow_mut().pop()) {
        buf.clear();
        if buf.try_reclaim(want) {
            return buf;
        }
    }
    BytesMut::with_capacity(want)
}

/// Gives up an emptied buffer: kept for the next [`take`] on this thread if there is room, else freed.
pub(super) fn give(buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > LARGEST {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEPT {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    #[test]
    fn an_emptied_buffer_is_used_again_once_nothing_shares_it() {
        let mut buf = take(4096);
        buf.put_slice(&[7; 100]);
        let frame = buf.split_to(100).freeze();
        let shared = frame.as_ptr();
        give(buf);
        // Still shared with the frame: not reclaimable, so a new buffer is made (and the frame keeps its own).
        let other = take(4096);
        assert_ne!(other.as_ptr(), shared);
        assert_eq!(frame[..], [7; 100]);
        let at = other.as_ptr();
        give(other);
        assert_eq!(SPARE.with(|s| s.borrow().len()), 1, "kept");
        // Nothing shares this one: the next engine on the thread gets it.
        let again = take(4096);
        assert_eq!(again.as_ptr(), at);
        assert!(again.capacity() >= 4096 && again.is_empty());
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_bounded_buffers() {
        for _ in 0..KEPT * 2 {
            give(BytesMut::with_capacity(1024));
        }
        give(BytesMut::with_capacity(LARGEST * 2));
        SPARE.with(|s| {
            let s = s.borrow();
            assert_eq!(s.len(), KEPT);
            assert!(s.iter().all(|b| b.capacity() <= LARGEST));
        });
    }
}
