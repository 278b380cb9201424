//! Session codes (PROTOCOL §5): six characters from an alphabet without look-alikes,
//! drawn from the operating system's CSPRNG without modulo bias, and minted only when the
//! minting shard owns them, so a browser that joins is routed to the code's host.

/// The code alphabet (PROTOCOL §5): digits and upper-case letters without the look-alike
/// pairs 0/O, 1/I, 2/Z and 5/S.
pub const ALPHABET: &[u8; 28] = b"346789ABCDEFGHJKLMNPQRTUVWXY";

/// Characters in a code: 28⁶ ≈ 4.8 × 10⁸ codes, against at most 5 guesses per connection.
pub const CODE_LEN: usize = 6;

/// A code, as its ASCII bytes (also its route key).
pub type Code = [u8; CODE_LEN];

/// Largest byte value kept by rejection sampling: 252 = 9 × 28, so `b % 28` is uniform.
const UNBIASED_BELOW: u8 = 252;

/// Random bytes fetched per CSPRNG call: one code takes 6 kept bytes, and a shard among
/// N mints after N draws on average.
const POOL: usize = 64;

/// A code of the right shape from what a browser typed, in any letter case.
pub fn parse(text: &str) -> Option<Code> {
    let mut code: Code = text.as_bytes().try_into().ok()?;
    code.make_ascii_uppercase();
    code.iter().all(|c| ALPHABET.contains(c)).then_some(code)
}

/// The code as text.
pub fn as_str(code: &Code) -> &str {
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

    /// One uniformly drawn alphabet character.
    fn next_char(&mut self) -> Option<u8> {
        loop {
            let byte = self.next()?;
            if byte < UNBIASED_BELOW {
                return Some(ALPHABET[usize::from(byte) % ALPHABET.len()]);
            }
        }
    }

    /// One uniformly drawn code.
    fn next_code(&mut self) -> Option<Code> {
        let mut code = [0u8; CODE_LEN];
        for c in &mut code {
            *c = self.next_char()?;
        }
        Some(code)
    }
}

/// Draw codes until one is `acceptable` (owned by this shard and not live), at most
/// `attempts` times. None when the CSPRNG fails or every draw was refused.
pub fn mint(attempts: usize, mut acceptable: impl FnMut(&Code) -> bool) -> Option<Code> {
    let mut pool = Pool::new();
    for _ in 0..attempts {
        let code = pool.next_code()?;
        if acceptable(&code) {
            return Some(code);
        }
    }
    None
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
