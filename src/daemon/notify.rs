//! systemd's notification protocol (`sd_notify`): `READY=1` once the first poll is possible,
//! `WATCHDOG=1` while the poll loop is alive, `STOPPING=1` and `STATUS=` lines. A datagram to
//! the socket named by `$NOTIFY_SOCKET`; a no-op when not started by systemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<PathBuf>,
    abstract_name: Option<Vec<u8>>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(s) => {
                let bytes = s.as_encoded_bytes();
                if let Some(name) = bytes.strip_prefix(b"@") {
                    Self {
                        socket: None,
                        abstract_name: Some(name.to_vec()),
                    }
                } else {
                    Self {
                        socket: Some(PathBuf::from(s)),
                        abstract_name: None,
                    }
                }
            }
            None => Self::default(),
        }
    }

    /// True when running under systemd with notifications enabled.
    pub fn enabled(&self) -> bool {
        self.socket.is_some() || self.abstract_name.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). Errors are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let result = (|| -> std::io::Result<()> {
            let sock = UnixDatagram::unbound()?;
            if let Some(path) = &self.socket {
                sock.send_to(state.as_bytes(), path)?;
            } else if let Some(name) = &self.abstract_name {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.notify("READY=1\nSTATUS=polling for deployments");
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={}", text.replace('\n', " ")));
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier {
            socket: Some(path),
            abstract_name: None,
        };
        assert!(n.enabled());
        n.ready();
        n.watchdog();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=polling for deployments");
        let len = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        assert!(!Notifier::default().enabled());
        Notifier::default().ready();
    }
}
