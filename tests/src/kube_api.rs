//! A stand-in for the Kubernetes API server, which cannot run on this
//! machine: a local HTTP server answering the list-then-watch protocol
//! for pods and Services from `tests/fixtures/kube-api/`. Those responses
//! are written by hand in the API's v1 wire format (list items without
//! `kind`, watch events with it, as an API server sends them); they are
//! not a recording of a cluster. The client that talks to it is the real
//! one netdrop uses.
//!
//! Pods: the list (resource version 1000), then one watch from 1000 whose
//! events come when [`StandIn::release`] is called, after which that
//! stream ends; later watches stay open and silent. Services: the list,
//! then silent watches.
//!
//! [`Failures`] makes it fail as API servers do: lists answered 500 a
//! number of times first, and the watch resumed after the released events
//! (from 1003) answered `410 Gone` ("too old resource version"), after
//! which a list is answered with a later state (resource version 1100:
//! `pods-list-after-gone.json`, a pod the first list did not have).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::{RawQuery, State},
    routing::get,
};
use tokio::sync::Notify;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kube-api");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_default()
}

#[derive(Default)]
struct Seen {
    /// (path, query) of every request.
    requests: Mutex<Vec<(&'static str, String)>>,
    release: Notify,
    failures: Mutex<Failures>,
    /// The 410 was sent: lists answer the later state.
    gone_sent: std::sync::atomic::AtomicBool,
}

/// How the stand-in fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failures {
    /// Pod lists answered `500` before one succeeds.
    pub list_errors: u32,
    /// The watch resumed from 1003 answered `410 Gone`.
    pub gone: bool,
}

/// The running stand-in, with a kubeconfig that points at it. Stopped
/// (and its kubeconfig removed) when dropped.
pub struct StandIn {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn is_watch(query: &str) -> bool {
    query.split('&').any(|kv| kv == "watch=true")
}

pub fn resource_version(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
}

/// A watch stream that never sends (the client hangs up on it).
fn idle_watch() -> Body {
    Body::from_stream(futures::stream::pending::<Result<String, std::io::Error>>())
}

async fn pods(State(seen): State<Arc<Seen>>, RawQuery(q): RawQuery) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use std::sync::atomic::Ordering;
    let q = q.unwrap_or_default();
    seen.requests
        .lock()
        .unwrap()
        .push(("/api/v1/pods", q.clone()));
    let failures = *seen.failures.lock().unwrap();
    if !is_watch(&q) {
        if failures.list_errors > 0 {
            seen.failures.lock().unwrap().list_errors -= 1;
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"etcdserver: request timed out","reason":"InternalError","code":500}"#,
            )
                .into_response();
        }
        let list = if seen.gone_sent.load(Ordering::SeqCst) {
            "pods-list-after-gone.json"
        } else {
            "pods-list.json"
        };
        return Body::from(fixture(list)).into_response();
    }
    if failures.gone && resource_version(&q) == Some("1003") {
        seen.gone_sent.store(true, Ordering::SeqCst);
        return Body::from(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1003 (1100)","reason":"Expired","code":410}}
"#,
        )
        .into_response();
    }
    if resource_version(&q) != Some("1000") {
        return idle_watch().into_response();
    }
    let seen = seen.clone();
    let events = async move {
        seen.release.notified().await;
        Ok::<_, std::io::Error>(fixture("pods-watch-from-1000.jsonl"))
    };
    Body::from_stream(futures::stream::once(events)).into_response()
}

async fn services(State(seen): State<Arc<Seen>>, RawQuery(q): RawQuery) -> Body {
    let q = q.unwrap_or_default();
    seen.requests
        .lock()
        .unwrap()
        .push(("/api/v1/services", q.clone()));
    if is_watch(&q) {
        idle_watch()
    } else {
        Body::from(fixture("services-list.json"))
    }
}

impl StandIn {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_failing(Failures::default())
    }

    /// A stand-in that fails as `failures` says.
    pub fn start_failing(failures: Failures) -> anyhow::Result<Self> {
        let seen = Arc::new(Seen {
            failures: Mutex::new(failures),
            ..Seen::default()
        });
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .route("/api/v1/services", get(services))
            .with_state(seen.clone());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "netdrop-kubeconfig-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: netdrop\ncurrent-context: lab\nusers:\n- name: netdrop\n  user: {{}}\n"
            ),
        )?;
        Ok(Self {
            addr,
            kubeconfig,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Sends the pods' watch events (the pod at 10.224.2.5 deleted, a new
    /// one given its address).
    pub fn release(&self) {
        self.seen.release.notify_one();
    }

    /// The queries of the requests for `path`.
    pub fn requests(&self, path: &str) -> Vec<String> {
        self.seen
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == path)
            .map(|r| r.1.clone())
            .collect()
    }

    pub fn kubeconfig(&self) -> &str {
        self.kubeconfig.to_str().unwrap_or_default()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // Open watches keep a graceful shutdown waiting: the thread is
        // left to end with the process if it does not end at once.
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        drop(self.thread.take());
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
