//! One relay process per listener address (issue 15, acceptance point 7), black-box:
//! a second relay started on an address a live relay holds exits 2 with one stderr line
//! naming that address (public or admin) and leaves the first relay serving; a relay
//! started right after `kill -9` of the previous one binds at once, 20 times in a row, on
//! each driver.
//!
//! This is the one file where a test reuses a specific port: the ports the first relay
//! got from the OS (read from its ready line), which is what a restart does.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// Restarts in a row each driver must survive.
const RESTARTS: usize = 20;

/// A relay started on given addresses: either it printed its ready line, or it exited.
struct Started {
    /// The process.
    child: Child,
    /// `public=` and `admin=` of the ready line, when it came.
    ready: Option<(SocketAddr, SocketAddr)>,
    /// Its whole stderr, once the process has exited.
    stderr: Option<JoinHandle<String>>,
    /// Keeps stdout drained after the ready line.
    _stdout: JoinHandle<()>,
}

impl Started {
    /// Start `shardrelay --listen public --admin-listen admin --driver driver`, and wait
    /// for its ready line or its exit.
    fn on(public: &str, admin: &str, driver: &str) -> Started {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
            .args([
                "--listen",
                public,
                "--admin-listen",
                admin,
                "--driver",
                driver,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shardrelay");
        let mut err = child.stderr.take().expect("stderr piped");
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = err.read_to_string(&mut all);
            all
        });
        let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let stdout = std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Started {
            child,
            ready: parse_ready(&line),
            stderr: Some(stderr),
            _stdout: stdout,
        }
    }

    /// Wait for the exit of a relay that printed no ready line; its status and stderr.
    fn exit(mut self) -> (ExitStatus, String) {
        let status = wait_status(&mut self.child);
        let reader = self.stderr.take().expect("stderr read once");
        let stderr = reader.join().expect("stderr reader");
        (status, stderr)
    }

    /// `GET /health` on the public listener answers 200.
    fn serves(&self) -> bool {
        let (public, _) = self.ready.expect("ready");
        let req = b"GET /health HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n";
        raw_http(public, req).status == 200
    }

    /// `kill -9`, then reap: the process is gone when this returns.
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `public=` and `admin=` from a ready line.
fn parse_ready(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.starts_with("shardrelay: listening") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("public=")?, field("admin=")?))
}

/// Wait (bounded) for a child to exit.
fn wait_status(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "relay did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A second relay on a held address exits 2, naming it on one stderr line.
fn assert_refused(second: Started, addr: SocketAddr, which: &str) {
    assert!(second.ready.is_none(), "second relay started on {addr}");
    let (status, stderr) = second.exit();
    assert_eq!(status.code(), Some(2), "exit status; stderr: {stderr}");
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&addr.to_string()))
        .collect();
    assert_eq!(named.len(), 1, "one line naming {addr}; stderr: {stderr}");
    assert!(named[0].contains(which), "line names {which}: {}", named[0]);
}

#[test]
fn p7_double_start_on_public_address_exits_2_naming_it() {
    let first = Relay::start(&[]);
    let second = Started::on(&first.public.to_string(), "127.0.0.1:0", "auto");
    assert_refused(second, first.public, "public");
    assert_eq!(first.health()["ok"], true, "the first relay still serves");
}

#[test]
fn p7_double_start_on_admin_address_exits_2_naming_it() {
    let first = Relay::start(&[]);
    let second = Started::on("127.0.0.1:0", &first.admin.to_string(), "auto");
    assert_refused(second, first.admin, "admin");
    assert_eq!(first.health()["ok"], true, "the first relay still serves");
}

/// Every connection of a second start lands on the first relay: a phone of a binary
/// held by the first relay is never told `4404` because a twin took its connection
/// (the review saw 11 of 20 phones refused so).
#[test]
fn p7_after_a_refused_double_start_every_phone_reaches_its_binary() {
    let first = Relay::start(&[]);
    let mut binary = first.binary("srv-double");
    let second = Started::on(&first.public.to_string(), "127.0.0.1:0", "auto");
    assert_refused(second, first.public, "public");
    let mut phones = Vec::new();
    // 12: under the default 16 phones per binary.
    for i in 0..12 {
        let mut phone = first.phone("srv-double", &format!("tok-{i}"));
        let body = format!(r#"{{"n":{i}}}"#);
        phone
            .send(tungstenite::Message::text(body.clone()))
            .expect("phone send");
        let got = next_text(&mut binary);
        assert!(got.contains(&body), "binary got {got}, expected {body}");
        phones.push(phone);
    }
}

/// Start, then 20 times: hold a live WebSocket (so the driver has a read in flight on
/// it), `kill -9`, reap, and start again on the same two ports — which must bind on the
/// first start and serve.
fn restart_after_kill9(driver: &str) {
    let mut relay = Started::on("127.0.0.1:0", "127.0.0.1:0", driver);
    let (public, admin) = relay.ready.expect("first relay ready");
    for round in 0..RESTARTS {
        assert!(relay.serves(), "round {round}: relay serves");
        let held = TcpStream::connect(public).expect("connect");
        relay.kill9();
        let next = Started::on(&public.to_string(), &admin.to_string(), driver);
        if next.ready.is_none() {
            let (status, stderr) = next.exit();
            panic!("round {round}: restart on {public}/{admin} failed ({status}): {stderr}");
        }
        assert_eq!(next.ready, Some((public, admin)), "same ports");
        drop(held);
        relay = next;
    }
    assert!(relay.serves(), "last relay serves");
}

#[test]
fn p7_restart_right_after_kill9_binds_20_times_uring() {
    restart_after_kill9("uring");
}

#[test]
fn p7_restart_right_after_kill9_binds_20_times_epoll() {
    restart_after_kill9("epoll");
}

/// The shards of one process still share the port: with several shards, connections
/// are served (and closed on shutdown) whichever shard accepted them.
#[test]
fn p7_shards_share_one_listener_and_stop_together() {
    let mut relay = Relay::start(&["--shards", "4"]);
    let conns: Vec<Ws> = (0..16).map(|i| relay.binary(&format!("srv-{i}"))).collect();
    assert_eq!(relay.health()["connected_binaries"], 16);
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(IO_TIMEOUT);
    assert!(
        status.success(),
        "clean exit: {status}; logs: {}",
        relay.logs()
    );
    assert!(
        !relay.logs().contains("accept failed"),
        "no accept error at shutdown: {}",
        relay.logs()
    );
    drop(conns);
}
