//! containerd's own events service, so the pods' names follow the runtime's
//! changes as they happen: a pod sandbox's task starting, exiting or going
//! tells `PodNames` its index is out of date. containerd's CRI answers
//! `GetContainerEvents` only from 1.7 on (Debian 12 has 1.6); its events
//! service (`containerd.services.events.v1.Events/Subscribe`) is there in
//! every release, on the same socket. Other runtimes (CRI-O, cri-dockerd)
//! have none of it: their pods are read again on demand instead.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// `containerd.services.events.v1.SubscribeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct SubscribeRequest {
    #[prost(string, repeated, tag = "1")]
    filters: Vec<String>,
}

/// `containerd.services.events.v1.Envelope`, without its timestamp and
/// payload (unread fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(string, tag = "2")]
    namespace: String,
    #[prost(string, tag = "3")]
    topic: String,
}

/// How long a subscription must stand unrefused to count as accepted.
const ACCEPTED: Duration = Duration::from_millis(300);

const SUBSCRIBE: &str = "/containerd.services.events.v1.Events/Subscribe";

/// CRI's pods live in containerd's `k8s.io` namespace; a sandbox is a task.
const FILTER: &str = r#"namespace==k8s.io,topic~="^/tasks/""#;

/// What the events thread tells the naming thread.
#[derive(Default)]
pub struct Changes {
    /// A pod changed since the index was read.
    pub dirty: AtomicBool,
    /// The subscription is up: an index not marked dirty is current.
    pub live: AtomicBool,
}

/// Follows containerd's task events at `socket` on a thread of its own for
/// as long as the process runs, resubscribing when the stream ends (a
/// restart). Returns what it tells; never fails (`live` stays false).
pub fn follow(socket: String) -> Arc<Changes> {
    let changes = Arc::new(Changes::default());
    let shared = changes.clone();
    let spawned = std::thread::Builder::new()
        .name("netdrop-ctd-events".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let mut said = None::<String>;
            let mut wait = Duration::from_millis(500);
            loop {
                let ended = rt.block_on(subscribe(&socket, &shared));
                shared.live.store(false, Ordering::Relaxed);
                // Whatever happened while no one listened.
                shared.dirty.store(true, Ordering::Relaxed);
                match ended {
                    Err(e) if e.code() == tonic::Code::Unimplemented => {
                        log::info!(
                            "{socket} has no containerd events: pods read again when a drop needs a name"
                        );
                        return;
                    }
                    Err(e) => {
                        let e = e.message().to_owned();
                        if said.as_deref() != Some(e.as_str()) {
                            log::debug!("containerd events at {socket}: {e}");
                            said = Some(e);
                        }
                    }
                    Ok(()) => wait = Duration::from_millis(500),
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot follow containerd's events: {e}");
    }
    changes
}

/// One subscription, until its stream ends.
async fn subscribe(socket: &str, changes: &Changes) -> Result<(), tonic::Status> {
    let channel = super::cri::channel(socket)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let call = grpc.server_streaming(
        tonic::Request::new(SubscribeRequest {
            filters: vec![FILTER.into()],
        }),
        tonic::codegen::http::uri::PathAndQuery::from_static(SUBSCRIBE),
        tonic_prost::ProstCodec::<SubscribeRequest, Envelope>::default(),
    );
    tokio::pin!(call);
    // containerd sends the stream's headers with its first event: a call
    // still pending after a moment was accepted (a refusal comes at once),
    // and the subscription stands from then on.
    let mut stream = tokio::select! {
        r = &mut call => r?.into_inner(),
        () = tokio::time::sleep(ACCEPTED) => {
            changes.live.store(true, Ordering::Relaxed);
            changes.dirty.store(true, Ordering::Relaxed);
            call.await?.into_inner()
        }
    };
    changes.live.store(true, Ordering::Relaxed);
    changes.dirty.store(true, Ordering::Relaxed);
    while let Some(e) = stream.message().await? {
        if e.namespace == "k8s.io" && e.topic.starts_with("/tasks/") {
            changes.dirty.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}
