//! The supervisor thread with real child processes: a stand-in worker (a
//! few lines of Python speaking the frame protocol, started through a shell
//! script in place of the interpreter) and a host that records how each
//! task ended. Skipped where no `python3` is on the PATH.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plait_core::park::{Outcome, WaitCtx};
use plait_core::pool::worker::Launch;
use plait_core::pool::{supervisor, Config, Ending, Host, Reply, Shared, Start, Task};

/// Answers `S` (or `F` if its setup says `fail`), then per task: `die`
/// exits with code 3, `hang` sleeps, `raise` answers `E`, anything else is
/// answered `R` with its payload reversed.
const FAKE_WORKER: &str = r#"
import os, socket, struct, sys, time
sock = socket.socket(fileno=int(sys.argv[1]))
rfile = sock.makefile("rb")
def recv():
    head = rfile.read(5)
    if len(head) < 5:
        sys.exit(0)
    n, kind = struct.unpack("<IB", head)
    return kind, rfile.read(n - 1)
def send(kind, body):
    sock.sendall(struct.pack("<IB", len(body) + 1, ord(kind)) + body)
_, setup = recv()
if setup == b"fail":
    send("F", b"initializer failed")
    sys.exit(3)
send("S", b"")
while True:
    _, body = recv()
    tid, payload = body[:8], body[12:]  # id, claim slot, payload
    if payload == b"die":
        os._exit(3)
    if payload == b"hang":
        time.sleep(120)
    if payload == b"raise":
        send("E", tid + b"boom")
        continue
    send("R", tid + payload[::-1])
"#;

fn python() -> Option<String> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "pass"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| "python3".to_string())
}

/// A directory holding the stand-in worker and the script that the
/// supervisor runs as `SCRIPT -m plait._worker FD`.
fn fake_interpreter(tag: &str) -> Option<PathBuf> {
    let py = python()?;
    let dir = std::env::temp_dir().join(format!("plait-pool-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let worker = dir.join("worker.py");
    std::fs::write(&worker, FAKE_WORKER).unwrap();
    let script = dir.join("python");
    std::fs::write(&script, format!("#!/bin/sh\nexec {py} {} \"$3\"\n", worker.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(script)
}

/// Records how each task (its handle is its id) ended.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<HashMap<u64, Vec<String>>>>);

impl Recorder {
    fn push(&self, id: u64, what: String) {
        self.0.lock().unwrap().entry(id).or_default().push(what);
    }
}

impl Host for Recorder {
    type Task = u64;
    type Pending = ();

    fn try_start(&self, _: &u64) -> Start {
        Start::Running
    }

    fn result(&self, id: u64, reply: Reply<'_>, _: &mut Vec<()>) -> Option<PathBuf> {
        let tag = if reply.is_error { "E" } else { "R" };
        self.push(id, format!("{tag} {}", String::from_utf8_lossy(reply.body)));
        None
    }

    fn ended(&self, id: u64, how: Ending, _: &mut Vec<()>) {
        self.push(id, format!("{how:?}"));
    }

    fn promoted(&self, _: &u64) {}

    fn deliver(
        &self,
        _: Vec<()>,
        starting: Vec<(usize, Task<u64>)>,
        started: &mut Vec<(usize, Task<u64>)>,
        _: &mut Vec<Task<u64>>,
    ) {
        started.extend(starting);
    }
}

fn run_pool(python: &str, setup: &[u8], tasks: &[(&str, Option<Duration>)]) -> HashMap<u64, Vec<String>> {
    let shared = Arc::new(Shared::<u64>::new().unwrap());
    let host = Recorder::default();
    let launch = Launch { python: python.into(), setup: Some(setup.to_vec()), inherit_fds: Vec::new(), zygote: None };
    let cfg = Config { max_workers: 2, max_tasks_per_child: None, launch, claims: None };
    let thread = supervisor::start(Arc::clone(&shared), host.clone(), cfg).unwrap();
    for (i, (payload, timeout)) in tasks.iter().enumerate() {
        let id = i as u64 + 1;
        shared.submit(Task::new(id, payload.as_bytes().to_vec(), *timeout, id));
    }
    shared.close();
    shared.shutdown(false, false);
    // A generous bound, only to turn a hang into a failure.
    let stopped = shared.stopped().wait(&WaitCtx::timeout(Some(Duration::from_secs(120))));
    assert_eq!(stopped, Outcome::Notified, "the supervisor never stopped");
    assert!(shared.is_stopped());
    thread.join().unwrap();
    let out = host.0.lock().unwrap().clone();
    for id in 1..=tasks.len() as u64 {
        assert_eq!(out.get(&id).map(Vec::len), Some(1), "task {id} ended {:?}", out.get(&id));
    }
    out
}

#[test]
fn results_deaths_and_time_limits_with_real_workers() {
    let Some(script) = fake_interpreter("work") else {
        eprintln!("no python3: skipped");
        return;
    };
    let mut tasks = vec![("abc", None); 20];
    tasks.push(("raise", None));
    tasks.push(("die", None));
    tasks.push(("hang", Some(Duration::from_millis(300))));
    tasks.extend(vec![("xyz", None); 20]);
    let out = run_pool(script.to_str().unwrap(), b"", &tasks);
    let _ = std::fs::remove_dir_all(script.parent().unwrap());
    for (i, (payload, _)) in tasks.iter().enumerate() {
        let got = &out[&(i as u64 + 1)][0];
        match *payload {
            "abc" => assert_eq!(got, "R cba"),
            "xyz" => assert_eq!(got, "R zyx"),
            "raise" => assert_eq!(got, "E boom"),
            "die" => {
                assert!(got.starts_with("Failed(WorkerDied"), "{got}");
                assert!(got.contains("exited with code 3 while running this task"), "{got}");
            }
            "hang" => assert!(got.starts_with("Failed(Timeout"), "{got}"),
            _ => unreachable!(),
        }
    }
}

#[test]
fn a_failing_initializer_breaks_the_pool() {
    let Some(script) = fake_interpreter("init") else {
        eprintln!("no python3: skipped");
        return;
    };
    let out = run_pool(script.to_str().unwrap(), b"fail", &[("a", None), ("b", None), ("c", None)]);
    let _ = std::fs::remove_dir_all(script.parent().unwrap());
    for ends in out.values() {
        assert!(ends[0].starts_with("Failed(Broken"), "{ends:?}");
        assert!(ends[0].contains("its initializer failed\\ninitializer failed"), "{ends:?}");
    }
}

#[test]
fn a_worker_that_cannot_start_breaks_the_pool() {
    let out = run_pool("/nonexistent/python", b"", &[("a", None), ("b", None)]);
    for ends in out.values() {
        assert!(ends[0].starts_with("Failed(Broken, \"cannot start a worker process"), "{ends:?}");
    }
}
