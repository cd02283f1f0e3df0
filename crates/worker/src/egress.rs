//! Where issuer JWKS fetches may connect. A StatusList's `jwksUri` is written by whoever
//! may create StatusLists in a namespace, and every worker fetches it: without a guard,
//! that is a way to make the service GET the Kubernetes API, a cloud metadata endpoint or
//! anything on the private network, and to learn from the timing whether it answered.
//!
//! So addresses are checked after DNS resolution (the addresses connected to are the
//! ones checked: a name that resolves to a private address, or rebinds to one, is
//! refused), and IP literals in the URI before any connection: loopback, private,
//! link-local (cloud metadata lives there), unique-local, carrier-grade NAT, multicast,
//! documentation, benchmarking and reserved ranges are refused unless the operator
//! allows a range (`--jwks-allow-cidr`). IPv4 addresses embedded in IPv6 (mapped,
//! NAT64, 6to4) are judged as the IPv4 address they reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use futures_util::future::BoxFuture;
use ipnet::IpNet;

/// Ranges no JWKS fetch connects to unless allowed.
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",       // "this network", unspecified
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // carrier-grade NAT (also some clouds' metadata)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local: cloud metadata endpoints
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation
    "203.0.113.0/24",  // documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, broadcast
    "::/128",          // unspecified
    "::1/128",         // loopback
    "64:ff9b:1::/48",  // local-use NAT64
    "100::/64",        // discard
    "2001::/23",       // IETF protocol assignments (Teredo, ORCHID, ...)
    "2001:db8::/32",   // documentation
    "fc00::/7",        // unique-local (some clouds' IPv6 metadata)
    "fe80::/10",       // link-local
    "fec0::/10",       // site-local (deprecated)
    "ff00::/8",        // multicast
];

static REFUSED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    NOT_PUBLIC
        .iter()
        // Constants, each parsed by the test below.
        .filter_map(|c| c.parse().ok())
        .collect()
});

/// The IPv4 address an IPv6 address reaches, when it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`), 6to4
/// (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if ip != Ipv6Addr::UNSPECIFIED && ip != Ipv6Addr::LOCALHOST => {
            Some(v4(hi, lo))
        }
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_v4(v6)
    {
        return is_public(IpAddr::V4(v4));
    }
    !REFUSED.iter().any(|net| net.contains(&ip))
}

/// Parses a `--jwks-allow-cidr` value: a CIDR range, or one address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR range (e.g. 10.1.0.0/16) or an address"))
}

/// Loopback, IPv4 and IPv6: what `statuslist dev` and tests allow for issuers on this
/// machine.
pub fn loopback() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Looks a host name up: the system resolver, or a test's.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    })
}

/// The egress policy of JWKS fetches.
#[derive(Clone)]
pub struct Egress {
    allow: Arc<Vec<IpNet>>,
    lookup: Lookup,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

/// A fetch the policy refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to addresses JWKS fetches may not reach ({addrs}); allow a range with --jwks-allow-cidr"
)]
pub struct Refused {
    pub host: String,
    pub addrs: String,
}

impl Egress {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
            lookup: system_lookup(),
        }
    }

    /// The same policy over another resolver (tests: names that resolve to any address).
    pub fn with_lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Checks an IP literal host before any connection (names are checked on resolution).
    pub fn check_literal(&self, host: &url::Host<&str>) -> Result<(), Refused> {
        let ip = match host {
            url::Host::Ipv4(ip) => IpAddr::V4(*ip),
            url::Host::Ipv6(ip) => IpAddr::V6(*ip),
            url::Host::Domain(_) => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused {
                host: host.to_string(),
                addrs: ip.to_string(),
            })
        }
    }
}

impl reqwest::dns::Resolve for Egress {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = (this.lookup)(host.clone()).await?;
            let (permitted, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                found.into_iter().partition(|ip| this.permits(*ip));
            if permitted.is_empty() {
                let addrs = refused
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(Refused { host, addrs }) as Box<_>);
            }
            let addrs: reqwest::dns::Addrs =
                Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn every_constant_range_parses() {
        assert_eq!(REFUSED.len(), NOT_PUBLIC.len());
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(a)), "{a} counted as public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "151.101.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(a)), "{a} counted as internal");
        }
    }

    #[test]
    fn an_allowed_range_permits_only_itself() {
        let egress = Egress::new(vec![parse_cidr("10.1.0.0/16").expect("cidr")]);
        assert!(egress.permits(ip("10.1.2.3")));
        assert!(!egress.permits(ip("10.2.0.1")));
        assert!(!egress.permits(ip("127.0.0.1")));
        let lo = Egress::new(loopback());
        assert!(lo.permits(ip("127.0.0.1")) && lo.permits(ip("127.1.2.3")));
        assert!(lo.permits(ip("::1")));
        assert!(!lo.permits(ip("10.0.0.1")));
    }

    #[test]
    fn allow_values_are_ranges_or_addresses() {
        assert_eq!(
            parse_cidr("127.0.0.1").expect("address").to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_cidr(" ::1/128 ").expect("cidr").to_string(),
            "::1/128"
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("localhost").is_err());
    }
}
