//! Where deliveries may go. A subscription's URL could name, or resolve to, an address inside
//! our own network (the metadata service, a database, the loopback admin port): those are
//! refused unless the operator allows them, checked at registration and again at every
//! connection, through our own resolver, so a name that resolves elsewhere later (DNS
//! rebinding) is caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which kinds of non-public address the operator allows deliveries to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
    pub allow_link_local: bool,
    /// Plain `http://` targets (HTTPS only when false).
    pub allow_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    #[error("{0} is a loopback address")]
    Loopback(IpAddr),
    #[error("{0} is a private address")]
    Private(IpAddr),
    #[error("{0} is a link-local address")]
    LinkLocal(IpAddr),
    #[error("{0} is not a routable unicast address")]
    Unroutable(IpAddr),
    #[error("plain http targets are not allowed; use https")]
    PlainHttp,
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
}

impl AddressRefused {
    pub fn code(&self) -> &'static str {
        match self {
            Self::PlainHttp => "webhook_url_not_https",
            Self::Unresolvable(_) => "webhook_host_unresolvable",
            _ => "webhook_address_not_allowed",
        }
    }
}

impl AddressPolicy {
    /// Allows loopback, private and link-local targets and plain http: for tests and local
    /// development only.
    pub fn permissive() -> Self {
        Self {
            allow_loopback: true,
            allow_private: true,
            allow_link_local: true,
            allow_http: true,
        }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        let ip = match ip {
            // An IPv4-mapped IPv6 address reaches the IPv4 host it names.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Loopback if self.allow_loopback => Ok(()),
            Class::Private if self.allow_private => Ok(()),
            Class::LinkLocal if self.allow_link_local => Ok(()),
            Class::Loopback => Err(AddressRefused::Loopback(ip)),
            Class::Private => Err(AddressRefused::Private(ip)),
            Class::LinkLocal => Err(AddressRefused::LinkLocal(ip)),
            Class::Unroutable => Err(AddressRefused::Unroutable(ip)),
        }
    }

    /// Resolves the URL's host and checks every address it has. Used at registration; the
    /// delivery client checks again when it connects.
    pub async fn check_url(&self, url: &url::Url) -> Result<(), AddressRefused> {
        if url.scheme() != "https" && !self.allow_http {
            return Err(AddressRefused::PlainHttp);
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            _ => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| AddressRefused::Unresolvable(host.to_owned()))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(AddressRefused::Unresolvable(host.to_owned()));
        }
        addresses.iter().try_for_each(|a| self.check(a.ip()))
    }
}

enum Class {
    Public,
    Loopback,
    Private,
    LinkLocal,
    Unroutable,
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // 100.64.0.0/10 is carrier-grade NAT space: inside someone's network.
        Class::Private
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
    {
        Class::Unroutable
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Class::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        // fc00::/7, unique local addresses.
        Class::Private
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0xdb8
    {
        Class::Unroutable
    } else {
        Class::Public
    }
}

/// The delivery client's resolver: the system's answers, minus the addresses the policy
/// refuses. A host with no allowed address fails to connect, which counts as a failed attempt.
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| policy.check(a.ip()).is_ok()).collect();
            if allowed.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to addresses deliveries may not reach").into();
                return Err(refused);
            }
            let addresses: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

impl GuardedResolver {
    pub fn shared(policy: AddressPolicy) -> Arc<Self> {
        Arc::new(Self { policy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = AddressPolicy {
            allow_http: true,
            ..AddressPolicy::default()
        };
        for (addr, refused) in [
            ("127.0.0.1", AddressRefused::Loopback(ip("127.0.0.1"))),
            ("::1", AddressRefused::Loopback(ip("::1"))),
            ("10.0.0.1", AddressRefused::Private(ip("10.0.0.1"))),
            ("192.168.1.1", AddressRefused::Private(ip("192.168.1.1"))),
            ("100.64.0.1", AddressRefused::Private(ip("100.64.0.1"))),
            ("fd00::1", AddressRefused::Private(ip("fd00::1"))),
            (
                "169.254.169.254",
                AddressRefused::LinkLocal(ip("169.254.169.254")),
            ),
            ("fe80::1", AddressRefused::LinkLocal(ip("fe80::1"))),
            ("0.0.0.0", AddressRefused::Unroutable(ip("0.0.0.0"))),
            (
                "::ffff:127.0.0.1",
                AddressRefused::Loopback(ip("127.0.0.1")),
            ),
        ] {
            assert_eq!(policy.check(ip(addr)), Err(refused), "{addr}");
        }
        assert_eq!(policy.check(ip("93.184.216.34")), Ok(()));
        assert_eq!(policy.check(ip("2606:2800:220:1::1")), Ok(()));
    }

    #[test]
    fn the_operator_can_allow_each_kind() {
        let loopback_only = AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        };
        assert_eq!(loopback_only.check(ip("127.0.0.1")), Ok(()));
        assert!(loopback_only.check(ip("10.0.0.1")).is_err());
        assert_eq!(AddressPolicy::permissive().check(ip("10.0.0.1")), Ok(()));
        assert!(AddressPolicy::permissive().check(ip("0.0.0.0")).is_err());
    }

    #[tokio::test]
    async fn urls_are_checked_by_every_address_their_host_resolves_to() {
        let strict = AddressPolicy::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            strict.check_url(&url("http://93.184.216.34/")).await,
            Err(AddressRefused::PlainHttp)
        );
        assert_eq!(
            strict.check_url(&url("https://127.0.0.1/")).await,
            Err(AddressRefused::Loopback(ip("127.0.0.1")))
        );
        assert_eq!(
            strict.check_url(&url("https://[::1]:8443/")).await,
            Err(AddressRefused::Loopback(ip("::1")))
        );
        // A name that resolves to loopback is refused like the address itself.
        assert!(matches!(
            strict.check_url(&url("https://localhost/")).await,
            Err(AddressRefused::Loopback(_))
        ));
        assert_eq!(
            AddressPolicy::permissive()
                .check_url(&url("http://localhost:9/"))
                .await,
            Ok(())
        );
    }
}
