//! The black-box harness: start the real `shardrelay` binary on `127.0.0.1:0`, learn its
//! ports from its ready line, and talk to it over real sockets — tungstenite's blocking
//! client as the independent WebSocket client, raw sockets for malformed input.
//!
//! The driver under test comes from `SHARDRELAY_DRIVER` (the Makefile runs the suite
//! once per driver); nothing here sleeps to synchronise: waits poll a condition against
//! a deadline or block on a socket with a read timeout.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
#[allow(unused_imports)] // each test file uses its own share of the model
pub use shardrelay_stats_model::{
    ConnKind, Dropped, Event, Gauge, Histogram, Rejected, ShardTallies, Stats, Style, Tallies,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long any single blocking read in a test may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running relay process.
pub struct Relay {
    /// The child process.
    pub child: Child,
    /// Public listener.
    pub public: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Everything it wrote to stderr so far.
    pub logs: Arc<Mutex<String>>,
}

impl Relay {
    /// Start with the test defaults plus `args`.
    pub fn start(args: &[&str]) -> Relay {
        Relay::start_command(Command::new(env!("CARGO_BIN_EXE_shardrelay")), args)
    }

    /// Start under an open-files limit of `soft` (current) and `hard` (maximum)
    /// descriptors, set in the child before it runs the relay.
    pub fn start_with_nofile(soft: u64, hard: u64, args: &[&str]) -> Relay {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardrelay"));
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setrlimit(2), which is async-signal-safe, on a local copied into it.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Relay::start_command(command, args)
    }

    /// Start `command` (the relay binary) with the test defaults plus `args`.
    pub fn start_command(mut command: Command, args: &[&str]) -> Relay {
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shardrelay");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Relay::adopt(child, logs)
    }

    /// Read a started relay's ready line (its stdout) and wrap it, with `logs` as what
    /// its stderr has said (empty when the caller keeps stderr itself).
    pub fn adopt(mut child: Child, logs: Arc<Mutex<String>>) -> Relay {
        let stdout = child.stdout.take().expect("stdout piped");
        let mut reader = BufReader::new(stdout);
        let mut ready = String::new();
        reader.read_line(&mut ready).expect("read ready line");
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
        });
        assert!(
            ready.starts_with("shardrelay: listening"),
            "no ready line; got {ready:?}; logs: {}",
            logs.lock().unwrap()
        );
        let field = |name: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {ready:?}"))
        };
        Relay {
            public: field("public="),
            admin: field("admin="),
            child,
            logs,
        }
    }

    /// The relay's stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `ws://` URL of a public path.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.public, path)
    }

    /// Open a WebSocket on the public listener with extra headers.
    pub fn ws(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        ws_at(self.public, path, headers)
    }

    /// A pyrycode binary on `/v1/server`.
    pub fn binary(&self, server_id: &str) -> Ws {
        binary_at(self.public, server_id)
    }

    /// A pyrycode phone on `/v1/client`.
    pub fn phone(&self, server_id: &str, token: &str) -> Ws {
        phone_at(self.public, server_id, token)
    }

    /// Send a raw HTTP request to the public listener; returns the whole response.
    pub fn raw_http(&self, request: &[u8]) -> HttpResponse {
        raw_http(self.public, request)
    }

    /// `GET path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> HttpResponse {
        let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
        raw_http(self.admin, req.as_bytes())
    }

    /// `/stats` as JSON. Every read is also checked against the typed model (see
    /// [`Relay::stats_typed`]): a body with a key the model lacks, or without one it
    /// has, fails the test that read it.
    pub fn stats(&self) -> Value {
        let resp = self.admin_get("/stats");
        assert_eq!(resp.status, 200, "stats: {}", resp.body_text());
        let value: Value = serde_json::from_slice(&resp.body).expect("stats JSON");
        typed_stats(&value);
        value
    }

    /// `GET path` (a `/stats` URL) as the typed model shared with the relay, the stats
    /// view and the load generator: unknown or missing keys fail.
    pub fn stats_at(&self, path: &str) -> Stats {
        let resp = self.admin_get(path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.body_text());
        serde_json::from_slice(&resp.body)
            .unwrap_or_else(|e| panic!("{path} does not fit the typed model: {e}"))
    }

    /// `/stats` as the typed model.
    pub fn stats_typed(&self) -> Stats {
        self.stats_at("/stats")
    }

    /// The `totals` of `/stats`, typed.
    pub fn totals(&self) -> Tallies {
        self.stats_typed().totals
    }

    /// Wait until the typed `/stats` totals satisfy `cond` (`what` names it on timeout).
    pub fn wait_totals(&self, what: &str, mut cond: impl FnMut(&Tallies) -> bool) {
        wait_until(what, || cond(&self.totals()));
    }

    /// `/health` as JSON.
    pub fn health(&self) -> Value {
        let resp = self.admin_get("/health");
        assert_eq!(resp.status, 200);
        serde_json::from_slice(&resp.body).expect("health JSON")
    }

    /// A figure from `/stats` totals, by JSON pointer (e.g. `/dropped/unknown_conn_id`),
    /// read through the typed model: see [`total_of`]. New tests can use
    /// [`Relay::totals`] and the key enums directly.
    pub fn total(&self, pointer: &str) -> u64 {
        total_of(&self.totals(), pointer)
    }

    /// Wait until a `/stats` totals counter reaches `at_least`.
    pub fn wait_total(&self, pointer: &str, at_least: u64) {
        wait_until(&format!("{pointer} >= {at_least}"), || {
            self.total(pointer) >= at_least
        });
    }

    /// Send a signal to the relay.
    pub fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through libc with a pid we own.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Wait for the process to exit within `limit`; returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking WebSocket client.
