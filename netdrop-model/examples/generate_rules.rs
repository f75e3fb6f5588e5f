//! Writes a kube-proxy-shaped iptables-save dump (what the benchmarks use):
//! `cargo run --release -p netdrop-model --features lab --example generate_rules -- SERVICES [ENDPOINTS] > node.rules`

fn main() {
    let mut args = std::env::args().skip(1);
    let services = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let endpoints = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    print!(
        "{}",
        netdrop_model::generate::kube_proxy_ruleset(services, endpoints)
    );
}
