//! Edge checks done before any parsing: who is calling (client address behind trusted
//! proxies) and whether that address may call this provider's endpoint.

use std::net::IpAddr;

use ipnet::IpNet;
use payhook_shared::config::Allowlist;
use payhook_shared::event::Provider;

/// Source-address policy.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    trusted_proxies: Vec<IpNet>,
    allowlist: Allowlist,
}

impl Edge {
    pub fn new(trusted_proxies: Vec<IpNet>, allowlist: Allowlist) -> Self {
        Self {
            trusted_proxies,
            allowlist,
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the TCP peer, unless the peer is a trusted proxy, in which
    /// case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    /// (Left-most entries are whatever the client chose to send: never trusted.)
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted(peer) {
            return Some(peer);
        }
        let Some(header) = forwarded_for else {
            return Some(peer);
        };
        let mut last = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusted(ip) => last = ip,
                Ok(ip) => return Some(ip),
                // A malformed hop: stop believing the header beyond what we verified.
                Err(_) => return Some(last),
            }
        }
        Some(last)
    }

    /// Whether `client` may call `provider`'s endpoint (empty allowlist: anyone).
    pub fn allowed(&self, provider: Provider, client: Option<IpAddr>) -> bool {
        let list = match provider {
            Provider::Alipay => &self.allowlist.alipay,
            Provider::WechatV2 => &self.allowlist.wechat_v2,
            Provider::WechatV3 => &self.allowlist.wechat_v3,
        };
        if list.is_empty() {
            return true;
        }
        client.is_some_and(|ip| list.iter().any(|net| net.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let edge = Edge::new(vec![net("10.0.0.0/8")], Allowlist::default());
        assert_eq!(
            edge.client_ip(Some(ip("1.2.3.4")), Some("9.9.9.9")),
            Some(ip("1.2.3.4"))
        );
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let edge = Edge::new(vec![net("10.0.0.0/8")], Allowlist::default());
        let got = edge.client_ip(Some(ip("10.0.0.1")), Some("6.6.6.6, 5.5.5.5, 10.0.0.2"));
        assert_eq!(got, Some(ip("5.5.5.5")));
        assert_eq!(
            edge.client_ip(Some(ip("10.0.0.1")), None),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            edge.client_ip(Some(ip("10.0.0.1")), Some("junk")),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn allowlist_applies_per_provider() {
        let allow = Allowlist {
            alipay: vec![net("110.75.0.0/16")],
            ..Allowlist::default()
        };
        let edge = Edge::new(vec![], allow);
        assert!(edge.allowed(Provider::Alipay, Some(ip("110.75.1.2"))));
        assert!(!edge.allowed(Provider::Alipay, Some(ip("1.1.1.1"))));
        assert!(!edge.allowed(Provider::Alipay, None));
        assert!(edge.allowed(Provider::WechatV3, Some(ip("1.1.1.1"))));
    }
}