pub type Ws = WebSocket<TcpStream>;

/// `value` (a `/stats` body) as the typed model; panics, naming the mismatch, when the
/// body has a key the model lacks or lacks one it has.
pub fn typed_stats(value: &Value) -> Stats {
    let stats: Stats = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("/stats does not fit the typed model: {e}"));
    // Nothing dropped on the way in: the model written back out is the body read.
    let back = serde_json::to_value(&stats).expect("model serialises");
    assert_eq!(&back, value, "/stats and its typed model differ");
    stats
}

/// Figure `pointer` of typed totals `t`, 0 when not counted yet. A key name the model
/// does not know (`/events/pairs_matchd`) panics at once instead of reading 0 forever;
/// a negative gauge reads 0, as it did when read as JSON `u64`.
pub fn total_of(t: &Tallies, pointer: &str) -> u64 {
    fn key<K>(kind: &str, name: &str, from: fn(&str) -> Option<K>) -> K {
        from(name).unwrap_or_else(|| panic!("/stats has no {kind} named `{name}`"))
    }
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["accepted"] => t.accepted,
        ["handoffs"] => t.handoffs,
        ["adopted"] => t.adopted,
        ["messages_in"] => t.messages_in,
        ["messages_out"] => t.messages_out,
        ["bytes_in"] => t.bytes_in,
        ["bytes_out"] => t.bytes_out,
        ["connections", k] => t.connections(key("connection kind", k, ConnKind::from_name)),
        ["rejected", k] => t.rejected(key("rejected reason", k, Rejected::from_name)),
        ["dropped", k] => t.dropped(key("dropped reason", k, Dropped::from_name)),
        ["events", k] => t.event(key("event", k, Event::from_name)),
        ["gauges", k] => u64::try_from(t.gauge(key("gauge", k, Gauge::from_name))).unwrap_or(0),
        ["forward_by_mode", style, field] => {
            let style = key("style", style, Style::from_name);
            t.forward_by_mode
                .get(&style)
                .map_or(0, |h| histogram_field(h, field))
        }
        ["histograms", name, field] => {
            let h = match *name {
                "forward" => &t.histograms.forward,
                "handshake" => &t.histograms.handshake,
                "handoff" => &t.histograms.handoff,
                other => panic!("/stats has no histogram named `{other}`"),
            };
            histogram_field(h, field)
        }
        _ => panic!("`{pointer}` is not a /stats totals figure"),
    }
}

/// One integer field of a histogram summary.
fn histogram_field(h: &Histogram, field: &str) -> u64 {
    match field {
        "count" => h.count,
        "min" => h.min,
        "p50" => h.p50,
        "p90" => h.p90,
        "p99" => h.p99,
        "p999" => h.p999,
        "max" => h.max,
        other => panic!("a /stats histogram has no integer field `{other}`"),
    }
}

