//! Network addresses: CIDR parsing and the real client IP behind trusted proxies.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). IPv4-mapped IPv6
/// input (`::ffff:10.0.0.1`) is normalized to IPv4 so one rule covers both spellings.
pub fn parse_cidr(input: &str) -> Result<IpNet, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty address".into());
    }
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(normalize_net(net));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        let ip = normalize_ip(ip);
        return Ok(IpNet::from(ip));
    }
    Err(format!("{s:?} is not an IP address or CIDR range"))
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => {
            let addr: Ipv6Addr = v6.addr();
            match (addr.to_ipv4_mapped(), v6.prefix_len()) {
                (Some(v4), len) if len >= 96 => IpNet::new(IpAddr::V4(v4), len - 96).map(|n| n.trunc()).unwrap_or(net),
                _ => IpNet::V6(v6.trunc()),
            }
        }
        IpNet::V4(v4) => IpNet::V4(v4.trunc()),
    }
}

pub fn contains(list: &[IpNet], ip: IpAddr) -> bool {
    let ip = normalize_ip(ip);
    list.iter().any(|n| n.contains(&ip))
}

/// The client address of a request.
///
/// The socket peer is the client unless the peer is a configured trusted proxy. Then the
/// forwarding chain (`Forwarded`, or `X-Forwarded-For` when there is no `Forwarded`) is read
/// from the right, skipping trusted proxies; the first untrusted address is the client. A peer
/// that is not a trusted proxy can send whatever headers it likes: they are ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = normalize_ip(peer);
    if !contains(trusted, peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    let mut client = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) => {
                client = normalize_ip(*ip);
                if !contains(trusted, client) {
                    return client;
                }
            }
            // An unparseable hop is not trusted: stop at the last address we could verify.
            None => return client,
        }
    }
    client
}

fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()).collect();
    if !forwarded.is_empty() {
        let mut out = Vec::new();
        for value in forwarded {
            for element in value.split(',') {
                let for_value = element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .map(|(_, v)| v.trim().trim_matches('"').to_string());
                out.push(for_value.and_then(|v| parse_forwarded_node(&v)));
            }
        }
        return out;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| parse_forwarded_node(s.trim()))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_forwarded_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse().ok();
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && port.chars().all(|c| c.is_ascii_digit())
    {
        return host.parse().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }

    #[test]
    fn cidr_parsing_normalizes() {
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("::ffff:10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        assert!(parse_cidr("").is_err());
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert("forwarded", HeaderValue::from_static("for=2.2.2.2"));
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &nets(&["10.0.0.0/8"])), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxy_yields_rightmost_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        // The client forged the left-most entry; the proxy appended the real address.
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 198.51.100.7, 10.0.0.3"));
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("198.51.100.7"));

        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https"));
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("2001:db8::7"));

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("::ffff:198.51.100.8"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &h, &trusted), ip("198.51.100.8"));

        // Garbage in the chain stops the walk at the last verified hop.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, garbage"));
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.0.0.2"));

        // No header from a trusted proxy: the proxy itself is the client.
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
    }
}
