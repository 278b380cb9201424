//! Session codes (PROTOCOL §5, and the `/ws` protocol's codes): six characters from an
//! alphabet without look-alikes, drawn from the operating system's CSPRNG without modulo
//! bias, and minted only when the minting shard owns them, so a browser that joins is
//! routed — or moved — to the code's host. The drawing is generic over the alphabet:
//! the `/ws` protocol uses its own ([`crate::modes::session_ws`]), and its browser ids are
//! drawn the same way.

/// The code alphabet (PROTOCOL §5): digits and upper-case letters without the look-alike
/// pairs 0/O, 1/I, 2/Z and 5/S.
pub const ALPHABET: &[u8; 28] = b"346789ABCDEFGHJKLMNPQRTUVWXY";

/// [`ALPHABET`] with its sampling bound.
pub const SESSION: Alphabet = Alphabet::new(ALPHABET);

/// Characters in a code: 28⁶ ≈ 4.8 × 10⁸ codes, against at most 5 guesses per connection.
pub const CODE_LEN: usize = 6;

/// A code, as its ASCII bytes (also its route key).
pub type Code = [u8; CODE_LEN];

/// Random bytes fetched per CSPRNG call: one code takes 6 kept bytes, and a shard among
/// N mints after N draws on average.
const POOL: usize = 64;

/// Draws per shard allowed when minting: a shard among N keeps one draw in N on average,
/// so 1024 N draws fail only if the CSPRNG is broken.
const MINT_DRAWS_PER_SHARD: usize = 1024;

/// The characters a code is drawn from, and the rejection-sampling bound that keeps
/// every character equally likely.
#[derive(Debug, Clone, Copy)]
pub struct Alphabet {
    /// The characters (ASCII, 2 to 256 of them).
    chars: &'static [u8],
    /// Largest byte value kept, exclusive: the biggest multiple of the alphabet's size
    /// up to 256, so `b % len` is uniform (252 = 9 × 28; 256 for a 64-character one).
    unbiased_below: u16,
}

impl Alphabet {
    /// An alphabet of `chars` (ASCII, 2 to 256 characters).
    pub const fn new(chars: &'static [u8]) -> Self {
        let len = chars.len() as u16;
        Alphabet {
            chars,
            unbiased_below: 256 / len * len,
        }
    }

    /// The characters, in order (the order a cluster deals first characters in).
    pub fn chars(&self) -> &'static [u8] {
        self.chars
    }

    /// True when `c` is one of the characters.
    pub fn contains(&self, c: &u8) -> bool {
        self.chars.contains(c)
    }
}

/// A code of the right shape from what a browser typed, in any letter case.
pub fn parse(text: &str) -> Option<Code> {
    parse_in(&SESSION, text)
}

/// A code of `alphabet` from what a browser typed, in any letter case.
pub fn parse_in(alphabet: &Alphabet, text: &str) -> Option<Code> {
    let mut code: Code = text.as_bytes().try_into().ok()?;
    code.make_ascii_uppercase();
    code.iter().all(|c| alphabet.contains(c)).then_some(code)
}

/// The code as text.
pub fn as_str(code: &[u8]) -> &str {
    // Cannot fail for a minted or parsed code (ASCII only); an empty string otherwise.
    std::str::from_utf8(code).unwrap_or_default()
}

/// Random bytes, refilled from the CSPRNG as they run out.
#[derive(Debug)]
struct Pool {
    /// Bytes from the last fill.
    bytes: [u8; POOL],
    /// Bytes already used.
    used: usize,
}

impl Pool {
    /// An empty pool (the first `next` fills it).
    fn new() -> Self {
        Pool {
            bytes: [0; POOL],
            used: POOL,
        }
    }

    /// One random byte; None when the CSPRNG fails.
    fn next(&mut self) -> Option<u8> {
        if self.used == POOL {
            getrandom::fill(&mut self.bytes).ok()?;
            self.used = 0;
        }
        let byte = self.bytes[self.used];
        self.used += 1;
        Some(byte)
    }