/// Open a WebSocket on `addr` (a relay's public listener, or a balancer in front of
/// relays) with extra headers.
pub fn ws_at(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        let name: tungstenite::http::HeaderName = name.parse().expect("header name");
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).expect("header value"));
    }
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, _resp)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("blocking handshake interrupted")
        }
    }
}

/// A pyrycode binary on `addr`'s `/v1/server`.
pub fn binary_at(addr: SocketAddr, server_id: &str) -> Ws {
    ws_at(
        addr,
        "/v1/server",
        &[
            ("X-Pyrycode-Server", server_id),
            ("X-Pyrycode-Version", "1.0.0"),
            ("User-Agent", "pyrycode-binary/1.0"),
        ],
    )
    .expect("binary upgrade")
}

/// A pyrycode phone on `addr`'s `/v1/client`.
pub fn phone_at(addr: SocketAddr, server_id: &str, token: &str) -> Ws {
    ws_at(
        addr,
        "/v1/client",
        &[
            ("X-Pyrycode-Server", server_id),
            ("X-Pyrycode-Token", token),
            ("User-Agent", "pyrycode-phone/1.0"),
            ("X-Pyrycode-Device-Name", "test phone"),
        ],
    )
    .expect("phone upgrade")
}

/// Poll `cond` every few milliseconds until it holds, failing the test after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read the next data message (text or binary), answering nothing by hand (tungstenite
/// answers pings itself).
pub fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read message") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            Message::Close(frame) => panic!("unexpected close {frame:?}"),
            _ => continue,
        }
    }
}

/// Read the next text message.
pub fn next_text(ws: &mut Ws) -> String {
    match next_message(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Read until the relay's close frame; returns its code and reason. Data messages
/// before it are skipped.
pub fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.to_string())
            }
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Close from the client side with a code and wait for the echo.
pub fn close_with(ws: &mut Ws, code: u16) {
    ws.close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    }))
    .expect("send close");
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines (lower-cased names).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send raw bytes, read until EOF, parse the response.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request).expect("write request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Parse a whole HTTP/1.1 response (Content-Length or to EOF).
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A valid upgrade request head for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A raw client socket that completed the upgrade (for malformed frames).
pub struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read past what was consumed.
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrade `path` with extra header lines.
    pub fn connect(relay: &Relay, path: &str, extra: &str) -> RawWs {
        match RawWs::try_connect(relay, path, extra) {
            Ok(ws) => ws,
            Err(status) => panic!("not upgraded: status {status}"),
        }
    }

    /// Upgrade `path` with extra header lines; the status when the relay refuses.
    pub fn try_connect(relay: &Relay, path: &str, extra: &str) -> Result<RawWs, u16> {
        let mut stream = TcpStream::connect(relay.public).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&upgrade_request(path, extra)).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = stream.read(&mut chunk).expect("read 101");
            assert!(n > 0, "closed before 101");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(parse_response(&buf).status);
        }
        let rest = buf.split_off(end);
        Ok(RawWs { stream, buf: rest })
    }

    /// Send a masked client frame (fin, opcode, payload) with the given first-byte flags.
    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        self.stream
            .write_all(&client_frame(first_byte, payload, masked))
            .unwrap();
    }

    /// Read one server frame: (first byte, payload). None at EOF.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read frame: {e}"),
            }
        }
    }

    /// Read frames until a close frame; returns (code, reason). Pings are skipped.
    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            let (b0, payload) = self.read_frame().expect("EOF before close frame");
            if b0 & 0x0f == 0x8 {
                if payload.len() < 2 {
                    return (1005, String::new());
                }
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
            }
        }
    }

    /// True once the relay closed the TCP connection (EOF or reset) after any frames.
    pub fn wait_eof(&mut self) -> bool {
        while self.read_frame().is_some() {}
        true
    }
}

/// Encode a client frame with an arbitrary first byte.
pub fn client_frame(first_byte: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Parse one unmasked server frame from the front of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, off) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(off..off + len)?.to_vec();
    Some(((buf[0], payload), off + len))
}

/// A TCP connection to `to` from source address `from` (any port): several 127.0.0.x
/// sources stand for several clients in per-address tests.
pub fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::V4(std::net::SocketAddrV4::new(from, 0)).into())
        .expect("bind source address");
    socket.connect(&to.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}
