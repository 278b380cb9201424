//! HTTP/1.1 on both listeners: request heads under hard caps, responses, the WebSocket
//! upgrade checks, the route table and the admin endpoints. (Admission at accept lives in
//! `shard::accept`, per-address state in `per_ip`.)

pub mod admin;
pub mod head;
pub mod response;
pub mod routes;
pub mod upgrade;
