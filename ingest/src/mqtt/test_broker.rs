//! A real Mosquitto broker on a free loopback port, for tests and benchmarks (never the
//! system service: its own generated configuration in a temporary directory). `make
//! deps` installs Mosquitto when missing (`apt-get install -y mosquitto`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Mosquitto process, killed on drop.
#[derive(Debug)]
pub struct TestMosquitto {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// Where the mosquitto binary is: `$MOSQUITTO_BIN`, `mosquitto` on PATH or in
/// `/usr/sbin` (Debian's package).
pub fn mosquitto_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("MOSQUITTO_BIN")
        && !path.is_empty()
    {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

impl TestMosquitto {
    /// Starts Mosquitto on `127.0.0.1:<free port>` with a large in-flight window and
    /// queue (so a persistent session keeps everything published while the bridge is
    /// away); waits up to 10 s for it to listen.
    pub fn start() -> Result<TestMosquitto, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("free port: {error}"))?
            .port();
        TestMosquitto::start_on(port)
    }

    /// Starts Mosquitto like [`TestMosquitto::start`] on `127.0.0.1:port`, e.g. the port
    /// of a broker killed before (a broker restart, as its clients see it).
    pub fn start_on(port: u16) -> Result<TestMosquitto, String> {
        let binary = mosquitto_binary()
            .ok_or("mosquitto not found: run `make deps` (apt-get install -y mosquitto)")?;
        let dir =
            std::env::temp_dir().join(format!("gridpulse-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages 1000\nmax_queued_messages 1000000\n\
                 max_packet_size 2000000\nlog_dest stderr\nlog_type error\n"
            ),
        )
        .map_err(|error| format!("{}: {error}", conf.display()))?;
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("{}: {error}", binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut broker = TestMosquitto { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("mosquitto exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("mosquitto did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
