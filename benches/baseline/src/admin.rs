//! The admin listener: just enough HTTP/1.1 for `/health` and `/stats`, so the load
//! generator's end-of-run stats fetch gets a well-formed (empty) answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is not one the load generator sends.
const MAX_HEAD: usize = 8 << 10;
/// Time a client has for its whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts admin connections until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HEAD_TIMEOUT, answer(socket)).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Reads one request head and answers it, then closes.
async fn answer(mut socket: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = match path {
        b"/health" | b"/healthz" => ("200 OK", r#"{"ok":true}"#),
        b"/stats" => ("200 OK", "{}"),
        _ => ("404 Not Found", r#"{"error":"not found"}"#),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
