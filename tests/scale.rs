//! Issue 20 (a million connections per host), point 3: a connection storm against a
//! relay with `--per-ip-rate` is shaped, not failed, when the clients back off on `429`
//! (`shardrelay-load --retry-rate-limited`); without the backoff the same storm fails
//! connections. Black box: the real relay and the real load generator on loopback.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The `shardrelay-load` binary beside the relay's, brought up to date first (this
/// package's tests do not build the other package's binary; a no-op when fresh).
fn load_binary() -> std::path::PathBuf {
    let relay_bin = std::path::Path::new(env!("CARGO_BIN_EXE_shardrelay"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "shardrelay-load"])
        .status()
        .expect("cargo build -p shardrelay-load");
    assert!(status.success(), "building shardrelay-load failed");
    relay_bin.with_file_name("shardrelay-load")
}

/// Wait for `child` up to `limit`, then kill it and fail.
fn wait_or_kill(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Storm `relay` with `n` echo upgrades from one source, as fast as it accepts them;
/// returns the load generator's exit code and its JSON report.
fn storm(relay: &Relay, n: usize, retry: bool, tag: &str) -> (Option<i32>, Value) {
    let json = std::env::temp_dir().join(format!(
        "shardrelay-storm-{}-{tag}.json",
        std::process::id()
    ));
    let (target, admin, count) = (
        relay.public.to_string(),
        relay.admin.to_string(),
        n.to_string(),
    );
    let mut args = vec![
        "idle",
        "--style",
        "echo",
        "--connections",
        &count,
        "--connect-rate",
        "0",
        "--workers",
        "1",
        "--warmup",
        "0s",
        "--duration",
        "200ms",
        "--drain",
        "0s",
        "--setup-timeout",
        "30s",
        "--no-relay-stats",
        "--target",
        &target,
        "--admin",
        &admin,
        "--json",
        json.to_str().unwrap(),
    ];
    if retry {
        args.push("--retry-rate-limited");
    }
    let mut child = Command::new(load_binary())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shardrelay-load");
    let mut pipe = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = pipe.read_to_string(&mut out);
        out
    });
    let status = wait_or_kill(&mut child, Duration::from_secs(60));
    let _ = reader.join();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    (status.code(), report)
}

#[test]
fn scale_a_rate_limited_storm_is_shaped_not_failed_when_clients_back_off() {
    // 5 attempts at once, then 20/s from the one loopback source: 30 upgrades need the
    // relay to refuse some and the clients to come back.
    let args = [
        "--enable-echo",
        "--per-ip-rate",
        "20",
        "--per-ip-burst",
        "5",
    ];
    let relay = Relay::start(&args);
    let (code, report) = storm(&relay, 30, true, "retry");
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["connections"]["up"], 30, "{report}");
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    let refused = relay.stats()["totals"]["rejected"]["rate_limited"]
        .as_u64()
        .unwrap_or(0);
    assert!(refused > 0, "the relay shaped the storm with 429s");
    // The same storm without the backoff fails connections: the shaping is the relay's.
    let relay = Relay::start(&args);
    let (code, report) = storm(&relay, 30, false, "plain");
    assert_ne!(code, Some(0), "{report}");
    assert!(
        report["connections"]["failed"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["errors"]["status_429"].as_u64().unwrap() > 0,
        "{report}"
    );
}
