//! `--kubernetes`: the cluster's names through the Kubernetes API.
//!
//! What is real and what is not: no API server can run on this machine, so
//! a local HTTP server stands in for it. The client is the real one (the
//! `kube` crate's, as `watch` builds it from a kubeconfig), over real HTTP,
//! speaking the API's list-then-watch protocol: a paged list, then a
//! streamed watch from the list's resource version, resumed from the last
//! version seen when the stream ends. The responses under
//! `tests/fixtures/kube-api/` are written by hand in the API's v1 wire
//! format (list items without `kind`, watch events with it, as an API
//! server sends them); they are not a recording of a cluster.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{RawQuery, State},
    routing::get,
};
use netdrop::attribute::api::ClusterNames;
use tokio::sync::Notify;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube-api");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// What the stand-in API server saw, and the event that releases the pods'
/// first watch.
#[derive(Default)]
struct Api {
    /// (path, query) of every request.
    requests: Mutex<Vec<(&'static str, String)>>,
    release: Notify,
}

impl Api {
    /// The queries of the requests for `path`.
    fn requests(&self, path: &str) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == path)
            .map(|r| r.1.clone())
            .collect()
    }
}

fn is_watch(query: &str) -> bool {
    query.split('&').any(|kv| kv == "watch=true")
}

fn resource_version(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
}

/// A watch stream that never sends (the client hangs up on it).
fn idle_watch() -> Body {
    Body::from_stream(futures::stream::pending::<Result<String, std::io::Error>>())
}

async fn pods(State(api): State<Arc<Api>>, RawQuery(q): RawQuery) -> Body {
    let q = q.unwrap_or_default();
    api.requests
        .lock()
        .unwrap()
        .push(("/api/v1/pods", q.clone()));
    if !is_watch(&q) {
        return Body::from(fixture("pods-list.json"));
    }
    if resource_version(&q) != Some("1000") {
        return idle_watch();
    }
    // The first watch: its events when the test says, then the stream
    // ends (as an API server's does at its timeout).
    let api = api.clone();
    let events = async move {
        api.release.notified().await;
        Ok::<_, std::io::Error>(fixture("pods-watch-from-1000.jsonl"))
    };
    Body::from_stream(futures::stream::once(events))
}

async fn services(State(api): State<Arc<Api>>, RawQuery(q): RawQuery) -> Body {
    let q = q.unwrap_or_default();
    api.requests
        .lock()
        .unwrap()
        .push(("/api/v1/services", q.clone()));
    if is_watch(&q) {
        idle_watch()
    } else {
        Body::from(fixture("services-list.json"))
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_services_named_from_the_api_and_followed() {
    let api = Arc::new(Api::default());
    let app = Router::new()
        .route("/api/v1/pods", get(pods))
        .route("/api/v1/services", get(services))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile_dir();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: netdrop\ncurrent-context: lab\nusers:\n- name: netdrop\n  user: {{}}\n"
        ),
    )
    .unwrap();

    let client = ClusterNames::client(Some(kubeconfig.to_str().unwrap()))
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
    api.release.notify_one();
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
    let _ = std::fs::remove_dir_all(dir);
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

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netdrop-kube-api-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
