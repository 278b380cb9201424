//! Benches of the per-message and per-connection pieces around the codec: the routing
//! hash, the server-id envelope both ways, and registry-shaped map operations.

use std::collections::HashMap;
use std::rc::Rc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardrelay::modes::server_id::parse_envelope;
use shardrelay::shard::route_shard;
use shardrelay::ws::codec::{MessageKind, OpCode};
use shardrelay::ws::conn::OutFrame;
use shardrelay::ws::payload::Payload;

fn routing_hash(c: &mut Criterion) {
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let mut group = c.benchmark_group("routing_hash");
    for key in ["s1", "a-typical-server-id-0123456789", &"k".repeat(256)] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(key.len()), key, |b, key| {
            b.iter(|| route_shard(&hasher, black_box(key.as_bytes()), 2))
        });
    }
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let prefix: Rc<[u8]> = Rc::from(&br#"{"conn_id":"client-s1-1a2b3c4d","frame":"#[..]);
    let mut group = c.benchmark_group("envelope");
    for size in [64usize, 1024, 16 * 1024] {
        let body = format!("{{\"p\":\"{}\"}}", "x".repeat(size.saturating_sub(8)));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("wrap", size), &body, |b, body| {
            b.iter(|| {
                let frame = OutFrame::message(
                    OpCode::Text,
                    Some(prefix.clone()),
                    Payload::copy_of(body.as_bytes()),
                    b"}",
                );
                black_box(frame.wire_len())
            })
        });
        let envelope = format!(r#"{{"conn_id":"client-s1-1a2b3c4d","frame":{body}}}"#);
        group.bench_with_input(BenchmarkId::new("unwrap", size), &envelope, |b, env| {
            b.iter(|| black_box(parse_envelope(MessageKind::Text, env.as_bytes())).is_some())
        });
    }
    group.finish();
}

fn registry(c: &mut Criterion) {
    // The registries are ahash maps keyed by Rc<str>/Rc<[u8]>: this measures the
    // operations they perform per connection (claim, lookup, release).
    let keys: Vec<Rc<str>> = (0..10_000)
        .map(|i| Rc::from(format!("server-{i}")))
        .collect();
    let mut group = c.benchmark_group("registry");
    group.throughput(Throughput::Elements(1));
    group.bench_function("claim_lookup_release", |b| {
        let mut map: HashMap<Rc<str>, u64, ahash::RandomState> = HashMap::default();
        for k in &keys {
            map.insert(k.clone(), 0);
        }
        let mut i = 0usize;
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i += 1;
            let v = map.remove(k).unwrap_or(0);
            map.insert(k.clone(), v + 1);
            black_box(map.get(&**k).copied())
        })
    });
    group.finish();
}

criterion_group!(benches, routing_hash, envelope, registry);
criterion_main!(benches);
