//! Throughput of the WebSocket hot path: word-at-a-time masking against the bytewise
//! reference, and decoding a buffer full of small masked binary frames.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardrelay::ws::codec::Decoder;
use shardrelay::ws::mask::{apply_mask, apply_mask_bytewise};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [64usize, 1024, 64 * 1024] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY)));
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(KEY)));
        });
    }
    group.finish();
}

/// `count` masked, final binary frames of 64 payload bytes each (70 bytes on the wire).
fn small_frames(count: usize) -> Vec<u8> {
    let mut stream = Vec::with_capacity(count * 70);
    for i in 0..count {
        stream.extend_from_slice(&[0x82, 0x80 | 64]);
        stream.extend_from_slice(&KEY);
        let start = stream.len();
        stream.extend((0..64u8).map(|b| b.wrapping_add(i as u8)));
        apply_mask_bytewise(&mut stream[start..], KEY);
    }
    stream
}

fn decode(c: &mut Criterion) {
    let frames = 1024;
    let stream = small_frames(frames);
    let mut buf = stream.clone();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function(BenchmarkId::new("binary_64B_frames", frames), |b| {
        b.iter(|| {
            // Decoding unmasks in place, so each run starts from a fresh copy; the copy
            // (a memcpy of 70 KiB) is a small part of the time.
            buf.copy_from_slice(&stream);
            let mut dec = Decoder::new();
            let mut pos = 0;
            let mut messages = 0usize;
            while let Ok(Some((ev, n))) = dec.decode(&mut buf[pos..], 1 << 20) {
                if ev.is_some() {
                    messages += 1;
                }
                pos += n;
            }
            assert_eq!(messages, frames);
            black_box(pos)
        });
    });
    group.finish();
}

criterion_group!(benches, mask, decode);
criterion_main!(benches);
