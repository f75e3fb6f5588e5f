//! Generates kube-proxy-shaped rulesets (iptables mode) of any size, for
//! benchmarks: `services` ClusterIP services with `endpoints` endpoints each,
//! the way kube-proxy's proxier writes them (KUBE-SERVICES → KUBE-SVC-* with
//! random-probability branches → KUBE-SEP-* DNAT), plus the node's fixed
//! chains. Roughly `services × (2 + 3 × endpoints)` rules.

use std::fmt::Write as _;

/// A stable chain-name hash like kube-proxy's (16 base32-ish characters).
fn chain_hash(kind: &str, i: usize, j: usize) -> String {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (j as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ kind.len() as u64;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..16)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            alphabet[(x >> 59) as usize] as char
        })
        .collect()
}

/// Service address `i` in 10.96.0.0/12 and endpoint `j` of it in 10.224.0.0/16.
pub fn service_ip(i: usize) -> std::net::Ipv4Addr {
    let n = 10 + i as u32;
    std::net::Ipv4Addr::new(10, 96 + ((n >> 16) & 0x0f) as u8, (n >> 8) as u8, n as u8)
}

fn endpoint_ip(i: usize, j: usize) -> std::net::Ipv4Addr {
    let n = (i * 7 + j * 131) as u32;
    std::net::Ipv4Addr::new(10, 224, ((n >> 8) % 255) as u8 + 1, (n % 250) as u8 + 2)
}

pub fn kube_proxy_ruleset(services: usize, endpoints: usize) -> String {
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n",
    );
    filter.push_str(
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
    );
    filter.push_str("-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    filter.push_str("-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    filter.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n");
    filter.push_str("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut nat_rules = String::new();
    nat_rules.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    nat_rules.push_str(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    nat_rules.push_str("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n");
    nat_rules.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    nat_rules.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    nat_rules.push_str("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n");
    nat_rules.push_str("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n");
    for i in 0..services {
        let ip = service_ip(i);
        let name = format!("ns{}/svc{i}:http", i % 50);
        // Every 100th service has no endpoints: kube-proxy rejects it in filter.
        if i % 100 == 99 {
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{name} has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"
            );
            continue;
        }
        let svc = format!("KUBE-SVC-{}", chain_hash("svc", i, 0));
        let _ = writeln!(nat, ":{svc} - [0:0]");
        let _ = writeln!(
            nat_rules,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j {svc}"
        );
        let _ = writeln!(
            nat_rules,
            "-A {svc} ! -s 10.224.0.0/16 -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"
        );
        for j in 0..endpoints {
            let sep = format!("KUBE-SEP-{}", chain_hash("sep", i, j));
            let ep = endpoint_ip(i, j);
            let _ = writeln!(nat, ":{sep} - [0:0]");
            let left = endpoints - j;
            if left > 1 {
                let _ = writeln!(
                    nat_rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}:8080\" -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(
                    nat_rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}:8080\" -j {sep}"
                );
            }
            let _ = writeln!(
                nat_rules,
                "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                nat_rules,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:8080"
            );
        }
    }
    nat_rules.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    nat.push_str(":KUBE-NODEPORTS - [0:0]\n");
    filter.push_str("COMMIT\n");
    nat.push_str(&nat_rules);
    nat.push_str("COMMIT\n");
    filter + &nat
}

/// A kube-proxy nftables-mode ruleset (`nft -f` script) of `services`
/// ClusterIP Services with `endpoints` endpoints each, in the shape its
/// nftables proxier writes (table `ip kube-proxy`: base chains, the
/// `service-ips` verdict map, one service chain choosing an endpoint chain
/// by `numgen`, one DNAT chain per endpoint). Roughly `services × (2 + 2 ×
/// endpoints)` rules.
pub fn kube_proxy_nft_ruleset(services: usize, endpoints: usize) -> String {
    let mut s = String::from(
        "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n\
         add set ip kube-proxy cluster-ips { type ipv4_addr ; comment \"Active ClusterIPs\" ; }\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }\n\
         add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; }\n\
         add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
         add chain ip kube-proxy services\n\
         add chain ip kube-proxy service-endpoints-check\n\
         add chain ip kube-proxy cluster-ips-check\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check\n\
         add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check\n\
         add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add rule ip kube-proxy nat-output jump services\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services\n",
    );
    for i in 0..services {
        let ip = service_ip(i);
        let svc = format!(
            "service-{}-ns{i}/svc{i}/tcp/p80",
            &chain_hash("SVC", i, 0)[..8]
        );
        let eps: Vec<(String, std::net::Ipv4Addr)> = (0..endpoints)
            .map(|j| {
                let ep = endpoint_ip(i, j);
                (
                    format!(
                        "endpoint-{}-ns{i}/svc{i}/tcp/p80__{ep}/80",
                        &chain_hash("SEP", i, j)[..8]
                    ),
                    ep,
                )
            })
            .collect();
        let _ = writeln!(s, "add chain ip kube-proxy {svc}");
        for (chain, _) in &eps {
            let _ = writeln!(s, "add chain ip kube-proxy {chain}");
        }
        let _ = writeln!(
            s,
            "add rule ip kube-proxy {svc} ip daddr {ip} ip saddr != 10.224.0.0/16 jump mark-for-masquerade"
        );
        let choices: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(j, (chain, _))| format!("{j} : goto {chain}"))
            .collect();
        let _ = writeln!(
            s,
            "add rule ip kube-proxy {svc} numgen random mod {} vmap {{ {} }}",
            eps.len().max(1),
            choices.join(" , ")
        );
        for (chain, ep) in &eps {
            let _ = writeln!(
                s,
                "add rule ip kube-proxy {chain} ip saddr {ep} jump mark-for-masquerade"
            );
            let _ = writeln!(
                s,
                "add rule ip kube-proxy {chain} meta l4proto tcp dnat to {ep}:80"
            );
        }
        let _ = writeln!(s, "add element ip kube-proxy cluster-ips {{ {ip} }}");
        let _ = writeln!(
            s,
            "add element ip kube-proxy service-ips {{ {ip} . tcp . 80 : goto {svc} }}"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hook, Packet, parse_ruleset, simulate};

    #[test]
    fn generated_ruleset_parses_and_routes_a_service() {
        let text = kube_proxy_ruleset(300, 3);
        let rs = parse_ruleset(&text).unwrap();
        let rules: usize = rs
            .tables
            .values()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum();
        assert!(rules > 300 * 10, "{rules}");
        let mut p = Packet::new(
            Hook::Prerouting,
            6,
            "10.224.1.2".parse().unwrap(),
            service_ip(42).into(),
        );
        p.dport = Some(80);
        let out = simulate(&rs, &p);
        assert_eq!(out.len(), 3, "one branch per endpoint");
        assert!(
            out.iter()
                .all(|o| o.dnat.as_deref().is_some_and(|d| d.ends_with(":8080")))
        );
    }
}
