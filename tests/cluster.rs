//! Several hosts (issue 19, PROTOCOL §9): three relay processes on loopback behind a real
//! HAProxy running the configuration `shardrelay haproxy-config` generated, every client
//! speaking to HAProxy's address only.
//!
//! HAProxy comes from `scripts/install-test-tools.sh` (Debian package `haproxy`); when it
//! is missing these tests fail under `CI` and are skipped loudly elsewhere. The nodes'
//! ports are picked by the kernel (bound on port 0, then released for the node), since
//! `--nodes` and the HAProxy configuration must name them before the nodes start.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use tungstenite::Message;

/// A port the kernel picked on 127.0.0.1, released for a process to bind.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A tool a test needs is missing: a failure under `CI` (which installs the tools),
/// elsewhere a loud skip.
fn haproxy_installed() -> bool {
    if Command::new("haproxy").arg("-v").output().is_ok() {
        return true;
    }
    let what = "cluster behind HAProxy: haproxy is not installed. \
                Run scripts/install-test-tools.sh (Debian package `haproxy`).";
    assert!(
        std::env::var_os("CI").is_none(),
        "missing test tool under CI: {what}"
    );
    eprintln!("SKIPPED: {what}");
    false
}

/// `shardrelay haproxy-config` with `args`: (exit code, stdout, stderr).
fn haproxy_config(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .arg("haproxy-config")
        .args(args)
        .output()
        .expect("run shardrelay haproxy-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three nodes `a`, `b`, `c` and HAProxy in front; everything is killed on drop.
struct Cluster {
    /// The nodes, in id order (`None` once killed).
    nodes: Vec<Option<Relay>>,
    /// The balancer's address: the only one clients use.
    front: SocketAddr,
    /// The haproxy process.
    haproxy: Child,
    /// Its configuration and log.
    dir: PathBuf,
}

impl Cluster {
    /// Start the nodes, then HAProxy with the generated configuration.
    fn start() -> Option<Cluster> {
        Cluster::start_with(&[])
    }

    /// [`Cluster::start`], each node with `extra` flags too.
    fn start_with(extra: &[&str]) -> Option<Cluster> {
        if !haproxy_installed() {
            return None;
        }
        let ids = ["a", "b", "c"];
        let addrs: Vec<SocketAddr> = ids.iter().map(|_| free_addr()).collect();
        let list = ids
            .iter()
            .zip(&addrs)
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = ids
            .iter()
            .zip(&addrs)
            .map(|(id, addr)| Some(start_node(id, *addr, &list, extra)))
            .collect();
        let front = free_addr();
        let (code, config, err) =
            haproxy_config(&["--nodes", &list, "--listen", &front.to_string()]);
        assert_eq!(code, Some(0), "haproxy-config: {err}");
        let dir = std::env::temp_dir().join(format!(
            "shardrelay-cluster-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let haproxy = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("haproxy.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("start haproxy");
        let mut cluster = Cluster {
            nodes,
            front,
            haproxy,
            dir,
        };
        wait_until("haproxy listens", || {
            cluster.assert_haproxy_running();
            TcpStream::connect(front).is_ok()
        });
        Some(cluster)
    }

    /// Fail with haproxy's log if it exited.
    fn assert_haproxy_running(&mut self) {
        if let Ok(Some(status)) = self.haproxy.try_wait() {
            let log = std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default();
            panic!("haproxy exited ({status}):\n{log}");
        }
    }

    /// A live node.
    fn node(&self, i: usize) -> &Relay {
        self.nodes[i].as_ref().expect("node killed")
    }

    /// Which node holds server-id `sid`'s binary (from each live node's `/stats`).
    fn binaries_on(&self, i: usize) -> u64 {
        self.node(i).total("/connections/binary")
    }

    /// Pair connections on node `i`.
    fn pairs_on(&self, i: usize) -> u64 {
        self.node(i).total("/connections/pair")
    }

    /// Kill node `i` (SIGKILL: a crashed host).
    fn kill(&mut self, i: usize) {
        if let Some(mut relay) = self.nodes[i].take() {
            let _ = relay.child.kill();
            let _ = relay.child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start node `id` on `addr` in the cluster `list`, trusting HAProxy (on loopback) for
/// its PROXY header.
fn start_node(id: &str, addr: SocketAddr, list: &str, extra: &[&str]) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args([
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--node-id", id, "--nodes", list])
        .args(["--proxy-protocol", "--trusted-proxies", "127.0.0.1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a node");
    let logs = Arc::new(Mutex::new(String::new()));
    let _ = child.stderr.take();
    Relay::adopt(child, logs)
}

/// A phone's message reaches its binary as an envelope, and the reply comes back.
fn round_trip(binary: &mut Ws, phone: &mut Ws, text: &str) {
    phone.send(Message::text(text)).unwrap();
    let envelope = next_text(binary);
    assert!(
        envelope.ends_with(&format!(",\"frame\":{text}}}")),
        "{envelope}"
    );
    let conn_id: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    let reply = format!("{{\"conn_id\":{},\"frame\":{text}}}", conn_id["conn_id"]);
    binary.send(Message::text(reply)).unwrap();
    assert_eq!(next_text(phone), text);
}

#[test]
fn p2_the_generated_config_is_valid_for_haproxy_and_bad_node_lists_exit_2() {
    if !haproxy_installed() {
        return;
    }
    let (code, text, _) = haproxy_config(&[
        "--nodes",
        "a=127.0.0.1:7001,b=127.0.0.1:7002",
        "--listen",
        "127.0.0.1:7000",
    ]);
    assert_eq!(code, Some(0));
    let dir = std::env::temp_dir().join(format!("shardrelay-haproxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, &text).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        check.status.success(),
        "haproxy -c: {}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (code, _, err) = haproxy_config(&["--nodes", "a=h:1,a=h:2", "--listen", "127.0.0.1:1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("listed twice"), "{err}");
}

#[test]
fn p1_a_node_id_missing_from_the_node_list_exits_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardrelay"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--node-id", "z", "--nodes", "a=127.0.0.1:1,b=127.0.0.1:2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--node-id `z` is not one of --nodes"), "{err}");
}

#[test]
fn p4_server_ids_and_pairs_through_haproxy_meet_on_one_node_and_spread_over_all() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    // Twelve server-ids, each with a binary and a phone: every phone reaches its binary.
    let mut held = Vec::new();
    for n in 0..12 {
        let sid = format!("server-{n}");
        let mut binary = binary_at(front, &sid);
        let mut phone = phone_at(front, &sid, "tok");
        round_trip(&mut binary, &mut phone, &format!("{{\"n\":{n}}}"));
        held.push((binary, phone));
    }
    let per_node: Vec<u64> = (0..3).map(|i| cluster.binaries_on(i)).collect();
    assert_eq!(per_node.iter().sum::<u64>(), 12, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "consistent hashing put every server-id on one node: {per_node:?}"
    );
    // Pairs: both sides meet, whichever node their code hashes to.
    for n in 0..6 {
        let path = format!("/?pair=cluster-{n}");
        let mut one = ws_at(front, &path, &[]).expect("pair side 1");
        let mut two = ws_at(front, &path, &[]).expect("pair side 2");
        one.send(Message::binary(vec![n as u8; 3])).unwrap();
        assert_eq!(next_message(&mut two), Message::binary(vec![n as u8; 3]));
    }
}

#[test]
fn p4_a_phone_the_relay_closes_1007_through_haproxy_is_reported_1007_to_its_binary() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    // Several server-ids, so more than one node closes a phone.
    for n in 0..6 {
        let sid = format!("json-{n}");
        let mut binary = binary_at(front, &sid);
        let mut phone = phone_at(front, &sid, "tok");
        round_trip(&mut binary, &mut phone, "{\"hello\":1}");
        phone.send(Message::text("not json")).unwrap();
        assert_eq!(expect_close(&mut phone).0, 1007);
        // tungstenite echoes the close on its next read; read until the tunnel ends.
        while phone.read().is_ok() {}
        // The relay keeps its write half open until the echo arrives (RFC 6455 §7.1.1),
        // so HAProxy does not end the tunnel before it: the binary hears 1007, not 1006.
        let notice: serde_json::Value = serde_json::from_str(&next_text(&mut binary)).unwrap();
        assert_eq!(notice["close_code"], 1007, "{sid}: {notice}");
    }
}

/// A binary and a phone on `sid` through `front`, their first round trip done; None when
/// the phone was refused or the trip failed (the key's node is changing).
fn try_attach(front: SocketAddr, sid: &str) -> Option<(Ws, Ws)> {
    let mut binary = ws_at(
        front,
        "/v1/server",
        &[
            ("X-Pyrycode-Server", sid),
            ("X-Pyrycode-Version", "1.0.0"),
            ("User-Agent", "pyrycode-binary/1.0"),
        ],
    )
    .map_err(|e| eprintln!("binary {sid}: {e}"))
    .ok()?;
    let mut phone = ws_at(
        front,
        "/v1/client",
        &[
            ("X-Pyrycode-Server", sid),
            ("X-Pyrycode-Token", "tok"),
            ("User-Agent", "pyrycode-phone/1.0"),
        ],
    )
    .map_err(|e| eprintln!("phone {sid}: {e}"))
    .ok()?;
    phone.send(Message::text("{\"again\":1}")).ok()?;
    match binary.read() {
        Ok(Message::Text(_)) => Some((binary, phone)),
        other => {
            eprintln!("{sid}: {other:?}");
            None
        }
    }
}

#[test]
fn p4_a_killed_node_takes_only_its_own_connections_and_its_binaries_come_back_on_the_others() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    // Twelve server-ids; learn each one's node from the node counts as it attaches.
    let mut held = Vec::new();
    for n in 0..12 {
        let before: Vec<u64> = (0..3).map(|i| cluster.binaries_on(i)).collect();
        let sid = format!("kill-{n}");
        let mut binary = binary_at(front, &sid);
        let mut phone = phone_at(front, &sid, "tok");
        round_trip(&mut binary, &mut phone, "{\"hello\":1}");
        let node = (0..3)
            .find(|&i| cluster.binaries_on(i) == before[i] + 1)
            .expect("the binary is on some node");
        held.push((sid, node, binary, phone));
    }
    let victim = (0..3)
        .max_by_key(|&i| held.iter().filter(|h| h.1 == i).count())
        .unwrap();
    let lost = held.iter().filter(|h| h.1 == victim).count();
    assert!(lost > 0);
    // Pairs until one sits on the victim (each does with odds 1/3), learning each one's
    // node the same way.
    let mut pairs = Vec::new();
    for n in 0..30 {
        if n >= 6
            && pairs
                .iter()
                .any(|p: &(String, usize, Ws, Ws)| p.1 == victim)
        {
            break;
        }
        let before: Vec<u64> = (0..3).map(|i| cluster.pairs_on(i)).collect();
        let path = format!("/?pair=kill-pair-{n}");
        let mut one = ws_at(front, &path, &[]).expect("pair side 1");
        let mut two = ws_at(front, &path, &[]).expect("pair side 2");
        one.send(Message::binary(vec![1u8])).unwrap();
        assert_eq!(next_message(&mut two), Message::binary(vec![1u8]));
        let node = (0..3)
            .find(|&i| cluster.pairs_on(i) == before[i] + 2)
            .expect("the pair is on some node");
        pairs.push((path, node, one, two));
    }
    assert!(
        pairs.iter().any(|p| p.1 == victim),
        "no pair landed on node {victim}"
    );
    cluster.kill(victim);
    // The victim's clients are closed by HAProxy; every other pair keeps working.
    let mut survivors = 0;
    for (sid, node, binary, phone) in &mut held {
        if *node == victim {
            assert!(
                !matches!(binary.read(), Ok(Message::Text(_))),
                "{sid}: a binary on the killed node still reads"
            );
        } else {
            round_trip(binary, phone, "{\"after\":1}");
            survivors += 1;
        }
    }
    assert_eq!(survivors + lost, 12);
    for (path, node, one, two) in &mut pairs {
        if *node == victim {
            assert!(
                !matches!(one.read(), Ok(Message::Binary(_))),
                "{path}: a pair side on the killed node still reads"
            );
        } else {
            one.send(Message::binary(vec![2u8])).unwrap();
            assert_eq!(next_message(two), Message::binary(vec![2u8]), "{path}");
        }
    }
    // The lost binaries reconnect through the same address and work on a live node,
    // once HAProxy's checks have marked the dead one down (a few seconds).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for (sid, node, _, _) in held.iter().filter(|h| h.1 == victim) {
        let back = loop {
            if let Some(pair) = try_attach(front, sid) {
                break pair;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sid} (was on node {node}) did not come back"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        drop(back);
    }
    // The lost pairs reconnect both sides through the same address and meet again on a
    // live node (once HAProxy's checks agree on where the code hashes now).
    for (path, node, _, _) in pairs.iter().filter(|p| p.1 == victim) {
        loop {
            if pair_meets(front, path) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} (was on node {node}) did not meet again"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // Nothing else moved: the survivors' connections are where they were.
    let live: u64 = (0..3)
        .filter(|&i| i != victim)
        .map(|i| cluster.binaries_on(i))
        .sum();
    assert!(
        live >= survivors as u64,
        "live binaries {live} < {survivors}"
    );
    for (_, node, binary, phone) in held.iter_mut().filter(|h| h.1 != victim) {
        let _ = node;
        round_trip(binary, phone, "{\"still\":1}");
    }
    for (path, _, one, two) in pairs.iter_mut().filter(|p| p.1 != victim) {
        two.send(Message::binary(vec![3u8])).unwrap();
        assert_eq!(next_message(one), Message::binary(vec![3u8]), "{path}");
    }
}

/// The next text message as JSON.
fn next_json(ws: &mut Ws) -> serde_json::Value {
    serde_json::from_str(&next_text(ws)).expect("JSON message")
}

#[test]
fn p3_session_codes_route_back_to_their_minting_node_through_haproxy() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    // Hosts land on whichever node is least loaded; each browser joins by `?code=`
    // (lower-case, as a person may type it) through the same address and must reach
    // its host's node.
    let mut hosts = Vec::new();
    for _ in 0..9 {
        let mut host = ws_at(front, "/mac", &[]).expect("host upgrade");
        let m = next_json(&mut host);
        assert_eq!(m["type"], "registered", "{m}");
        hosts.push((host, m["code"].as_str().unwrap().to_owned()));
    }
    let per_node: Vec<u64> = (0..3)
        .map(|i| cluster.node(i).total("/events/codes_minted"))
        .collect();
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "every host landed on one node: {per_node:?}"
    );
    for (host, code) in &mut hosts {
        let path = format!("/browser?code={}", code.to_lowercase());
        let mut browser = ws_at(front, &path, &[]).expect("browser upgrade");
        let joined = next_json(&mut browser);
        assert_eq!(joined["type"], "joined", "{code}: {joined}");
        assert_eq!(next_json(host)["sessionId"], joined["sessionId"]);
    }
}

/// Send a ticket side's request through `front` (`Connection: close`, so HAProxy ends
/// the client connection with the response).
fn ticket_side(front: SocketAddr, method: &str, ticket: &str, body: &[u8]) -> TcpStream {
    use std::io::Write;
    let mut s = TcpStream::connect(front).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let length = if method == "PUT" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let head = format!(
        "{method} /v1/relay HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {ticket}\r\n\
         {length}Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// A whole response, read to EOF.
fn read_all(mut s: TcpStream) -> HttpResponse {
    use std::io::Read;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

#[test]
fn p3_without_an_admin_token_a_mint_for_another_nodes_workspace_is_refused_clearly() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    let (mut local, mut refused) = (0, 0);
    // Workspaces until both kinds were seen (each is another node's with odds 2/3).
    for n in 0..100 {
        if local > 0 && refused > 0 {
            break;
        }
        let body =
            format!(r#"{{"workspace_id":"ws-{n}","source_id":"a","dest_id":"b","ttl_ms":60000}}"#);
        let req = format!(
            "POST /v1/tickets HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let resp = raw_http(cluster.node(0).admin, req.as_bytes());
        match resp.status {
            201 => {
                // Owned here: minted here, and served here through HAProxy.
                local += 1;
                let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
                let ticket = v["ticket"].as_str().unwrap();
                let get = ticket_side(front, "GET", ticket, b"");
                let put = ticket_side(front, "PUT", ticket, b"payload");
                assert_eq!(read_all(get).body_text(), "payload");
                assert_eq!(read_all(put).status, 200);
            }
            503 => {
                refused += 1;
                assert!(
                    resp.body_text().contains("--admin-token-file"),
                    "{}",
                    resp.body_text()
                );
            }
            other => panic!("ws-{n}: {other} {}", resp.body_text()),
        }
    }
    assert!(local > 0 && refused > 0, "local {local}, refused {refused}");
}

/// `forwarded_to_node` summed over the live nodes.
fn forwarded(cluster: &Cluster) -> u64 {
    (0..3)
        .map(|i| cluster.node(i).total("/events/forwarded_to_node"))
        .sum()
}

#[test]
fn p3_a_browser_joining_by_message_a_code_of_another_node_is_handed_there() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let front = cluster.front;
    // Nine hosts and nine browsers, each landing on the least-loaded node: most browsers
    // join a code another node minted, and every join must work as on one node.
    for n in 0..9 {
        let mut host = ws_at(front, "/mac", &[]).expect("host upgrade");
        let m = next_json(&mut host);
        assert_eq!(m["type"], "registered", "{m}");
        let code = m["code"].as_str().unwrap().to_owned();
        let mut browser = ws_at(front, "/browser", &[]).expect("browser upgrade");
        browser
            .send(Message::text(
                serde_json::json!({"type": "join", "code": code}).to_string(),
            ))
            .unwrap();
        let joined = next_json(&mut browser);
        assert_eq!(joined["type"], "joined", "{n}: {joined}");
        assert_eq!(next_json(&mut host)["sessionId"], joined["sessionId"]);
        // Messages flow both ways through the pipe, then the browser leaves.
        browser
            .send(Message::text(r#"{"type":"data","payload":"from browser"}"#))
            .unwrap();
        assert!(next_text(&mut host).contains("from browser"));
        host.send(Message::text(r#"{"type":"data","payload":"from host"}"#))
            .unwrap();
        assert!(next_text(&mut browser).contains("from host"));
    }
    assert!(
        forwarded(&cluster) > 0,
        "no browser was handed to another node"
    );
    // /ws: a browser's `auth` for another node's code is handed there too.
    for n in 0..6 {
        let mut mac = ws_at(front, "/ws", &[]).expect("mac upgrade");
        mac.send(Message::text(r#"{"type":"register","client_id":"mac"}"#))
            .unwrap();
        let m = next_json(&mut mac);
        assert_eq!(m["type"], "registered", "{m}");
        let code = m["code"].as_str().unwrap().to_owned();
        let mut browser = ws_at(front, "/ws", &[]).expect("browser upgrade");
        browser
            .send(Message::text(
                serde_json::json!({"type": "auth", "session_code": code}).to_string(),
            ))
            .unwrap();
        assert_eq!(next_text(&mut browser), r#"{"type":"auth_success"}"#, "{n}");
        assert_eq!(next_json(&mut mac)["type"], "browser_connected");
    }
}

/// `POST /v1/tickets` on node `i`'s admin listener with the admin token: the response.
fn mint_with_token(cluster: &Cluster, i: usize, workspace: &str, token: &str) -> HttpResponse {
    let body =
        format!(r#"{{"workspace_id":"{workspace}","source_id":"a","dest_id":"b","ttl_ms":60000}}"#);
    let req = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_http(cluster.node(i).admin, req.as_bytes())
}

#[test]
fn p3_mints_are_handed_to_the_workspaces_node_so_its_cap_holds_across_the_cluster() {
    let token = "cluster-admin-token";
    let Some(cluster) =
        Cluster::start_with(&["--admin-token", token, "--max-relays-per-workspace", "2"])
    else {
        return;
    };
    let front = cluster.front;
    for workspace in ["alpha", "beta", "gamma", "delta"] {
        // Two mints, sent to two different nodes, both land on the workspace's node...
        let mut tickets = Vec::new();
        for i in [0, 1] {
            let resp = mint_with_token(&cluster, i, workspace, token);
            assert_eq!(
                resp.status,
                201,
                "{workspace} via node {i}: {}",
                resp.body_text()
            );
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
            tickets.push(v["ticket"].as_str().unwrap().to_owned());
        }
        // ...so the third, sent to the third node, meets the cap of 2.
        let third = mint_with_token(&cluster, 2, workspace, token);
        assert_eq!(third.status, 429, "{workspace}: {}", third.body_text());
        // Both tickets work through HAProxy (they route to the minting node).
        for ticket in &tickets {
            let get = ticket_side(front, "GET", ticket, b"");
            let put = ticket_side(front, "PUT", ticket, b"hello");
            assert_eq!(read_all(get).body_text(), "hello");
            assert_eq!(read_all(put).status, 200);
        }
    }
    // A public mint without the token is refused, as on the admin listener.
    let req =
        b"POST /v1/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert_eq!(raw_http(front, req).status, 401);
}

/// Both sides of pair `path` through `front`, and a message from one reaches the other
/// within half a second (false: they landed on different nodes while the balancer's view
/// of a dead node was changing).
fn pair_meets(front: SocketAddr, path: &str) -> bool {
    let (Ok(mut one), Ok(mut two)) = (ws_at(front, path, &[]), ws_at(front, path, &[])) else {
        return false;
    };
    let _ = two
        .get_mut()
        .set_read_timeout(Some(std::time::Duration::from_millis(500)));
    if one.send(Message::binary(vec![9u8])).is_err() {
        return false;
    }
    matches!(two.read(), Ok(Message::Binary(b)) if b[..] == [9u8])
}
