//! Cost of one per-IP check (`per_ip::RateLimit::allow`, what every accepted connection
//! pays with `--per-ip-rate`) with one source address, and cycling through 100,000 source
//! addresses that all hold debt (the table is full and every new address evicts one).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardrelay::per_ip::RateLimit;

/// Source addresses cycled through in the many-sources case.
const SOURCES: u32 = 100_000;

fn allow(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_ip");
    g.throughput(Throughput::Elements(1));
    // 0.001/s with a huge burst: every attempt is admitted and adds 1,000 s of debt, so
    // no entry ever refills during the run.
    let one = RateLimit::new(0.001, 1e9);
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    g.bench_function("allow_1_source", |b| {
        b.iter(|| black_box(one.allow(black_box(ip), Instant::now())))
    });
    let many = RateLimit::new(0.001, 1e9);
    let mut i = 0u32;
    g.bench_function("allow_100k_sources", |b| {
        b.iter(|| {
            i = (i + 1) % SOURCES;
            let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + i));
            black_box(many.allow(black_box(ip), Instant::now()))
        })
    });
    g.finish();
}

criterion_group!(benches, allow);
criterion_main!(benches);
