//! What the styles see of the shard they run on: [`StyleHost`], a narrow per-shard
//! context defined here, below the shard, and implemented by it (`shard/mod.rs`).
//!
//! The styles receive what they need rather than reaching for it: this shard's index,
//! its counters and queue bound (through the connection layer's `Outbox`/`Host`, which
//! `StyleHost` extends), the route (`shard_of`, the shard count), the per-address
//! guessing budget, the open-connection count, the reader spawn, the shutdown flag, each
//! style's registry, and the one cross-shard request a style makes (a ticket mint on
//! the workspace's shard). Settings are not here: each style's registry holds its
//! `Settings`, built once from `Config`.
//!
//! Every style function is generic over its host (`fn on_binary<S: StyleHost>(shard:
//! &Rc<S>, …)`), like the connection layer is over `Host`: the relay has one host type,
//! the shard, so each function is compiled once for it and every call is static; nothing
//! is allocated or dispatched dynamically per message.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use crate::modes::{pair, server_id, session, session_ws, ticket, Conn, Role};
use crate::wake::WakeReceiver;
use crate::ws::conn::Host;

/// The shard as the styles see it (implemented by `shard::Shard`).
pub trait StyleHost: Host<Role> {
    /// Number of shards.
    fn shards(&self) -> usize;
    /// The shard that owns a route key (a server-id, a pair or session code, a ticket,
    /// a workspace).
    fn shard_of(&self, key: &[u8]) -> usize;
    /// Does this shard (of this node) mint keys like `key` of `alphabet`, whose first
    /// significant character is `first`? Its node must own `first` (PROTOCOL §9; always
    /// so for a single node) and its shard the key's hash, so that whatever places the
    /// key later — HAProxy, then the accepting shard — finds it here.
    fn mints(&self, alphabet: &[u8], first: u8, key: &[u8]) -> bool;
    /// The node that minted keys starting with `first` of `alphabet`, when that is
    /// another node (PROTOCOL §9): a browser joining such a key by message is handed
    /// there. None for this node, and always for a single node.
    fn node_for(&self, alphabet: &[u8], first: u8) -> Option<std::net::SocketAddr>;
    /// The node that owns `workspace`'s tickets, when that is another node (PROTOCOL
    /// §9): a mint for it is handed there, so the per-workspace cap holds across the
    /// cluster. None for this node, and always for a single node.
    fn workspace_node(&self, workspace: &str) -> Option<std::net::SocketAddr>;
    /// The admin token (`--admin-token-file`), which a mint handed to another node
    /// carries.
    fn admin_token(&self) -> Option<&str>;
    /// The nodes read a PROXY header from their peers (`--proxy-protocol`): a hand-over
    /// to another node sends one naming the client.
    fn proxy_protocol(&self) -> bool;
    /// How many node-shards share a minted key space: a draw is this shard's one time in
    /// this many, on average.
    fn minters(&self) -> usize;
    /// May `ip` try a session code now (PROTOCOL §5)? False once its failed joins used
    /// up `--code-guesses-per-ip` for the minute; always true when the budget is off.
    fn may_try_code(&self, ip: IpAddr) -> bool;
    /// A join from `ip` was answered with an error: spend one from its guessing budget.
    fn failed_join(&self, ip: IpAddr);
    /// Open client connections right now, on every shard (a connection's share of the
    /// memory limit).
    fn open_connections(&self) -> usize;
    /// Shutdown began: no new connection is served.
    fn shutting_down(&self) -> bool;
    /// Start serving an upgraded connection: track it and run its reader, which first
    /// processes `initial` (bytes that came with the request head, or that a moved
    /// connection had read but not decoded).
    fn spawn_reader(self: &Rc<Self>, conn: Rc<Conn>, initial: Vec<u8>);
    /// The server-id slots this shard owns.
    fn server_ids(&self) -> &RefCell<server_id::Registry>;
    /// The pairs whose code this shard owns.
    fn pairs(&self) -> &RefCell<pair::Registry>;
    /// The session codes this shard minted.
    fn sessions(&self) -> &RefCell<session::Registry>;
    /// The `/ws` session codes this shard minted, and the `/ws` connections awaiting
    /// their first message.
    fn session_ws(&self) -> &RefCell<session_ws::Registry>;
    /// The tickets this shard minted.
    fn tickets(&self) -> &RefCell<ticket::Registry>;
    /// Ask shard `owner` to mint a ticket for `plan` (its workspace's shard); the answer
    /// arrives on the receiver. None when that shard is gone.
    fn ask_mint(
        &self,
        owner: usize,
        plan: Box<ticket::MintPlan>,
    ) -> Option<WakeReceiver<ticket::MintOutcome>>;
}
