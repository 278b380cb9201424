//! Several hosts (PROTOCOL §9): this node's place among `--nodes`, and the placement
//! rules that every node and the generated HAProxy configuration
//! (`shardrelay haproxy-config`, `crate::haproxy`) agree on.
//!
//! Two kinds of route key, two rules:
//! * keys that arrive with the request (`X-Pyrycode-Server`, `pair`) are placed by
//!   HAProxy's consistent hashing; no node needs to know where they went;
//! * keys the relay mints (session codes, `/ws` codes, tickets) carry their node in their
//!   **first character**: the alphabet is dealt out among the nodes, in the order of their
//!   ids, one character at a time ([`Cluster::owns_first`]), and HAProxy's configuration
//!   lists each node's characters. The rest of the key is drawn as before, so a node's
//!   share of the code space is its share of first characters.
//!
//! A workspace's tickets are minted by one node, its owner by rendezvous hashing over the
//! node ids ([`Cluster::owner_of_workspace`]), so that adding or removing a node moves only
//! the workspaces of that node. The hash is FNV-1a with a 64-bit finaliser: fixed, so every
//! node (whatever its CPU or build) computes the same owner.
//!
//! Pure: parsing and arithmetic, no I/O.

use std::fmt;
use std::str::FromStr;

/// Most nodes a cluster may have: every node needs at least one first character of the
/// smallest minted-key alphabet (the session codes' 28, PROTOCOL §5).
pub const MAX_NODES: usize = 28;

/// The base64url alphabet in index order: a ticket's first character after `rly_` is the
/// top six bits of its first random byte, so every character is equally likely.
pub const TICKET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Longest node id: it names HAProxy servers and backends and appears in logs.
pub const MAX_ID_LEN: usize = 32;

/// One `--nodes` entry: `ID=HOST:PORT`, the node's id and the address the other nodes
/// (and HAProxy) reach its public listener on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id (`[A-Za-z0-9_-]`, 1–32 characters).
    pub id: String,
    /// `HOST:PORT` of its public listener, as the other nodes reach it.
    pub addr: String,
}

/// Why a `--nodes` entry or `--node-id` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No `=` between the id and the address.
    #[error("`{0}` is not ID=HOST:PORT")]
    Shape(String),
    /// The id is empty, too long, or has other characters than `[A-Za-z0-9_-]`.
    #[error("node id `{0}` must be 1-32 characters of A-Z a-z 0-9 _ -")]
    Id(String),
    /// The address has no port, or the port is not a number.
    #[error("`{0}` is not HOST:PORT")]
    Addr(String),
    /// Two entries share an id.
    #[error("node id `{0}` is listed twice in --nodes")]
    Duplicate(String),
    /// More nodes than first characters to deal out.
    #[error("--nodes lists {0} nodes; at most {MAX_NODES} are supported")]
    TooMany(usize),
    /// `--node-id` names no entry of `--nodes`.
    #[error("--node-id `{0}` is not one of --nodes")]
    NotListed(String),
}

/// True for a valid node id.
fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl FromStr for Node {
    type Err = NodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (id, addr) = text
            .split_once('=')
            .ok_or_else(|| NodeError::Shape(text.to_owned()))?;
        if !is_valid_id(id) {
            return Err(NodeError::Id(id.to_owned()));
        }
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(NodeError::Addr(addr.to_owned()));
        }
        Ok(Node {
            id: id.to_owned(),
            addr: addr.to_owned(),
        })
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.addr)
    }
}

/// The nodes of a cluster, in id order (the order placement deals characters in, so it
/// does not depend on how `--nodes` was written), and which one this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Every node, sorted by id.
    nodes: Vec<Node>,
    /// This node's index in `nodes`.
    me: usize,
}

/// The nodes in id order, checked: unique ids, at most [`MAX_NODES`].
pub fn sorted_nodes(nodes: &[Node]) -> Result<Vec<Node>, NodeError> {
    let mut sorted = nodes.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(NodeError::Duplicate(pair[0].id.clone()));
    }
    if sorted.len() > MAX_NODES {
        return Err(NodeError::TooMany(sorted.len()));
    }
    Ok(sorted)
}

impl Cluster {
    /// The cluster `nodes` as seen by node `me`.
    pub fn new(me: &str, nodes: &[Node]) -> Result<Self, NodeError> {
        let nodes = sorted_nodes(nodes)?;
        let me = nodes
            .iter()
            .position(|n| n.id == me)
            .ok_or_else(|| NodeError::NotListed(me.to_owned()))?;
        Ok(Cluster { nodes, me })
    }

    /// Every node, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// This node.
    pub fn me(&self) -> &Node {
        &self.nodes[self.me]
    }

    /// This node's index (in id order).
    pub fn my_index(&self) -> usize {
        self.me
    }

    /// Does this node own keys whose first character is `c` of `alphabet`?
    pub fn owns_first(&self, alphabet: &[u8], c: u8) -> bool {
        first_char_owner(alphabet, c, self.nodes.len()) == Some(self.me)
    }

    /// The node that owns `workspace`'s tickets (rendezvous hashing over the ids).
    pub fn owner_of_workspace(&self, workspace: &str) -> &Node {
        &self.nodes[rendezvous_owner(&self.nodes, workspace.as_bytes())]
    }

