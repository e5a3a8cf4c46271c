//! Every public core type is `Send + Sync` (tokio `tests/async_send_sync.rs`
//! style): the binding shares them across threads behind `Arc`s, and a
//! free-threaded interpreter relies on it.
#![cfg(not(loom))]
#![allow(dead_code)]

use plait_core::detach::Inline;
use plait_core::fork::Registration;
use plait_core::park::{Node, Outcome, WaitCtx, WaitList};
use plait_core::queue::{GetError, Order, PutError, Queue, TooManyTaskDone};
use plait_core::spin::{SpinGuard, SpinMutex};
use plait_core::timer::{Key, ScheduleError, TimerCell, TimerQueue, TimerState, TimerThread};
use plait_core::sync::{
    Barrier, BarrierError, CondVar, Event, Lock, Phase, RLock, RLockError, ReleaseError, Semaphore,
};

fn require_send<T: Send>() {}
fn require_sync<T: Sync>() {}

macro_rules! assert_send_sync {
    ($($t:ty),* $(,)?) => {
        $(
            const _: fn() = || {
                require_send::<$t>();
                require_sync::<$t>();
            };
        )*
    };
}

assert_send_sync!(
    Lock,
    RLock,
    RLockError,
    Semaphore,
    ReleaseError,
    Event,
    CondVar,
    Barrier,
    Phase,
    BarrierError<String>,
    Queue<i64>,
    Queue<String>,
    Order,
    PutError<i64, String>,
    GetError<String>,
    TooManyTaskDone,
    Node,
    std::sync::Arc<Node>,
    WaitList,
    WaitCtx<'static>,
    Outcome,
    Inline,
    Registration,
    SpinMutex<Vec<u8>>,
    Key,
    TimerQueue<i64>,
    TimerCell,
    TimerState,
    TimerThread<i64>,
    ScheduleError<i64>,
);

fn require_guard_send() {
    // The queue returns its guard from a detached section: it must be Send.
    require_send::<SpinGuard<'static, Vec<u8>>>();
}

#[test]
fn send_sync_compiles() {
    // The assertions above are checked at compile time.
}

// The inter-process transport and shared-memory segments (`ipc/`).
use plait_core::ipc::counter::SharedCounter;
use plait_core::ipc::feeder::Feeder;
use plait_core::ipc::mapping::SharedMap;
use plait_core::ipc::packet::{Packet, RingSink, SocketSink};
use plait_core::ipc::ring::Ring;
use plait_core::ipc::shm::{Head, Lease, Mapping, Segment, SegmentPool};

assert_send_sync!(SharedCounter, Feeder, SharedMap, Packet, RingSink, SocketSink, Ring, Head, Lease, Mapping, Segment, SegmentPool);

mod future_types {
    use super::{require_send, require_sync};
    use plait_core::future::{Future, InvalidState, Resolution, State};

    assert_send_sync!(Future<u32, u32>, Resolution<u32>, InvalidState, State);
}

// The reactor.
assert_send_sync!(
    plait_core::reactor::Epoll,
    plait_core::reactor::Events,
    plait_core::reactor::Event,
    plait_core::reactor::Poller,
    plait_core::reactor::TimerHeap<i64>,
    plait_core::reactor::ReadyQueue<i64>,
    plait_core::reactor::Pace,
);

// The process-pool supervisor (`plait_core::pool`).
assert_send_sync!(
    plait_core::pool::Policy<u64, u32>,
    plait_core::pool::Task<u64>,
    plait_core::pool::Executing,
    plait_core::pool::Ending,
    plait_core::pool::Failure,
    plait_core::pool::Start,
    plait_core::pool::Shared<u64>,
    plait_core::pool::Config,
    plait_core::pool::Zygote,
    plait_core::pool::Reply<'static>,
    plait_core::pool::dispatch::Stopped<u64, u32>,
    plait_core::pool::frame::Frame<'static>,
    plait_core::pool::worker::Conn,
    plait_core::pool::worker::Launch,
    plait_core::pool::worker::Proc,
);
