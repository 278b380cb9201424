//! The chaos client's sockets: plain blocking std sockets with a timeout on every read
//! and write, so no fault can hang a worker. A WebSocket client reusing the load
//! generator's codec (`ws::frame`, `ws::handshake`), a raw HTTP exchange for tickets,
//! and the two ways of leaving badly: reset (`SO_LINGER` 0) and half-close.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::ws::frame::{encode_close, encode_frame, EventKind, SendOp, WsDecoder};
use crate::ws::handshake;

/// Largest message the chaos client buffers from the relay: its probes are tiny.
const MAX_INCOMING: usize = 1 << 20;
/// Bytes read per call.
const READ_CHUNK: usize = 16 * 1024;

/// What the relay sent next on a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A close frame, with its code.
    Close(Option<u16>),
    /// The TCP connection ended (EOF or reset) without a close frame.
    Eof,
}

/// Whether an error only means "no bytes within the timeout".
pub fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Whether an error means the peer is gone.
pub fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

/// Connects with `timeout` on the connect and on every later read and write.
pub fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("connect_{:?}", e.kind()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Closes `stream` with a reset: `SO_LINGER` 0 makes close(2) send RST, dropping
/// whatever was unsent — a client killed mid-frame.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// A blocking WebSocket client connection.
pub struct WsClient {
    /// The socket.
    pub stream: TcpStream,
    /// The relay's frames, decoded.
    decoder: WsDecoder,
    /// Masking key of every frame we send (any key is valid; it need not be secret
    /// for a test client).
    mask: [u8; 4],
}

impl WsClient {
    /// Connects and upgrades `path` with extra headers.
    pub fn open(
        target: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<WsClient, String> {
        let stream = connect(target, timeout)?;
        WsClient::upgrade(stream, target, path, headers)
    }

    /// Upgrades `path` on an already connected `stream` (whose timeouts are set).
    pub fn upgrade(
        mut stream: TcpStream,
        target: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, String> {
        let key = handshake::new_key();
        let request = handshake::upgrade_request(&target.to_string(), path, &key, headers);
        stream
            .write_all(&request)
            .map_err(|e| format!("upgrade_write_{:?}", e.kind()))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_len = loop {
            if let Some(len) =
                handshake::check_response(&buf, &key).map_err(|e| format!("upgrade: {e}"))?
            {
                break len;
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err("upgrade_eof".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("upgrade_read_{:?}", e.kind())),
            }
        };
        let mut decoder = WsDecoder::new(READ_CHUNK, MAX_INCOMING);
        decoder.push(&buf[head_len..]);
        Ok(WsClient {
            stream,
            decoder,
            mask: [0x3c, 0xa5, 0x0f, 0x96],
        })
    }

    /// Sends one whole message.
    pub fn send(&mut self, op: SendOp, payload: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode_frame(&mut frame, op, payload, self.mask);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("send_{:?}", e.kind()))
    }

    /// Sends bytes as they are (partial frames, garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next data message or ending, answering pings; bounded by `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Incoming, String> {
        loop {
            let event = self
                .decoder
                .next_event()
                .map_err(|e| format!("bad_frame: {e}"))?;
            if let Some(event) = event {
                let payload = self.decoder.payload(&event).to_vec();
                match event.kind {
                    EventKind::Text => return Ok(Incoming::Text(payload)),
                    EventKind::Binary => return Ok(Incoming::Binary(payload)),
                    EventKind::Close(code) => return Ok(Incoming::Close(code)),
                    EventKind::Ping => self.send(SendOp::Pong, &payload)?,
                    EventKind::Pong => {}
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Err("no_answer_in_time".into());
            }
            let mut chunk = [0u8; READ_CHUNK];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Incoming::Eof),
                Ok(n) => self.decoder.push(&chunk[..n]),
                Err(e) if gone(&e) => return Ok(Incoming::Eof),
                Err(e) if timed_out(&e) => return Err("no_answer_in_time".into()),
                Err(e) => return Err(format!("read_{:?}", e.kind())),
            }
        }
    }

    /// Reads past data messages to the relay's close frame (`Some(code)`) or the end of
    /// the connection (`None`).
    pub fn ending(&mut self, deadline: Instant) -> Result<Option<u16>, String> {
        loop {
            match self.next(deadline)? {
                Incoming::Close(code) => return Ok(Some(code.unwrap_or(1005))),
                Incoming::Eof => return Ok(None),
                Incoming::Text(_) | Incoming::Binary(_) => {}
            }
        }
    }

    /// Closes cleanly: our close frame, then the relay's echo (or EOF).
    pub fn close(mut self, deadline: Instant) -> Result<(), String> {
        let mut frame = Vec::new();
        encode_close(&mut frame, 1000, self.mask);
        self.send_raw(&frame)
            .map_err(|e| format!("close_{:?}", e.kind()))?;
        self.ending(deadline).map(|_| ())
    }

    /// Answers the relay's close frame (already read) and waits for the end.
    pub fn finish_closed(mut self, deadline: Instant) {
        let mut frame = Vec::new();
        encode_close(&mut frame, 1000, self.mask);
        let _ = self.send_raw(&frame);
        let _ = self.ending(deadline);
    }

    /// Shuts down the write half: the relay reads EOF, this side can still read.
    pub fn half_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Leaves with a reset.
    pub fn kill(self) {
        reset(self.stream);
    }

    /// The frame header (and mask) of a masked binary frame announcing `len` bytes.
    pub fn frame_header(&self, len: u64) -> Vec<u8> {
        let mut out = vec![0x82];
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&self.mask);
        out
    }
}

/// A raw HTTP/1.1 connection for ticket transfers.
pub struct HttpClient {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes received so far (head and body).
    pub received: Vec<u8>,
}

impl HttpClient {
    /// Connects and sends `head` (and nothing else yet).
    pub fn send_head(
        target: SocketAddr,
        head: &[u8],
        timeout: Duration,
    ) -> Result<HttpClient, String> {
        let mut stream = connect(target, timeout)?;
        stream
            .write_all(head)
            .map_err(|e| format!("head_write_{:?}", e.kind()))?;
        Ok(HttpClient {
            stream,
            received: Vec::new(),
        })
    }

    /// Reads until `done(received)` holds, EOF/reset (returns false) or the deadline
    /// (an error).
    pub fn read_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool, String> {
        let mut chunk = [0u8; READ_CHUNK];
        while !done(&self.received) {
            if Instant::now() >= deadline {
                return Err("no_answer_in_time".into());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if gone(&e) => return Ok(false),
                Err(e) if timed_out(&e) => return Err("no_answer_in_time".into()),
                Err(e) => return Err(format!("read_{:?}", e.kind())),
            }
        }
        Ok(true)
    }

    /// Reads to EOF (or reset); an error at the deadline.
    pub fn read_to_end(&mut self, deadline: Instant) -> Result<(), String> {
        self.read_until(deadline, |_| false).map(|_| ())
    }
}
