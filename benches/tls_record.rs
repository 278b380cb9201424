//! The cost of building *ring*'s expanded AEAD key (`LessSafeKey::new`), which
//! `tls::record` does once per `open`/`seal` call instead of keeping ~560 B per direction
//! per connection, next to the cost of sealing and opening one small record with it.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use ring::aead;
use shardrelay::tls::record::{Cipher, DirectionKeys, Traffic, Version};
use shardrelay::tls::Opened;

fn key_setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_key_setup");
    for (name, alg) in [
        ("aes128gcm", &aead::AES_128_GCM),
        ("aes256gcm", &aead::AES_256_GCM),
        ("chacha20poly1305", &aead::CHACHA20_POLY1305),
    ] {
        let key = vec![7u8; alg.key_len()];
        group.bench_function(name, |b| {
            b.iter(|| {
                let unbound = aead::UnboundKey::new(alg, black_box(&key)).unwrap();
                black_box(aead::LessSafeKey::new(unbound))
            });
        });
    }
    group.finish();
}

/// Our side and the peer's, with mirrored keys.
fn mirrored(cipher: Cipher, key_len: usize) -> (Traffic, Traffic) {
    let keys = |fill: u8| DirectionKeys::new(&[fill; 32][..key_len], &[fill; 12], 0, &[]).unwrap();
    (
        Traffic::new(Version::Tls13, cipher, keys(1), keys(2), u64::MAX),
        Traffic::new(Version::Tls13, cipher, keys(2), keys(1), u64::MAX),
    )
}

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_record_seal_then_open");
    for size in [64usize, 1024] {
        let (mut ours, mut peer) = mirrored(Cipher::Aes128Gcm, 16);
        let message = vec![0x5au8; size];
        let mut wire = Vec::with_capacity(2 * size + 64);
        let mut plain = Vec::with_capacity(2 * size);
        let mut reply = Vec::new();
        group.bench_with_input(BenchmarkId::new("aes128gcm", size), &size, |b, _| {
            b.iter(|| {
                wire.clear();
                plain.clear();
                ours.seal(black_box(&message), &mut wire).unwrap();
                let mut opened = Opened::default();
                peer.open(&mut wire, &mut plain, &mut reply, &mut opened)
                    .unwrap();
                black_box(opened.plain)
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(2));
    targets = key_setup, seal_open
}
criterion_main!(benches);
