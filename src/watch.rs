//! `shardrelay stats`: an operator's terminal view of a running relay — fetch `/stats`
//! from the admin listener once a second and print connections, rates and the latency
//! histograms as a table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Why the watch stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The admin listener could not be reached or answered badly.
    #[error("GET /stats from {addr}: {why}")]
    Fetch {
        /// The admin address.
        addr: SocketAddr,
        /// What went wrong.
        why: String,
    },
}

/// Print `count` screens (0 = forever), one a second.
pub fn run(admin: SocketAddr, token: Option<&str>, count: u64) -> Result<(), WatchError> {
    let mut previous: Option<Value> = None;
    let mut shown = 0;
    loop {
        let stats = fetch_stats(admin, token)?;
        print!("{}", render(&stats, previous.as_ref()));
        let _ = std::io::stdout().flush();
        previous = Some(stats);
        shown += 1;
        if count != 0 && shown >= count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One `GET /stats` over a plain blocking socket.
pub fn fetch_stats(admin: SocketAddr, token: Option<&str>) -> Result<Value, WatchError> {
    let fail = |why: String| WatchError::Fetch { addr: admin, why };
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET /stats HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("no HTTP response".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default().to_owned();
        return Err(fail(status));
    }
    serde_json::from_str(body).map_err(|e| fail(e.to_string()))
}

/// One screen: totals, rates since the previous screen, and the histograms.
pub fn render(stats: &Value, previous: Option<&Value>) -> String {
    let totals = &stats["totals"];
    let rate = |name: &str| {
        let now = totals[name].as_u64().unwrap_or(0);
        let before = previous.map_or(now, |p| p["totals"][name].as_u64().unwrap_or(0));
        now.saturating_sub(before)
    };
    let mut out = format!(
        "\n== shardrelay  uptime {}s  shards {} ==\n",
        stats["uptime_seconds"], stats["shards"]
    );
    out += &format!(
        "connections {}\naccepted/s {}  handoffs/s {}  msgs in/s {}  msgs out/s {}  bytes in/s {}  bytes out/s {}\n",
        totals["connections"],
        rate("accepted"),
        rate("handoffs"),
        rate("messages_in"),
        rate("messages_out"),
        rate("bytes_in"),
        rate("bytes_out"),
    );
    out += &format!(
        "{:<10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   (µs)\n",
        "histogram", "count", "p50", "p90", "p99", "p999", "max", "mean"
    );
    for name in ["forward", "handshake", "handoff"] {
        let h = &totals["histograms"][name];
        let cell = |key: &str| h[key].to_string();
        out += &format!(
            "{:<10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            name,
            cell("count"),
            cell("p50"),
            cell("p90"),
            cell("p99"),
            cell("p999"),
            cell("max"),
            cell("mean")
        );
    }
    out
}
