//! `send_with_fds`: several descriptors in one message (the zygote's fork
//! request carries the worker's socket and its crash-log memfd).

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use plait_core::ipc::fd;

#[test]
fn ipc_several_descriptors_in_one_message_in_order() {
    let (a, b) = fd::socketpair(libc::SOCK_STREAM).unwrap();
    let files: Vec<std::fs::File> = (0..3u8)
        .map(|i| {
            let f = std::fs::File::from(fd::memfd(c"plait-test", 0).unwrap());
            f.write_all_at(&[i + 1; 2], 0).unwrap();
            f
        })
        .collect();
    let raw: Vec<_> = files.iter().map(|f| f.as_raw_fd()).collect();
    fd::send_with_fds(a.as_raw_fd(), b"W", &raw, libc::MSG_NOSIGNAL).unwrap();
    drop(files); // the receiver's copies keep the files alive
    let mut got = Vec::new();
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { fd::recv_with_fds(b.as_raw_fd(), buf.as_mut_ptr(), buf.len(), 0, |f| got.push(f)) }.unwrap();
    assert_eq!(&buf[..n], b"W");
    assert_eq!(got.len(), 3);
    for (i, f) in got.into_iter().enumerate() {
        let mut two = [0u8; 2];
        std::fs::File::from(f).read_exact_at(&mut two, 0).unwrap();
        assert_eq!(two, [i as u8 + 1; 2]);
    }
}

#[test]
fn ipc_a_crash_log_written_through_one_copy_reads_from_the_other() {
    // The worker writes with write() (advancing the shared offset); the
    // supervisor reads from offset 0 with pread, unaffected by it.
    let ours = std::fs::File::from(fd::memfd(c"plait-crash-test", 0).unwrap());
    let theirs = ours.try_clone().unwrap();
    use std::io::Write;
    (&theirs).write_all(b"Fatal Python error: Segmentation fault\n").unwrap();
    let mut back = vec![0u8; 39];
    ours.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"Fatal Python error: Segmentation fault\n");
}
