//! The process pool's shared-memory segments without Python: generations
//! and release, reuse, the pool's bounds and one-off segments, mapping a
//! segment through `/proc`, and envelope-head parsing.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::os::fd::AsRawFd;

use plait_core::ipc::shm::{named_path, Head, Mapping, SegmentPool, GRAIN, POOL_BYTES, POOL_SEGMENTS};

const MIB: usize = 1 << 20;

/// `b"M"` + head, the envelope as `plait._wire` builds it (no stream).
fn envelope(head: &[u8]) -> Vec<u8> {
    let mut e = vec![b'M'];
    e.extend_from_slice(head);
    e
}

#[test]
fn shm_release_once_per_generation_and_stale_release_fails() {
    let pool = SegmentPool::new();
    let a = pool.lease(1000).unwrap().expect("an empty pool has room");
    let seg = a.segment().clone();
    let g1 = a.generation();
    assert!(a.is_pooled());
    assert!(seg.map().capacity() >= 1000);
    assert!(seg.release(g1));
    assert!(!seg.release(g1), "a second release of the same generation is a no-op");

    // Reused: the same segment comes back, one generation on.
    let b = pool.lease(1000).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(b.segment(), &seg));
    assert_eq!(b.generation(), g1 + 1);
    // A stale release (the old generation's reader, late) does nothing: the
    // segment stays busy, so the next lease gets another one.
    assert!(!seg.release(g1));
    let c = pool.lease(1000).unwrap().unwrap();
    assert!(!std::sync::Arc::ptr_eq(c.segment(), &seg));
    assert_eq!(pool.segments(), 2);
    assert!(seg.release(b.generation()));
}

#[test]
fn shm_reuses_the_smallest_free_segment_that_fits() {
    let pool = SegmentPool::new();
    let big = pool.lease(3 * MIB).unwrap().unwrap();
    let small = pool.lease(MIB).unwrap().unwrap();
    let (big_seg, small_seg) = (big.segment().clone(), small.segment().clone());
    assert_eq!(big_seg.map().capacity(), 3 * MIB);
    assert_eq!(small_seg.map().capacity(), MIB, "sizes round up to the grain");
    assert!(big_seg.release(big.generation()));
    assert!(small_seg.release(small.generation()));
    let again = pool.lease(10).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(again.segment(), &small_seg));
    let larger = pool.lease(2 * MIB).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(larger.segment(), &big_seg));
    assert_eq!(pool.segments(), 2);
}

#[test]
fn shm_bounds_then_one_off() {
    let pool = SegmentPool::new();
    assert!(pool.lease(POOL_BYTES + 1).unwrap().is_none(), "over the byte budget: not pooled");
    let held: Vec<_> = (0..POOL_SEGMENTS).map(|_| pool.lease(GRAIN).unwrap().expect("room")).collect();
    assert!(pool.lease(1).unwrap().is_none(), "all segments busy and the count bound reached");

    // What a worker does then: a one-off segment, its descriptor sent along.
    let one = pool.one_off(5).unwrap();
    assert!(!one.is_pooled());
    let serial = one.segment().map().serial();
    // SAFETY: five bytes inside the lease's data, which it holds BUSY.
    unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), one.segment().map().data(), 5) };
    let head = Head::parse(&envelope(&one.head(&[5], true))).unwrap();
    assert_eq!((head.fd, head.serial, head.sizes.clone()), (-1, serial, vec![5]));
    let fd = one.into_fd().unwrap();
    assert_eq!(pool.segments(), POOL_SEGMENTS, "a one-off is not kept");
    let mut fds = VecDeque::from([fd]);
    let map = Mapping::received(&head, &mut fds).expect("the descriptor is this envelope's");
    assert!(fds.is_empty());
    map.check(&head).unwrap();
    // SAFETY: five bytes inside the mapping, written above.
    assert_eq!(unsafe { std::slice::from_raw_parts(map.data(), 5) }, b"hello");
    assert!(map.release(head.gen));

    // A freed segment is evicted to make room for a larger one.
    assert!(held[0].segment().release(held[0].generation()));
    let bigger = pool.lease(2 * GRAIN).unwrap().expect("the free segment makes way");
    assert_eq!(bigger.segment().map().capacity(), 2 * GRAIN);
    assert_eq!(pool.segments(), POOL_SEGMENTS);
}

