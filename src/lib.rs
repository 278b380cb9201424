//! shardrelay: a sharded thread-per-core WebSocket and HTTP relay.
//!
//! # Layout
//! * `config`  — flags, environment variables, defaults and validation.
//! * `cluster` — several hosts (PROTOCOL §9): this node among `--nodes`, and the placement
//!   rules every node and the generated HAProxy configuration share.
//! * `haproxy` — `shardrelay haproxy-config`: the balancer's configuration for a cluster.
//! * `server`  — listeners, shard threads, signals, shutdown.
//! * `listen`  — exclusive listener binds shared by the shards, restart grace.
//! * `shard`   — one pinned runtime: accept path, inbox/handoff, tick task.
//! * `http`    — request heads, responses, upgrade checks, routes, admin.
//! * `per_ip`  — per-address state (IPv4, IPv6 /64): connection rate, guessing budget.
//! * `proxy`   — the real client address behind a balancer: trusted proxies, the PROXY
//!   header (v1/v2) read before any other byte, `X-Forwarded-For`.
//! * `ws`      — RFC 6455 codec and masking (no I/O), connection reader and writer.
//! * `modes`   — the rendezvous styles and their registries.
//! * `memory`  — the process-wide memory budget (`--memory-limit`) every held byte is
//!   charged to.
//! * `stats`   — per-shard counters and histograms, JSON and Prometheus rendering.
//! * `logging` — log set-up (a non-blocking writer thread) and the escaping of client text.
//! * `process` — process-wide `/metrics` figures: build info, fds, memory, caps.
//! * `watch`   — the `shardrelay stats` terminal view.
//! * `manual`  — shell completions and the man page, generated from the CLI.
//! * `sys`     — the unsafe code: raw socket calls and descriptor moves (besides
//!   `alloc_count`'s counting allocator, built only with the `alloc-count` feature).
//! * `timer`   — a hierarchical timing wheel: deadlines that cost what expires, not what
//!   is registered.
//! * `tls`     — native TLS (rustls, unbuffered): key loading and reload, the record layer.
//! * `wake`    — the cross-thread channel with a task wake that every shard's inbox
//!   and each cross-shard reply uses.
//! * `alloc_count` — (feature `alloc-count` only) the counting allocator of the
//!   allocations-per-message benchmark.
#![deny(unreachable_pub)]

#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod cluster;
pub mod config;
pub mod haproxy;
pub mod http;
pub mod listen;
pub mod logging;
pub mod manual;
pub mod memory;
pub mod modes;
pub mod net;
pub mod per_ip;
pub mod process;
pub mod proxy;
pub mod server;
pub mod shard;
pub mod stats;
pub mod sys;
pub mod timer;
pub mod tls;
pub mod wake;
pub mod watch;
pub mod ws;
