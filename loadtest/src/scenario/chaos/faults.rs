//! The faults, on a WebSocket scene: what the chaos client does to its victim, what the
//! relay must answer (PROTOCOL §2), and the reconnects that check a route works again
//! right after one of its connections left.

use super::client::WsClient;
use super::scenes::{self, code_name, Scene};
use super::{Ctx, Fault};
use crate::cli::ChaosStyle;

/// Garbage bytes written after the upgrade.
const GARBAGE_LEN: usize = 2048;
/// A frame cut off: its header announces this many bytes, half of them are sent.
const CUT_FRAME_LEN: usize = 1000;

/// Runs `fault` on a fresh scene of `style`; `Err` names what the relay did wrong.
pub fn run(ctx: &Ctx, style: ChaosStyle, fault: Fault, n: u64) -> Result<(), String> {
    if fault == Fault::Reconnect {
        return reconnect(ctx, style, n);
    }
    let Scene { victim, watcher } = scenes::open(ctx, style, n)?;
    hit(ctx, fault, victim, n)?;
    watcher.after_failure(ctx)
}

/// Applies one fault to `victim` and checks its own ending.
fn hit(ctx: &Ctx, fault: Fault, mut victim: WsClient, n: u64) -> Result<(), String> {
    let deadline = ctx.deadline();
    match fault {
        Fault::Kill => {
            let mut cut = victim.frame_header(CUT_FRAME_LEN as u64);
            cut.extend(std::iter::repeat_n(0x6b, CUT_FRAME_LEN / 2));
            let _ = victim.send_raw(&cut);
            victim.kill();
            Ok(())
        }
        Fault::HalfClose => {
            victim.half_close();
            // The relay read EOF: it must end the connection, not hold it open.
            victim
                .ending(deadline)
                .map(|_| ())
                .map_err(|e| format!("half_closed_socket_left_open_{e}"))
        }
        Fault::Garbage => {
            // A send error means the relay already closed on the first bytes.
            let _ = victim.send_raw(&garbage(n));
            match victim.ending(deadline)? {
                None | Some(1002) => Ok(()),
                other => Err(format!("garbage_ended_{}", code_name(other))),
            }
        }
        Fault::Oversize => oversize(ctx, victim, n),
        Fault::Reconnect => Ok(()),
    }
}

/// A message one byte over `--max-message`: every other time only its header (the relay
/// must judge the header, not wait for the payload), else the whole of it.
fn oversize(ctx: &Ctx, mut victim: WsClient, n: u64) -> Result<(), String> {
    let len = ctx.max_message + 1;
    let mut frame = victim.frame_header(len as u64);
    let whole = n % 2 == 1;
    if whole {
        frame.resize(frame.len() + len, 0x2a);
    }
    let _ = victim.send_raw(&frame);
    match victim.ending(ctx.deadline())? {
        Some(1009) => Ok(()),
        // Writing the payload the relay refused to read can reset the connection
        // before its close frame is read.
        None if whole => Ok(()),
        other => Err(format!("oversize_ended_{}", code_name(other))),
    }
}

/// Random bytes, except that the first one always breaks a frame rule (a reserved bit),
/// so the relay can never be left waiting for a plausible frame's payload.
fn garbage(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes: Vec<u8> = (0..GARBAGE_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    bytes[0] |= 0x40;
    bytes
}

/// A connection leaves cleanly and the route is used again at once.
fn reconnect(ctx: &Ctx, style: ChaosStyle, n: u64) -> Result<(), String> {
    let deadline = ctx.deadline();
    match style {
        ChaosStyle::Echo => {
            scenes::echo(ctx, n)?.close(deadline)?;
            scenes::echo(ctx, n + 1)?.close(deadline)
        }
        ChaosStyle::Pair => {
            let code = scenes::key(ctx, n);
            let (a, b) = scenes::pair(ctx, &code, n)?;
            leave_pair(ctx, a, b)?;
            let (a, b) =
                scenes::pair(ctx, &code, n + 1).map_err(|e| format!("code_not_freed_{e}"))?;
            leave_pair(ctx, a, b)
        }
        ChaosStyle::ServerId => reclaim(ctx, n),
        ChaosStyle::Session => rejoin(ctx, n),
        ChaosStyle::SessionWs => reauth(ctx, n),
        ChaosStyle::Ticket => Err("ticket_is_not_a_websocket".into()),
    }
}

/// Side A closes cleanly; B must get `1000`.
fn leave_pair(ctx: &Ctx, a: WsClient, mut b: WsClient) -> Result<(), String> {
    let deadline = ctx.deadline();
    a.close(deadline)?;
    match b.ending(deadline)? {
        Some(1000) => {
            b.finish_closed(deadline);
            Ok(())
        }
        other => Err(format!(
            "pair_peer_of_clean_leaver_ended_{}",
            code_name(other)
        )),
    }
}

/// The binary is killed and reconnects within grace: the old phone gets `4404`, a new
/// phone round-trips through the new binary.
fn reclaim(ctx: &Ctx, n: u64) -> Result<(), String> {
    let id = scenes::key(ctx, n);
    let (binary, mut old_phone, _) = scenes::phone(ctx, scenes::binary(ctx, &id)?, &id, n)?;
    binary.kill();
    let binary = scenes::binary(ctx, &id)?;
    let deadline = ctx.deadline();
    match old_phone.ending(deadline)? {
        Some(4404) => old_phone.finish_closed(deadline),
        other => return Err(format!("reclaimed_phone_ended_{}", code_name(other))),
    }
    let (binary, phone, _) = scenes::phone(ctx, binary, &id, n + 1)?;
    phone.close(deadline)?;
    binary.close(deadline)
}

/// The browser leaves cleanly; a new browser joins the same code and data flows.
fn rejoin(ctx: &Ctx, n: u64) -> Result<(), String> {
    let (host, code) = scenes::host(ctx)?;
    let (mut host, browser) = scenes::join(ctx, host, &code, n)?;
    let deadline = ctx.deadline();
    browser.close(deadline)?;
    scenes::wait_text(&mut host, deadline, |v| v["code"] == "BROWSER_DISCONNECTED")
        .map_err(|e| format!("host_not_told_{e}"))?;
    let (host, browser) =
        scenes::join(ctx, host, &code, n + 1).map_err(|e| format!("rejoin_{e}"))?;
    browser.close(deadline)?;
    host.close(deadline)
}

/// A `/ws` browser leaves cleanly (the Mac is told); a new one authenticates with the
/// same code and binary flows both ways.
fn reauth(ctx: &Ctx, n: u64) -> Result<(), String> {
    let (mac, code) = scenes::mac(ctx)?;
    let (mut mac, browser) = scenes::ws_browser(ctx, mac, &code, n)?;
    let deadline = ctx.deadline();
    browser.close(deadline)?;
    scenes::wait_text(&mut mac, deadline, |v| v["type"] == "browser_disconnected")
        .map_err(|e| format!("mac_not_told_{e}"))?;
    let (mac, browser) =
        scenes::ws_browser(ctx, mac, &code, n + 1).map_err(|e| format!("reauth_{e}"))?;
    browser.close(deadline)?;
    mac.close(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_always_starts_with_a_reserved_bit() {
        for seed in 0..1000 {
            let bytes = garbage(seed);
            assert_eq!(bytes.len(), GARBAGE_LEN);
            assert_ne!(bytes[0] & 0x40, 0);
        }
        assert_ne!(garbage(1), garbage(2));
    }
}
