//! Issue 16 point 4's last sentence: `shardrelay-load` drives a TLS relay from `wss://` and
//! `https://` targets. Black box: the real relay with `--tls-cert`/`--tls-key` (a pair
//! minted here with rcgen; no key is committed) and the real load generator on loopback,
//! trusting the minted certificate with `--tls-ca`.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The `shardrelay-load` binary beside the relay's, brought up to date first (this
/// package's tests do not build the other package's binary; a no-op when fresh).
fn load_binary() -> PathBuf {
    let relay_bin = std::path::Path::new(env!("CARGO_BIN_EXE_shardrelay"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "shardrelay-load"])
        .status()
        .expect("cargo build -p shardrelay-load");
    assert!(status.success(), "building shardrelay-load failed");
    relay_bin.with_file_name("shardrelay-load")
}

/// A self-signed pair for `localhost`/`127.0.0.1` in a fresh directory, removed on drop.
struct Pki {
    /// The directory holding `cert.pem` and `key.pem`.
    dir: PathBuf,
}

impl Pki {
    fn mint(tag: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("shardrelay-load-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let minted = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(dir.join("cert.pem"), minted.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), minted.key_pair.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A relay serving this pair on its public listener.
    fn relay(&self, extra: &[&str]) -> Relay {
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        Relay::start(&args)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait for `child` up to `limit`, then kill it and fail.
fn wait_or_kill(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `shardrelay-load ARGS --json FILE`; returns its exit code, its JSON report and
/// its standard output.
fn run_load(args: &[&str], tag: &str) -> (Option<i32>, Value, String) {
    let json = std::env::temp_dir().join(format!(
        "shardrelay-load-tls-{}-{tag}.json",
        std::process::id()
    ));
    let mut child = Command::new(load_binary())
        .args(args)
        .args(["--json", json.to_str().unwrap()])
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
    let status = wait_or_kill(&mut child, Duration::from_secs(90));
    let out = reader.join().unwrap_or_default();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no report ({e}): {out}"));
    let _ = std::fs::remove_file(&json);
    (status.code(), serde_json::from_str(&text).unwrap(), out)
}

#[test]
fn pt4_ticket_transfers_run_against_an_https_target() {
    let pki = Pki::mint("ticket");
    let relay = pki.relay(&[]);
    let target = format!("https://{}", relay.public);
    let admin = relay.admin.to_string();
    let ca = pki.path("cert.pem");
    let args = [
        "ticket",
        "--target",
        &target,
        "--admin",
        &admin,
        "--tls-ca",
        &ca,
        "--connections",
        "2",
        "--count",
        "4",
        "--size",
        "200KiB",
        "--inflight",
        "1",
        "--warmup",
        "0s",
        "--duration",
        "30s",
        "--drain",
        "0s",
    ];
    let (code, report, out) = run_load(&args, "ticket");
    assert_eq!(code, Some(0), "{out}\n{report}");
    assert_eq!(report["latency_us"]["count"], 4, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // The public listener speaks only TLS, so four whole transfers went through it.
    assert_eq!(report["integrity"]["lost"], 0, "{report}");
    assert_eq!(report["integrity"]["corrupted"], 0, "{report}");
}

#[test]
fn pt4_wss_upgrades_storm_a_tls_relay_and_report_handshake_latency() {
    let pki = Pki::mint("storm");
    let relay = pki.relay(&["--enable-echo"]);
    let target = format!("wss://{}", relay.public);
    let admin = relay.admin.to_string();
    let ca = pki.path("cert.pem");
    let args = [
        "idle",
        "--style",
        "echo",
        "--connections",
        "50",
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
        "60s",
        "--no-relay-stats",
        "--target",
        &target,
        "--admin",
        &admin,
        "--tls-ca",
        &ca,
    ];
    let (code, report, out) = run_load(&args, "storm");
    assert_eq!(code, Some(0), "{out}\n{report}");
    assert_eq!(report["connections"]["up"], 50, "{report}");
    assert_eq!(report["connections"]["failed"], 0, "{report}");
    let p99 = report["connections"]["connect_us"]["p99"].as_u64().unwrap();
    assert!(p99 > 0, "{report}");
}
