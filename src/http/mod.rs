//! HTTP/1.1 on both listeners: request heads under hard caps, responses, the WebSocket
//! upgrade checks, the route table and the admin token check — parsing and formatting
//! only. (Admission at accept and the admin endpoints, which gather every shard's
//! reports, live in `shard::accept` and `shard::admin`; per-address state in `per_ip`.)

pub mod auth;
pub mod head;
pub mod response;
pub mod routes;
pub mod upgrade;
