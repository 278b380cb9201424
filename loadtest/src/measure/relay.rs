//! `measure relay-wait` and `measure relay-figure`: the relay's `/stats` polled for a
//! condition with a deadline, or one figure printed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{RelayFigureArgs, RelayWaitArgs};
use crate::figure::Condition;
use crate::relay_stats;

/// Polls `/stats` every `every` until all `conditions` hold; `Ok(None)` when they do,
/// `Ok(Some(last))` with the last body read when `timeout` passed first. A `/stats`
/// that cannot be read counts as not met (the relay may be busy); its error is kept for
/// the message when nothing was ever read.
pub fn wait_for(
    admin: SocketAddr,
    conditions: &[Condition],
    timeout: Duration,
    every: Duration,
) -> Result<Option<Value>, String> {
    let deadline = Instant::now() + timeout;
    let mut last_body = None;
    let mut last_error = String::new();
    loop {
        match relay_stats::fetch_plain(admin, None) {
            Ok(stats) if conditions.iter().all(|c| c.met_by(&stats)) => return Ok(None),
            Ok(stats) => last_body = Some(stats),
            Err(error) => last_error = error,
        }
        if Instant::now() >= deadline {
            return match last_body {
                Some(stats) => Ok(Some(stats)),
                None => Err(format!("/stats on {admin} never read: {last_error}")),
            };
        }
        std::thread::sleep(every);
    }
}

/// `measure relay-wait`.
pub fn wait(args: &RelayWaitArgs) -> Result<i32, String> {
    let Some(stats) = wait_for(args.admin, &args.until, args.timeout, args.every)? else {
        return Ok(0);
    };
    eprintln!("not met within {:?}:", args.timeout);
    for condition in &args.until {
        let now = condition
            .figure
            .of(&stats)
            .map_or("absent".to_owned(), |v| v.to_string());
        let verdict = if condition.met_by(&stats) {
            "ok"
        } else {
            "NOT MET"
        };
        eprintln!("  {condition}: {} is {now} -> {verdict}", condition.figure);
    }
    eprintln!(
        "  connections {:?}, gauges {:?}",
        relay_stats::connection_counts(&stats),
        relay_stats::gauges(&stats)
    );
    Ok(1)
}

/// `measure relay-figure`.
pub fn figure(args: &RelayFigureArgs) -> Result<i32, String> {
    let stats = relay_stats::fetch_plain(args.admin, None)?;
    let value = args
        .figure
        .of(&stats)
        .ok_or_else(|| format!("/stats has no `{}`", args.figure))?;
    println!("{value}");
    Ok(0)
}
