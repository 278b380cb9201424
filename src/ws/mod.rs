//! WebSocket (RFC 6455): the frame codec and masking (pure, no I/O) and the connection
//! reader and writer that drive them over a socket.

pub mod codec;
pub mod conn;
pub mod forward;
pub mod mask;
pub mod payload;