#[test]
fn shm_segment_mapped_through_proc_reads_what_was_written() {
    let pool = SegmentPool::new();
    let lease = pool.lease(6).unwrap().unwrap();
    let data = lease.segment().map().data();
    // SAFETY: six bytes inside the lease's data, which it holds BUSY.
    unsafe { std::ptr::copy_nonoverlapping(b"abcdef".as_ptr(), data, 6) };
    let env = envelope(&lease.head(&[2, 4], false));
    let head = Head::parse(&env).unwrap();
    assert_eq!(head.pid, std::process::id());
    assert_eq!(head.fd, lease.segment().fd());
    assert_eq!(head.sizes, vec![2, 4]);
    assert_eq!(head.stream_at, env.len());
    assert!(std::sync::Arc::ptr_eq(&pool.find(&head).unwrap(), lease.segment()));

    let map = Mapping::open_proc(head.pid, head.fd).unwrap();
    map.check(&head).unwrap();
    // SAFETY: six bytes inside the mapping, written above.
    assert_eq!(unsafe { std::slice::from_raw_parts(map.data(), 6) }, b"abcdef");
    assert!(map.release(head.gen));
    assert_eq!(map.check(&head), Err("it was reused or is not a plait segment"));
    // Released through the peer's mapping: the owner sees it free.
    let next = pool.lease(6).unwrap().unwrap();
    assert!(std::sync::Arc::ptr_eq(next.segment(), lease.segment()));
}

#[test]
fn shm_received_descriptor_of_another_envelope_stays_queued() {
    let pool = SegmentPool::new();
    let first = pool.lease(1).unwrap().unwrap();
    let second = pool.lease(1).unwrap().unwrap();
    let head1 = Head::parse(&envelope(&first.head(&[1], true))).unwrap();
    let head2 = Head::parse(&envelope(&second.head(&[1], true))).unwrap();
    // The first frame's descriptor was lost: only the second's arrived.
    let mut fds = VecDeque::from([second.into_fd().unwrap()]);
    assert!(Mapping::received(&head1, &mut fds).is_none());
    assert_eq!(fds.len(), 1);
    let map = Mapping::received(&head2, &mut fds).unwrap();
    assert!(fds.is_empty());
    map.check(&head2).unwrap();
}

#[test]
fn shm_head_parse_rejects_garbage() {
    assert!(Head::parse(b"").is_none());
    assert!(Head::parse(b"P\x80\x05").is_none());
    assert!(Head::parse(&envelope(&[0; 27])).is_none(), "truncated fixed part");
    let mut head = vec![0u8; 28];
    head[24..28].copy_from_slice(&2u32.to_le_bytes());
    assert!(Head::parse(&envelope(&head)).is_none(), "two sizes announced, none present");
    head[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Head::parse(&envelope(&head)).is_none(), "an absurd count");
    head[24..28].copy_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&7u64.to_le_bytes());
    let ok = Head::parse(&envelope(&head)).unwrap();
    assert_eq!(ok.sizes, vec![7]);

    // A mapping that is not a plait segment fails the check.
    let fd = plait_core::ipc::fd::memfd(c"not-plait", 2 * 4096).unwrap();
    let map = Mapping::open(&fd).unwrap();
    assert!(map.check(&ok).is_err());
    assert!(!map.release(ok.gen));
    let tiny = plait_core::ipc::fd::memfd(c"tiny", 4096).unwrap();
    assert!(Mapping::open(&tiny).is_err(), "no room past the header");
    let _ = fd.as_raw_fd();
}

#[test]
fn shm_named_path_only_for_our_files() {
    let env = |p: &str| {
        let mut e = vec![b'S'];
        e.extend_from_slice(&(p.len() as u16).to_le_bytes());
        e.extend_from_slice(p.as_bytes());
        e
    };
    assert_eq!(named_path(&env("/dev/shm/plait-1-2-ab")).unwrap().to_str(), Some("/dev/shm/plait-1-2-ab"));
    assert!(named_path(&env("/tmp/plait-1")).is_none());
    assert!(named_path(&env("/dev/shm/other")).is_none());
    assert!(named_path(b"S\xff\x00/dev").is_none(), "truncated name");
    assert!(named_path(b"M").is_none());
}
