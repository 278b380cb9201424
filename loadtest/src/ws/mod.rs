//! WebSocket client pieces without I/O: [`frame`] encodes masked client frames and
//! decodes the relay's frames; [`handshake`] builds the upgrade request and checks the
//! `101` answer.

pub mod frame;
pub mod handshake;
