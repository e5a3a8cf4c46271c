//! Inter-process transport: the parts of `plait.process` (and of the
//! process pool's large buffers) that need no Python.
//!
//! * [`fd`]: the system calls, wrapped once: socket pairs, non-blocking
//!   `send`/`recv`, descriptor passing (`SCM_RIGHTS`), memfds, and
//!   [`wait_fd`], which polls in slices so a [`WaitCtx`](crate::park::WaitCtx)'s
//!   interrupt check (Ctrl-C in the main thread) and deadline are honoured.
//! * [`mapping`]: shared mappings of memfds and process-shared futexes on
//!   their words.
//! * [`frame`]: length-prefix framing for byte streams (`Pipe`).
//! * [`packet`]: `SOCK_SEQPACKET` packets for `Queue`'s large items (a memfd
//!   rides along past [`INLINE_MAX`]), and the [`Sink`]s they go to.
//! * [`ring`]: the shared-memory ring that carries `Queue`'s small items
//!   and the place in line of large ones.
//! * [`feeder`]: the per-process FIFO and thread that keep `put` from
//!   blocking on a full ring or socket.
//! * [`counter`]: [`SharedCounter`], a `Queue`'s item count and bound.
//! * [`shm`]: the process pool's shared-memory segments and their
//!   per-process allocator.
//!
//! The items of the old flat `ipc` module are re-exported here, so
//! `plait_core::ipc::{send_with_fd, Feeder, ...}` keep working.

pub mod counter;
pub mod fd;
pub mod feeder;
pub mod frame;
pub mod mapping;
pub mod packet;
pub mod ring;
pub mod shm;

pub use counter::SharedCounter;
pub use fd::{ready_now, recv_some, send_some, send_with_fd, set_nonblocking, socketpair, wait_fd};
pub use feeder::Feeder;
pub use frame::{decode_header, encode_header};
pub use packet::{recv_packet, try_send_inline, Packet, RingSink, Sink, SocketSink, INLINE_MAX};
