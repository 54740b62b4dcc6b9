//! The client's address, as the login throttle counts it: the TCP peer, or, when the peer is a
//! proxy listed in `WXBIND_TRUSTED_PROXIES`, the address that proxy saw: the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Everything to the left of it
//! was written by the client and proves nothing, so it is never read.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

/// The header proxies append the address they saw to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client address of `req`. A request without a peer address (not over TCP) counts as
/// `0.0.0.0`: all such requests share one address rather than escaping the count.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    resolve(peer, req.headers(), trusted)
}

/// [`client_ip`] from its parts: walks `X-Forwarded-For` from the right while the hops are
/// trusted proxies. When every hop is trusted, the left-most is the client; an entry that is
/// not an address ends the walk at the trusted proxy that passed it on, since nothing to its
/// left can be believed.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut nearest = peer.to_canonical();
    if !is_trusted(nearest, trusted) {
        return nearest;
    }
    // Several headers are one list, in order (a proxy may add a header instead of extending
    // one); a header that is not text is one unreadable entry in its place.
    let hops: Vec<Option<&str>> = headers
        .get_all(FORWARDED_FOR)
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(Some).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop.and_then(parse_hop) else {
            return nearest;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// How an address is counted: IPv4 as itself, IPv6 by its /64, since one subscriber is
/// usually given a whole /64 and could otherwise rotate through it without limit.
pub fn throttle_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |net| net.trunc().to_string())
        }
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`) or in brackets, as some proxies write it.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .or_else(|_| raw.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static(FORWARDED_FOR),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        map
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = headers(&["203.0.113.9"]);
        assert_eq!(resolve(ip("198.51.100.1"), &h, &[]), ip("198.51.100.1"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_right_most_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "192.0.2.7/32"]);
        // The client wrote "1.1.1.1"; the outer proxy 192.0.2.7 saw 203.0.113.9.
        let h = headers(&["1.1.1.1, 203.0.113.9, 192.0.2.7"]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.9"));
        // The same chain split over several headers.
        let h = headers(&["1.1.1.1", "203.0.113.9", "192.0.2.7"]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.9"));
        // Ports, brackets and mapped IPv4 are read as the address they carry.
        let h = headers(&["[2001:db8::1]:443"]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &trusted), ip("2001:db8::1"));
        let h = headers(&["203.0.113.9:5000"]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.9"));
        let h = headers(&["[::ffff:203.0.113.9]"]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &trusted), ip("203.0.113.9"));
        // A mapped peer is matched as the IPv4 address it is.
        let h = headers(&["203.0.113.9"]);
        assert_eq!(
            resolve(ip("::ffff:10.1.2.3"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn without_an_untrusted_hop_the_nearest_believable_one_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &headers(&[]), &trusted),
            ip("10.0.0.1")
        );
        let h = headers(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.3"));
        // Garbage ends the walk at the proxy that passed it on.
        let h = headers(&["203.0.113.9, unknown, 10.0.0.2"]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.2"));
        let mut h = headers(&["203.0.113.9"]);
        h.append(
            HeaderName::from_static(FORWARDED_FOR),
            HeaderValue::from_bytes(b"\xff").expect("obs-text is a valid header value"),
        );
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        let h = headers(&[""]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_is_counted_by_its_64_and_ipv4_as_itself() {
        assert_eq!(throttle_key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(throttle_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
        assert_eq!(
            throttle_key(ip("2001:db8:1:2:3:4:5:6")),
            throttle_key(ip("2001:db8:1:2::ffff"))
        );
        assert_eq!(throttle_key(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(
            throttle_key(ip("2001:db8:1:2::1")),
            throttle_key(ip("2001:db8:1:3::1"))
        );
    }
}