    /// One uniformly drawn character of `alphabet`.
    fn next_char(&mut self, alphabet: &Alphabet) -> Option<u8> {
        loop {
            let byte = self.next()?;
            if u16::from(byte) < alphabet.unbiased_below {
                return Some(alphabet.chars[usize::from(byte) % alphabet.chars.len()]);
            }
        }
    }

    /// One uniformly drawn string of `N` characters of `alphabet`.
    fn next_code<const N: usize>(&mut self, alphabet: &Alphabet) -> Option<[u8; N]> {
        let mut code = [0u8; N];
        for c in &mut code {
            *c = self.next_char(alphabet)?;
        }
        Some(code)
    }
}

/// Draw codes until one is `acceptable` (owned by this shard and not live), at most
/// `attempts` times. None when the CSPRNG fails or every draw was refused.
pub fn mint(attempts: usize, acceptable: impl FnMut(&Code) -> bool) -> Option<Code> {
    mint_in(&SESSION, attempts, acceptable)
}

/// Draw `N` characters of `alphabet` until the result is `acceptable`, at most
/// `attempts` times. None when the CSPRNG fails or every draw was refused.
pub fn mint_in<const N: usize>(
    alphabet: &Alphabet,
    attempts: usize,
    mut acceptable: impl FnMut(&[u8; N]) -> bool,
) -> Option<[u8; N]> {
    let mut pool = Pool::new();
    for _ in 0..attempts {
        let code = pool.next_code(alphabet)?;
        if acceptable(&code) {
            return Some(code);
        }
    }
    None
}

/// A fresh code of `alphabet` that the minting shard owns (`owned`: its node's first
/// characters and its shard's hash, so joins are routed to it) and that is not `live`;
/// `owners` is how many node-shards share the code space, so a draw is owned one time in
/// `owners` on average. None only when the CSPRNG is broken.
pub fn mint_owned(
    alphabet: &Alphabet,
    owners: usize,
    owned: impl Fn(&Code) -> bool,
    live: impl Fn(&Code) -> bool,
) -> Option<Code> {
    let draws = MINT_DRAWS_PER_SHARD * owners.max(1);
    mint_in(alphabet, draws, |c| owned(c) && !live(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_codes_have_the_shape_and_parse_back() {
        for _ in 0..1000 {
            let code = mint(1, |_| true).unwrap_or_else(|| panic!("CSPRNG failed"));
            assert_eq!(parse(as_str(&code)), Some(code));
        }
    }

    #[test]
    fn a_minted_code_is_owned_by_the_minting_shard_and_not_live() {
        let owner_of = |c: &Code| usize::from(c[0]) % 4;
        let live = |c: &Code| c[1] == b'A';
        for _ in 0..200 {
            let code = mint_owned(&SESSION, 4, |c| owner_of(c) == 3, live)
                .unwrap_or_else(|| panic!("CSPRNG failed"));
            assert_eq!(owner_of(&code), 3);
            assert!(!live(&code));
        }
    }

    #[test]
    fn parse_refuses_other_shapes() {
        for bad in ["", "H4F7K", "H4F7KNN", "H4F7K0", "H4F7KÑ", "H4F7Kİ"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(parse("h4f7kn"), Some(*b"H4F7KN"));
    }

    #[test]
    fn every_character_is_drawn_roughly_equally() {
        let mut counts = [0u32; 28];
        for _ in 0..5000 {
            let code = mint(1, |_| true).unwrap_or_else(|| panic!("CSPRNG failed"));
            for c in code {
                let i = ALPHABET.iter().position(|a| *a == c).unwrap_or(usize::MAX);
                counts[i] += 1;
            }
        }
        // 30000 draws: about 1071 each; a biased or broken draw strays far from it.
        assert!(
            counts.iter().all(|&n| (850..1300).contains(&n)),
            "{counts:?}"
        );
    }
}
