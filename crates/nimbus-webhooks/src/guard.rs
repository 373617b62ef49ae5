//! The SSRF guard: webhooks are URLs chosen by users, and the server must not
//! become their way into the network it runs in. Loopback, private,
//! link-local and other non-public addresses are refused unless the owner's
//! allowlist (`NIMBUS_WEBHOOK_ALLOW`) names them.
//!
//! Every address is checked where the connection is made: host names by
//! [`GuardedResolver`] (reqwest connects only to the addresses it returns,
//! so a name that resolves differently the second time gains nothing), and
//! IP literals, which reqwest never resolves, by [`AddressPolicy::check_url`]
//! before the request and again for every redirect.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use url::Host;

/// Why a URL is not a webhook target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the URL is not valid: {0}")]
    Invalid(String),
    #[error("only http and https URLs are allowed, not {0}")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "{address} is a {class} address; webhooks may not reach it unless NIMBUS_WEBHOOK_ALLOW permits it"
    )]
    Address {
        address: IpAddr,
        class: &'static str,
    },
    #[error("{host} did not resolve to any address")]
    Unresolved { host: String },
}

/// The kind of non-public address `ip` is, or `None` for a public one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            // ::ffff:a.b.c.d and the deprecated ::a.b.c.d reach IPv4 hosts.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            non_public_v6(v6)
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol")
    } else if a == 198 && (18..20).contains(&b) {
        Some("benchmarking")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("documentation")
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64 embeds an IPv4 address in the last 32 bits.
        let [.., c, d] = ip.segments();
        let v4 = Ipv4Addr::new((c >> 8) as u8, c as u8, (d >> 8) as u8, d as u8);
        non_public_v4(v4)
    } else if ip.segments()[..6] == [0; 6] {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        let [.., c, d] = ip.segments();
        let v4 = Ipv4Addr::new((c >> 8) as u8, c as u8, (d >> 8) as u8, d as u8);
        non_public_v4(v4).or(Some("IPv4-compatible"))
    } else {
        None
    }
}

/// Which addresses webhooks may reach: public ones, and the allowlist.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

/// A malformed allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or network (such as 10.0.0.0/8 or ::1)")]
pub struct BadAllowlist(pub String);

impl AddressPolicy {
    /// Only public addresses.
    pub fn public_only() -> AddressPolicy {
        AddressPolicy::default()
    }

    /// Public addresses and the comma-separated networks or addresses in
    /// `list` (`127.0.0.1, 10.0.0.0/8, fd00::/8`).
    pub fn with_allowlist(list: &str) -> Result<AddressPolicy, BadAllowlist> {
        let mut allow = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| BadAllowlist(entry.to_owned()))?,
            };
            allow.push(net);
        }
        Ok(AddressPolicy { allow })
    }

    pub fn allowlist(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a connection to `ip` is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        match non_public(ip) {
            None => Ok(()),
            Some(_) if self.allow.iter().any(|net| net.contains(&ip)) => Ok(()),
            Some(class) => Err(Refused::Address { address: ip, class }),
        }
    }

    /// Whether `url` may be a webhook target as far as can be told without
    /// resolving it: http or https, a host, and an allowed address if the
    /// host is an IP literal (host names are checked when they resolve).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        match url.host() {
            None => Err(Refused::NoHost),
            Some(Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => Ok(()),
        }
    }

    /// Parse and check a webhook URL (for the API and the command line).
    pub fn parse_url(&self, text: &str) -> Result<reqwest::Url, Refused> {
        let url =
            reqwest::Url::parse(text.trim()).map_err(|err| Refused::Invalid(err.to_string()))?;
        self.check_url(&url)?;
        Ok(url)
    }
}

/// A resolver that returns only the addresses the policy allows: reqwest
/// connects to nothing else, for the first request and every redirect.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let mut allowed = Vec::new();
            for address in found {
                match policy.check(address.ip()) {
                    Ok(()) => allowed.push(address),
                    Err(err) => refusal = Some(err),
                }
            }
            if allowed.is_empty() {
                let err = refusal.unwrap_or(Refused::Unresolved { host });
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn non_public_addresses_are_classified() {
        for (address, class) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast or reserved"),
            ("255.255.255.255", "multicast or reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
        ] {
            assert_eq!(non_public(ip(address)), Some(class), "{address}");
        }
        for public in [
            "1.1.1.1",
            "140.82.112.3",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::1.1.1.1",
        ] {
            assert_eq!(non_public(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn the_allowlist_opens_only_what_it_names() {
        let policy =
            AddressPolicy::with_allowlist(" 127.0.0.1, 10.0.0.0/8 ,fd00::/8").expect("valid");
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("10.200.0.1")).is_ok());
        assert!(policy.check(ip("fd12::1")).is_ok());
        assert!(policy.check(ip("8.8.8.8")).is_ok());
        assert_eq!(
            policy.check(ip("127.0.0.2")),
            Err(Refused::Address {
                address: ip("127.0.0.2"),
                class: "loopback"
            })
        );
        assert!(policy.check(ip("192.168.0.1")).is_err());
        assert_eq!(
            AddressPolicy::with_allowlist("127.0.0.1,localhost").map(|_| ()),
            Err(BadAllowlist("localhost".into()))
        );
    }

    #[test]
    fn urls_are_checked_for_scheme_host_and_ip_literals() {
        let policy = AddressPolicy::public_only();
        assert!(policy.parse_url("https://hooks.example.com/x").is_ok());
        assert!(matches!(
            policy.parse_url("ftp://example.com/"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            policy.parse_url("file:///etc/passwd"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            policy.parse_url("not a url"),
            Err(Refused::Invalid(_))
        ));
        for literal in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            assert!(
                matches!(policy.parse_url(literal), Err(Refused::Address { .. })),
                "{literal}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_loopback_addresses() {
        let resolver = GuardedResolver::new(Arc::new(AddressPolicy::public_only()));
        let name: Name = "localhost".parse().expect("a name");
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("loopback"), "{err}");

        let open = GuardedResolver::new(Arc::new(
            AddressPolicy::with_allowlist("127.0.0.0/8,::1").expect("valid"),
        ));
        let name: Name = "localhost".parse().expect("a name");
        let found: Vec<_> = open.resolve(name).await.expect("allowed").collect();
        assert!(!found.is_empty());
    }
}
