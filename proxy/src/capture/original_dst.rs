//! Where a captured connection was going: the destination before iptables redirected it to the
//! capture port (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

/// Looks up the original destination of an accepted connection. A trait so tests on loopback
/// (where nothing is redirected) can say where each connection "was going".
pub trait OriginalDst: Send + Sync + 'static {
    /// The original destination of `stream`.
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr>;
}

/// The kernel's answer: `getsockopt(SOL_IP, SO_ORIGINAL_DST)` (IPv6: `SOL_IPV6`,
/// `IP6T_SO_ORIGINAL_DST`), read from netfilter's connection tracking entry.
///
/// On a connection that was not redirected the kernel answers with the tracked destination,
/// which is the local address itself, when connection tracking knows the connection, and with
/// an error (`ENOENT`, or `ENOPROTOOPT` without netfilter) otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct SockOptOriginalDst;

impl OriginalDst for SockOptOriginalDst {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn original_dst(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
        let local = stream.local_addr()?;
        let addr = if local.is_ipv4() {
            SocketAddr::from(SockaddrIn::from(getsockopt(stream, sockopt::OriginalDst)?))
        } else {
            SocketAddr::from(SockaddrIn6::from(getsockopt(
                stream,
                sockopt::Ip6tOriginalDst,
            )?))
        };
        Ok(addr)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn original_dst(&self, _stream: &TcpStream) -> io::Result<SocketAddr> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_ORIGINAL_DST is Linux only",
        ))
    }
}

/// The lookup shared by a capture listener's connections.
pub type SharedOriginalDst = Arc<dyn OriginalDst>;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// On loopback nothing is redirected: the kernel either knows the connection from
    /// connection tracking (and answers the local address, since there was no NAT) or does
    /// not track it (and answers an error). Either way it never invents another address.
    #[tokio::test]
    async fn sockopt_on_a_connection_that_was_not_redirected() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = l.accept().await.unwrap();
        // Observed on the build machine (conntrack loaded, loopback untracked): ENOENT.
        match SockOptOriginalDst.original_dst(&accepted) {
            Ok(a) => assert_eq!(a, addr, "not redirected: the original is the local address"),
            Err(e) => {
                let errno = e.raw_os_error();
                assert!(
                    errno == Some(nix::libc::ENOENT) || errno == Some(nix::libc::ENOPROTOOPT),
                    "unexpected error {e:?}"
                );
            }
        }
    }
}
