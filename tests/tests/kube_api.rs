//! `--kubernetes`: the cluster's names through the Kubernetes API, from a
//! stand-in server (no API server runs here: see `netdrop_tests::kube_api`
//! for what is real and what is not). The client is netdrop's own.

use std::time::{Duration, Instant};

use netdrop::attribute::names::api::ClusterNames;
use netdrop_tests::kube_api::{Failures, StandIn, is_watch, resource_version};

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pods_and_services_named_from_the_api_and_followed() {
    let api = StandIn::start().unwrap();
    let client = ClusterNames::client(Some(api.kubeconfig()))
        .await
        .unwrap()
        .expect("a client from the kubeconfig");
    let names = ClusterNames::start(client);
    wait_until("both lists", || names.synced()).await;

    // From the lists: a Deployment's pod; no host-network pod (its address
    // is the node's) and no finished Job's pod (its address is free).
    let web = names.pod("10.224.2.5".parse().unwrap()).unwrap();
    assert_eq!(
        (
            web.namespace.as_str(),
            web.name.as_str(),
            web.workload.as_deref()
        ),
        ("shop", "web-7d4b9c8f6d-x2x7q", Some("deployment/web"))
    );
    assert_eq!(names.pod("192.0.2.2".parse().unwrap()), None);
    assert_eq!(names.pod("10.224.2.9".parse().unwrap()), None);
    assert_eq!(names.pods_len(), 1);
    let svc = names.service("10.96.0.10".parse().unwrap()).unwrap();
    assert_eq!((svc.namespace.as_str(), svc.name.as_str()), ("shop", "web"));

    // The watch: the pod deleted, a StatefulSet's pod given its address.
    api.release();
    wait_until("api-0 named at the reused address", || {
        names
            .pod("10.224.2.5".parse().unwrap())
            .is_some_and(|p| p.name == "api-0")
    })
    .await;
    let api0 = names.pod("10.224.2.5".parse().unwrap()).unwrap();
    assert_eq!(api0.workload.as_deref(), Some("statefulset/api"));
    assert_eq!(names.pods_len(), 1);

    // The stream ended: the watch resumed from the last version it saw,
    // without listing again.
    wait_until("a watch resumed from 1003", || {
        api.requests("/api/v1/pods")
            .iter()
            .any(|q| is_watch(q) && resource_version(q) == Some("1003"))
    })
    .await;
    let pods_requests = api.requests("/api/v1/pods");
    let lists = pods_requests.iter().filter(|q| !is_watch(q)).count();
    assert_eq!(lists, 1, "{pods_requests:#?}");
}

/// An unreadable kubeconfig is the operator's error, said as such.
#[tokio::test]
async fn a_kubeconfig_that_is_not_there_is_said() {
    let e = ClusterNames::client(Some("/nonexistent/kubeconfig"))
        .await
        .err()
        .expect("an error");
    assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
}

/// The API fails as API servers do, and the names recover without a
/// restart: lists answered 500 are retried (with backoff) until one
/// succeeds; a resumed watch answered `410 Gone` is followed by a new list,
/// whose later state is then named (a pod only that list has).
#[tokio::test]
async fn the_api_failing_is_retried_and_410_gone_relists() {
    let api = StandIn::start_failing(Failures {
        list_errors: 2,
        gone: true,
    })
    .unwrap();
    let client = ClusterNames::client(Some(api.kubeconfig()))
        .await
        .unwrap()
        .expect("a client from the kubeconfig");
    let names = ClusterNames::start(client);
    wait_until("both lists, after two failed", || names.synced()).await;
    let lists = |api: &StandIn| {
        api.requests("/api/v1/pods")
            .iter()
            .filter(|q| !is_watch(q))
            .count()
    };
    assert_eq!(
        lists(&api),
        3,
        "two failed lists, then one: {:#?}",
        api.requests("/api/v1/pods")
    );
    assert!(names.pod("10.224.2.5".parse().unwrap()).is_some());

    api.release();
    // The watch resumed from 1003 is told 410 Gone: listed again, and the
    // later state (db-… at 10.224.2.7, in no event) is named.
    wait_until("the pod only the new list has", || {
        names
            .pod("10.224.2.7".parse().unwrap())
            .is_some_and(|p| p.name == "db-6b8f9c7d5-k4m2p")
    })
    .await;
    assert!(
        api.requests("/api/v1/pods")
            .iter()
            .any(|q| is_watch(q) && resource_version(q) == Some("1003")),
        "the watch resumed from 1003 first"
    );
    assert_eq!(lists(&api), 4, "{:#?}", api.requests("/api/v1/pods"));
    let db = names.pod("10.224.2.7".parse().unwrap()).unwrap();
    assert_eq!(db.workload.as_deref(), Some("deployment/db"));
    assert_eq!(
        names.pod("10.224.2.5".parse().unwrap()).map(|p| p.name),
        Some("api-0".into())
    );
}
