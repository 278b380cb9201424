//! `measure free-port` and `measure wait-port`: the loopback ports a script needs to
//! name before it starts a process (a cluster's `--nodes`, a balancer's frontend), and
//! the wait for that process to listen.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::cli::WaitPortArgs;

/// How long `wait-port` waits.
const WAIT: Duration = Duration::from_secs(10);

/// Time between connection attempts.
const RETRY: Duration = Duration::from_millis(20);

/// `measure free-port`: print a port the kernel picked on 127.0.0.1.
pub fn free_port() -> Result<i32, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{port}");
    Ok(0)
}

/// `measure wait-port`: 0 once `addr` accepts a connection, 1 after [`WAIT`].
pub fn wait_port(args: &WaitPortArgs) -> Result<i32, String> {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&args.addr, RETRY).is_ok() {
            return Ok(0);
        }
        std::thread::sleep(RETRY);
    }
    eprintln!("nothing listens at {} after {WAIT:?}", args.addr);
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_found_and_a_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(wait_port(&WaitPortArgs { addr }), Ok(0));
    }
}