    /// The index (in id order) of the node that owns `workspace`'s tickets.
    pub fn owner_index_of_workspace(&self, workspace: &str) -> usize {
        rendezvous_owner(&self.nodes, workspace.as_bytes())
    }

    /// True when this node owns `workspace`.
    pub fn owns_workspace(&self, workspace: &str) -> bool {
        rendezvous_owner(&self.nodes, workspace.as_bytes()) == self.me
    }
}

/// Which of `nodes` nodes owns keys starting with `c` of `alphabet` (the character at
/// index `j` goes to node `j mod nodes`); None when `c` is not in the alphabet.
pub fn first_char_owner(alphabet: &[u8], c: u8, nodes: usize) -> Option<usize> {
    let j = alphabet.iter().position(|&a| a == c)?;
    Some(j % nodes.max(1))
}

/// The first characters of `alphabet` dealt to node `index` of `nodes`.
pub fn first_chars(alphabet: &[u8], index: usize, nodes: usize) -> Vec<u8> {
    alphabet
        .iter()
        .enumerate()
        .filter(|(j, _)| j % nodes.max(1) == index)
        .map(|(_, &c)| c)
        .collect()
}

/// The node (index into `nodes`) with the highest hash of (its id, `key`).
fn rendezvous_owner(nodes: &[Node], key: &[u8]) -> usize {
    nodes
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| placement_hash(n.id.as_bytes(), key))
        .map_or(0, |(i, _)| i)
}

/// FNV-1a over `id`, a separator and `key`, then the splitmix64 finaliser (FNV alone
/// mixes its last bytes poorly). Fixed: every node computes the same value.
fn placement_hash(id: &[u8], key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in id.iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &str) -> Vec<Node> {
        spec.split(',').map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_node_entry_parses_and_bad_ones_say_why() {
        let n: Node = "a-1=10.0.0.1:8080".parse().unwrap();
        assert_eq!((n.id.as_str(), n.addr.as_str()), ("a-1", "10.0.0.1:8080"));
        assert!("[::1]:8080".parse::<Node>().is_err());
        assert_eq!(
            "b=[::1]:8080".parse::<Node>().unwrap().addr,
            "[::1]:8080".to_owned()
        );
        assert!(matches!("a 1=h:1".parse::<Node>(), Err(NodeError::Id(_))));
        assert!(matches!("a=h".parse::<Node>(), Err(NodeError::Addr(_))));
        assert!(matches!(
            "a=h:99999".parse::<Node>(),
            Err(NodeError::Addr(_))
        ));
        assert!(matches!("=h:1".parse::<Node>(), Err(NodeError::Id(_))));
    }

    #[test]
    fn the_cluster_is_the_same_whatever_order_the_nodes_are_listed_in() {
        let one = Cluster::new("b", &nodes("a=h:1,b=h:2,c=h:3")).unwrap();
        let two = Cluster::new("b", &nodes("c=h:3,b=h:2,a=h:1")).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.my_index(), 1);
        assert!(matches!(
            Cluster::new("d", &nodes("a=h:1")),
            Err(NodeError::NotListed(_))
        ));
        assert!(matches!(
            Cluster::new("a", &nodes("a=h:1,a=h:2")),
            Err(NodeError::Duplicate(_))
        ));
    }

    #[test]
    fn every_first_character_has_exactly_one_owner() {
        let alphabet = b"346789ABCDEFGHJKLMNPQRTUVWXY";
        for n in 1..=MAX_NODES {
            let mut seen = Vec::new();
            for i in 0..n {
                let chars = first_chars(alphabet, i, n);
                assert!(!chars.is_empty(), "{n} nodes: node {i} has no character");
                for c in chars {
                    assert_eq!(first_char_owner(alphabet, c, n), Some(i));
                    seen.push(c);
                }
            }
            seen.sort_unstable();
            let mut all = alphabet.to_vec();
            all.sort_unstable();
            assert_eq!(seen, all);
        }
    }

    #[test]
    fn a_workspace_has_one_owner_and_adding_a_node_moves_only_the_new_nodes_share() {
        let three = nodes("a=h:1,b=h:2,c=h:3");
        let four = nodes("a=h:1,b=h:2,c=h:3,d=h:4");
        let views: Vec<Cluster> = ["a", "b", "c"]
            .iter()
            .map(|me| Cluster::new(me, &three).unwrap())
            .collect();
        let mut moved = 0;
        let mut per_node = [0usize; 3];
        for w in 0..3000 {
            let ws = format!("workspace-{w}");
            let owners: Vec<bool> = views.iter().map(|v| v.owns_workspace(&ws)).collect();
            assert_eq!(owners.iter().filter(|&&o| o).count(), 1, "{ws}");
            let before = views[0].owner_of_workspace(&ws).id.clone();
            per_node[["a", "b", "c"].iter().position(|id| *id == before).unwrap()] += 1;
            let after = Cluster::new("a", &four)
                .unwrap()
                .owner_of_workspace(&ws)
                .id
                .clone();
            if after != before {
                assert_eq!(after, "d", "{ws} moved between old nodes");
                moved += 1;
            }
        }
        // About a quarter moves to the new node; each old node had about a third.
        assert!((600..900).contains(&moved), "moved {moved}");
        for count in per_node {
            assert!((850..1150).contains(&count), "{per_node:?}");
        }
    }
}
