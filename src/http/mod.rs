//! HTTP/1.1 on both listeners: request heads under hard caps, responses, the WebSocket
//! upgrade checks, the route table, admission control and the admin endpoints.

pub mod admin;
pub mod head;
pub mod response;
pub mod routes;
pub mod upgrade;
