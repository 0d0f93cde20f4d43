//! Where a git source may send the controller. A tenant writes the URL, and the controller
//! connects from inside the platform's network, so a URL is a probe: cloud metadata
//! (169.254.169.254), the API server, other tenants' VMs on a private network. A host is
//! looked up once here; git then connects to the address that was checked (curl's resolve
//! list for http(s), the address itself for git://), so a name that answers differently the
//! second time (DNS rebinding) reaches nothing new. Addresses that are not public are refused
//! unless an administrator allows their network (`--git-allowed-networks`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use anyhow::{Context as _, bail};
use ipnet::IpNet;

/// The networks an administrator allows besides public addresses (`10.0.0.0/8,127.0.0.1/32`).
#[derive(Debug, Clone, Default)]
pub struct AllowedNetworks(Vec<IpNet>);

impl FromStr for AllowedNetworks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let nets = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|e| format!("{n:?} is not a network (like 10.0.0.0/8): {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(nets))
    }
}

impl AllowedNetworks {
    fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is in the IPv4 networks allowed.
        let v4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v4| net.contains(&v4)))
    }
}

/// A URL whose host was checked, as git is to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The URL to give git (a git:// URL names the checked address itself).
    pub url: String,
    /// `host:port:address` for curl, so http(s) connects to the checked address while TLS
    /// still checks the host's name.
    pub resolve: Option<String>,
}

/// What kind of non-public address `ip` is, if it is one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(v6),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_link_local() {
        "link-local (cloud metadata)"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        "multicast or reserved"
    } else if a == 198 && (18..20).contains(&b) {
        "benchmarking"
    } else {
        return None;
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let first = segments[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if ip.is_multicast() {
        "multicast"
    } else if first == 0x64 && segments[1] == 0xff9b {
        // 64:ff9b::/96 and 64:ff9b:1::/48 reach IPv4 addresses through a NAT64 gateway.
        "NAT64 (an IPv4 address behind it)"
    } else if first == 0x2002 {
        "6to4 (an IPv4 address inside it)"
    } else if segments[..6].iter().all(|s| *s == 0) {
        "IPv4-compatible"
    } else {
        return None;
    })
}

/// Looks `url`'s host up and checks every address it has; the URL as git is to use it.
pub async fn check(url: &str, allowed: &AllowedNetworks) -> anyhow::Result<Checked> {
    let parsed = url::Url::parse(url).with_context(|| format!("git url {url} does not parse"))?;
    let host = parsed
        .host()
        .with_context(|| format!("git url {url} names no host"))?;
    let port = parsed
        .port_or_known_default()
        .or((parsed.scheme() == "git").then_some(9418))
        .with_context(|| format!("git url {url} names no port"))?;
    // An address written in the URL (`git://` hosts are opaque to the URL parser: one that
    // reads as an address is one).
    let literal: Option<IpAddr> = match host {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(name) => name.trim_matches(['[', ']']).parse().ok(),
    };
    let addresses: Vec<IpAddr> = match (literal, &host) {
        (Some(ip), _) => vec![ip],
        // A name that does not resolve is refused in the same words as one that resolves to
        // an internal address: which internal names exist is not told either.
        (None, url::Host::Domain(name)) => match tokio::net::lookup_host((*name, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(_) => vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        },
        (None, _) => unreachable!("an address host is a literal"),
    };
    // Every address is checked, not only the first: git and curl may try the others.
    for &ip in &addresses {
        if let Some(kind) = internal_kind(ip)
            && !allowed.allows(ip)
        {
            // A name's addresses are not told: what an internal name resolves to (another
            // tenant's service, say) is not the tenant's to learn.
            let what = match literal {
                None => "a name without an address, or with one that is not public".to_string(),
                Some(_) => format!("a {kind} address"),
            };
            bail!(
                "git url {url} refused: {host} is {what}; the controller fetches from such addresses only when an administrator allows their network (--git-allowed-networks)"
            );
        }
    }
    let &ip = addresses
        .first()
        .with_context(|| format!("git url {url}: {host} has no address"))?;
    let pinned_address = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if parsed.scheme() == "git" {
        let mut pinned = parsed.clone();
        pinned
            .set_host(Some(&pinned_address))
            .map_err(|e| anyhow::anyhow!("git url {url}: {e}"))?;
        return Ok(Checked {
            url: pinned.to_string(),
            resolve: None,
        });
    }
    Ok(Checked {
        url: url.to_string(),
        resolve: literal
            .is_none()
            .then(|| format!("{host}:{port}:{pinned_address}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_are_not_public_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("10.1.2.3", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.100.100.200", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "private (unique local)"),
            ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
            ("64:ff9b::a00:5", "NAT64 (an IPv4 address behind it)"),
            ("2002:a00:5::1", "6to4 (an IPv4 address inside it)"),
            ("::a00:5", "IPv4-compatible"),
        ] {
            assert_eq!(internal_kind(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for public in ["93.184.216.34", "140.82.121.3", "2606:4700::1111"] {
            assert_eq!(internal_kind(public.parse().unwrap()), None, "{public}");
        }
    }

    #[tokio::test]
    async fn internal_destinations_are_refused_unless_their_network_is_allowed() {
        let none = AllowedNetworks::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "git://127.0.0.1:9418/app.git",
            "https://[::1]/app.git",
            "http://localhost:8080/app.git",
            "git://10.0.0.5/app.git",
        ] {
            let refused = check(url, &none).await.unwrap_err().to_string();
            assert!(refused.contains("refused"), "{url}: {refused}");
            assert!(refused.contains("--git-allowed-networks"), "{refused}");
        }
        let loopback: AllowedNetworks = "127.0.0.1/32, ::1/128".parse().unwrap();
        let ok = check("git://127.0.0.1:9418/app.git", &loopback)
            .await
            .unwrap();
        assert_eq!(ok.url, "git://127.0.0.1:9418/app.git");
        assert!(
            check("git://127.0.0.2:9418/app.git", &loopback)
                .await
                .is_err()
        );
        assert!(
            check("http://169.254.169.254/", &loopback).await.is_err(),
            "allowing loopback allows nothing else"
        );
        assert!("10.0.0.0/33".parse::<AllowedNetworks>().is_err());
        let mapped = check("http://[::ffff:127.0.0.1]/app.git", &loopback).await;
        assert!(
            mapped.is_ok(),
            "an allowed IPv4 network allows its IPv6 form"
        );
        let named = check("http://localhost:8080/app.git", &AllowedNetworks::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !named.contains("127.0.0.1"),
            "a name's address is not told: {named}"
        );
    }

    #[tokio::test]
    async fn git_connects_to_the_address_that_was_checked() {
        let loopback: AllowedNetworks = "127.0.0.0/8,::1/128".parse().unwrap();
        let git = check("git://localhost:9418/app.git", &loopback)
            .await
            .unwrap();
        assert!(
            git.url == "git://127.0.0.1:9418/app.git" || git.url == "git://[::1]:9418/app.git",
            "{git:?}"
        );
        let http = check("http://localhost:8080/app.git", &loopback)
            .await
            .unwrap();
        assert_eq!(http.url, "http://localhost:8080/app.git");
        let resolve = http.resolve.unwrap();
        assert!(
            resolve == "localhost:8080:127.0.0.1" || resolve == "localhost:8080:[::1]",
            "{resolve}"
        );
        let literal = check("https://127.0.0.1/app.git", &loopback).await.unwrap();
        assert_eq!(literal.resolve, None, "an address needs no resolving");
    }
}
