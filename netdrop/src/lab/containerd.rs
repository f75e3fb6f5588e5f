//! Real pods for the lab: Debian's containerd with its CRI plugin, run in a
//! node namespace with its own root, state and socket, and Debian's CNI
//! plugins (`bridge` on `cni0`, `host-local` addresses: what flannel's CNI
//! configuration delegates to). No registry can be reached: the sandbox
//! (pause) image is built here from a static binary and imported. Pods are
//! made the way kubelet makes them, by CRI `RunPodSandbox`. Everything —
//! sandboxes, mounts, processes, files — goes when the [`Containerd`] is
//! dropped.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_cri::v1::{
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};

/// The sandbox image's name (never pulled: built and imported).
pub const PAUSE_IMAGE: &str = "netdrop.local/pause:1";

/// A containerd serving CRI in a node namespace.
pub struct Containerd {
    dir: PathBuf,
    daemon: Child,
    /// Its CRI socket.
    pub socket: String,
    sandboxes: Vec<String>,
}

/// The lab's containerds running in this process, and whether
/// `/run/containerd` was made by them (the shims' runc state and fifos go
/// there whatever the config says): the last one stopped removes it, if
/// empty.
static RUNNING: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

/// A running pod of the lab.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Its sandbox id.
    pub id: String,
    /// Its network namespace (a file under the runtime's state).
    pub netns: PathBuf,
    /// The address the CNI plugins gave it.
    pub ip: String,
}

/// A pod on the node's own network (`hostNetwork: true`) with one
/// container, as kubelet asks the runtime for one: what a DaemonSet's
/// pod spec says, in CRI's terms.
#[derive(Clone, Debug, Default)]
pub struct HostPodSpec {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub image: String,
    /// The container's `args` (the image's entrypoint stays).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `(container path, host path, read-only)`.
    pub mounts: Vec<(String, String, bool)>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    pub readonly_rootfs: bool,
    pub run_as_user: Option<i64>,
    /// `seccompProfile: Unconfined` (else the runtime's default).
    pub seccomp_unconfined: bool,
    /// `resources.limits.memory`, bytes (0: none).
    pub memory_limit: i64,
}

/// A running host-network pod of the lab.
#[derive(Clone, Debug)]
pub struct HostPod {
    pub sandbox: String,
    pub container: String,
    /// The container's log, as kubelet has the runtime write it (CRI log
    /// format: `<time> <stream> <P|F> <line>`): what `kubectl logs` reads.
    pub log: PathBuf,
}

/// What `RunPodSandbox` is given.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
}

impl Containerd {
    /// Starts containerd in namespace `node` (its pods on `cni0`, addresses
    /// from `subnet`), its files under a new directory named after `node`.
    pub fn start(node: &str, subnet: &str) -> anyhow::Result<Self> {
        let dir = dir_of(node);
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["root", "state", "net.d", "ipam", "image"] {
            std::fs::create_dir_all(dir.join(d)).with_context(|| format!("creating {d}"))?;
        }
        let socket = dir.join("containerd.sock").display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Pods' namespaces under this containerd's state, not /run/netns.
  netns_mounts_under_state_dir = true
  # This machine lets no process lower its oom_score_adj below its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{netd}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            netd = dir.join("net.d").display(),
        );
        std::fs::write(dir.join("config.toml"), config)?;
        let cni = format!(
            r#"{{"cniVersion":"0.4.0","name":"cbr0","plugins":[{{"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{ipam}"}}}}]}}"#,
            ipam = dir.join("ipam").display()
        );
        std::fs::write(dir.join("net.d/10-bridge.conflist"), cni)?;
        build_pause_image(&dir.join("image"))?;
        let run_dir_new = !Path::new("/run/containerd").exists();
        // The stream server binds 127.0.0.1.
        super::run("ip", &["-n", node, "link", "set", "lo", "up"])?;
        let daemon = spawn_daemon(node, &dir)?;
        let me = Self {
            dir,
            daemon,
            socket,
            sandboxes: Vec::new(),
        };
        if let Ok(mut r) = RUNNING.lock() {
            if r.0 == 0 {
                r.1 = run_dir_new;
            }
            r.0 += 1;
        }
        me.wait_listening()?;
        let image = me.dir.join("image/pause.tar");
        // A freshly started containerd now and then fails an import with
        // "content digest … not found" (seen once in CI, in one start of
        // many): the import is tried again, up to three times.
        let mut tries = 0;
        while let Err(e) = me.import_image(&image, PAUSE_IMAGE) {
            tries += 1;
            if tries == 3 {
                bail!("{e:#} (3 tries)");
            }
            log::debug!("{e:#}; trying again");
            std::thread::sleep(Duration::from_millis(500));
        }
        // The CRI plugin answers once its CNI configuration is loaded.
        me.wait_ready()?;
        Ok(me)
    }

    /// Runs `f` with a CRI client, on a thread of its own with its own
    /// runtime: callers may be inside an async runtime (the demo) or not.
    fn client<T: Send>(
        &self,
        f: impl AsyncFnOnce(&mut RuntimeServiceClient<tonic::transport::Channel>) -> anyhow::Result<T>
        + Send,
    ) -> anyhow::Result<T> {
        // Dialled here, not through the agent's CRI client: the lab uses
        // the shared helpers only (ARCHITECTURE.md).
        let socket = self.socket.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let channel = tonic::transport::Endpoint::from_static("http://cri.invalid")
                        .connect_with_connector(tower::service_fn(move |_| {
                            let socket = socket.clone();
                            async move {
                                let s = tokio::net::UnixStream::connect(socket).await?;
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                            }
                        }))
                        .await?;
                    f(&mut RuntimeServiceClient::new(channel)).await
                })
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the CRI call panicked")))
        })
    }

    fn wait_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Path::new(&self.socket).exists() {
            if Instant::now() > deadline {
                bail!("containerd did not listen on {}: see its log", self.socket);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.client(async |c| {
                let s = c
                    .status(k8s_cri::v1::StatusRequest { verbose: false })
                    .await?
                    .into_inner();
                Ok(s.status.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .all(|c| c.status || c.r#type != "NetworkReady")
                }))
            });
            if let Ok(true) = ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd's CRI plugin is not ready: {ready:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A pod, as kubelet makes one.
    pub fn run_pod(&mut self, pod: &PodSpec<'_>) -> anyhow::Result<Pod> {
        let before = self.pod_netns();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.into(),
                uid: format!("{}-{}-uid", pod.namespace, pod.name),
                namespace: pod.namespace.into(),
                attempt: 0,
            }),
            hostname: pod.name.into(),
            labels: pod
                .labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain([
                    ("io.kubernetes.pod.name".into(), pod.name.into()),
                    ("io.kubernetes.pod.namespace".into(), pod.namespace.into()),
                ])
                .collect::<HashMap<_, _>>(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let id = self.client(async |c| {
            Ok(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
        })?;
        self.sandboxes.push(id.clone());
        let netns = self
            .pod_netns()
            .into_iter()
            .find(|n| !before.contains(n))
            .with_context(|| {
                format!(
                    "pod {}/{}: no new network namespace",
                    pod.namespace, pod.name
                )
            })?;
        let ip = self.client(async |c| {
            let status = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status;
            Ok(status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default())
        })?;
        if ip.is_empty() {
            bail!("pod {}/{} got no address", pod.namespace, pod.name);
        }
        Ok(Pod { id, netns, ip })
    }

    /// Imports an OCI archive under `name` (`ctr images import`), as a
    /// node that loaded the image would have it.
    pub fn import_image(&self, archive: &Path, name: &str) -> anyhow::Result<()> {
        let out = Command::new("ctr")
            .args([
                "--address",
                &self.socket,
                "-n",
                "k8s.io",
                "images",
                "import",
            ])
            .args(["--index-name", name])
            .arg(archive)
            .output()
            .context("running ctr")?;
        if !out.status.success() {
            bail!(
                "ctr images import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A pod on the node's network with its one container started, made
    /// as kubelet makes it: `RunPodSandbox` (host network), then
    /// `CreateContainer` and `StartContainer`.
    pub fn run_host_pod(&mut self, spec: &HostPodSpec) -> anyhow::Result<HostPod> {
        use k8s_cri::v1::{
            Capability, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec,
            Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
            LinuxContainerSecurityContext, LinuxSandboxSecurityContext, Mount, NamespaceMode,
            NamespaceOption, SecurityProfile, StartContainerRequest, security_profile::ProfileType,
        };
        let logs = self
            .dir
            .join("logs")
            .join(format!("{}_{}", spec.namespace, spec.name));
        std::fs::create_dir_all(&logs).context("creating the pod's log directory")?;
        let host_network = NamespaceOption {
            network: NamespaceMode::Node as i32,
            pid: NamespaceMode::Container as i32,
            ipc: NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.clone(),
                uid: format!("{}-{}-uid", spec.namespace, spec.name),
                namespace: spec.namespace.clone(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            labels: [
                ("io.kubernetes.pod.name".to_owned(), spec.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    spec.namespace.clone(),
                ),
            ]
            .into_iter()
            .collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let log_path = format!("{}/0.log", spec.container);
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.container.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.clone(),
                ..Default::default()
            }),
            args: spec.args.clone(),
            envs: spec
                .env
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            mounts: spec
                .mounts
                .iter()
                .map(|(c, h, ro)| Mount {
                    container_path: c.clone(),
                    host_path: h.clone(),
                    readonly: *ro,
                    ..Default::default()
                })
                .collect(),
            log_path: log_path.clone(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: spec.memory_limit,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: spec.cap_add.clone(),
                        drop_capabilities: spec.cap_drop.clone(),
                        ..Default::default()
                    }),
                    privileged: spec.privileged,
                    namespace_options: Some(host_network),
                    run_as_user: spec.run_as_user.map(|value| Int64Value { value }),
                    readonly_rootfs: spec.readonly_rootfs,
                    no_new_privs: spec.no_new_privs,
                    seccomp: Some(SecurityProfile {
                        profile_type: if spec.seccomp_unconfined {
                            ProfileType::Unconfined as i32
                        } else {
                            ProfileType::RuntimeDefault as i32
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let sandbox_config = sandbox.clone();
        let sandbox_id = self.client(async |c| {
            Ok(c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
        })?;
        self.sandboxes.push(sandbox_id.clone());
        let container_id = self.client(async |c| {
            let id = c
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.clone(),
                    config: Some(container),
                    sandbox_config: Some(sandbox_config),
                })
                .await?
                .into_inner()
                .container_id;
            c.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
            Ok(id)
        })?;
        Ok(HostPod {
            sandbox: sandbox_id,
            container: container_id,
            log: logs.join(log_path),
        })
    }

    /// Stops a host-network pod as kubelet deletes one: its container
    /// gets SIGTERM and `grace` seconds before SIGKILL, then the sandbox
    /// goes.
    pub fn delete_host_pod(&mut self, pod: &HostPod, grace: i64) -> anyhow::Result<()> {
        let id = pod.container.clone();
        self.client(async |c| {
            c.stop_container(k8s_cri::v1::StopContainerRequest {
                container_id: id,
                timeout: grace,
            })
            .await?;
            Ok(())
        })?;
        self.remove_sandbox(&pod.sandbox)
    }

    /// Whether a container is running, and its exit code once it is not.
    pub fn container_state(&self, id: &str) -> anyhow::Result<(bool, i32)> {
        let id = id.to_owned();
        self.client(async |c| {
            let s = c
                .container_status(k8s_cri::v1::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .context("no container status")?;
            Ok((
                s.state == k8s_cri::v1::ContainerState::ContainerRunning as i32,
                s.exit_code,
            ))
        })
    }

    /// A running container's main process, as the runtime reports it.
    pub fn container_pid(&self, id: &str) -> anyhow::Result<u32> {
        let id = id.to_owned();
        let info = self.client(async |c| {
            Ok(c.container_status(k8s_cri::v1::ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await?
            .into_inner()
            .info)
        })?;
        let v: serde_json::Value = serde_json::from_str(
            info.get("info")
                .context("the runtime reported no container info")?,
        )
        .context("the runtime's container info")?;
        v["pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .map(|p| p as u32)
            .context("the runtime reported no pid")
    }

    /// The directory holding this containerd's socket: what a node's
    /// `/run/containerd` is to a pod that mounts it.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The network namespaces of the running pods (files under this
    /// containerd's state), for `nsenter --net=`.
    pub fn pod_netns(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("state/io.containerd.grpc.v1.cri/netns"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Stops and removes a pod (its address goes back to host-local).
    pub fn remove_pod(&mut self, pod: &Pod) -> anyhow::Result<()> {
        self.remove_sandbox(&pod.id)
    }

    fn remove_sandbox(&mut self, id: &str) -> anyhow::Result<()> {
        let id = id.to_owned();
        self.sandboxes.retain(|s| *s != id);
        self.client(async |c| {
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await?;
            Ok(())
        })
    }

    /// Kills containerd with SIGKILL (its pods' shims live on) and leaves
    /// its socket file behind, stale: a runtime that crashed. `restart`
    /// brings it back.
    pub fn crash(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }

    /// Kills containerd (not its pods) and starts it again on the same
    /// state: what an operator's `systemctl restart containerd` does.
    pub fn restart(&mut self, node: &str) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the daemon this struct started.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.daemon = spawn_daemon(node, &self.dir)?;
        self.wait_listening()?;
        self.wait_ready()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.sandboxes.clone() {
            let _ = self.remove_sandbox(&id);
        }
        // SAFETY: kill(2) on the daemon this struct started.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims outlive the daemon: they run in the node namespace, which
        // the lab stops; any mount left under the directory goes now.
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(mut r) = RUNNING.lock() {
            r.0 = r.0.saturating_sub(1);
            if r.0 == 0 && r.1 {
                remove_empty_dirs(Path::new("/run/containerd"));
            }
        }
    }
}

/// What a containerd of node namespace `node` left when its run was killed
/// (mounts and files under its directory): unmounted and removed.
pub fn sweep(node: &str) {
    let dir = dir_of(node);
    if dir.exists() {
        unmount_under(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The directory of node `node`'s containerd.
fn dir_of(node: &str) -> PathBuf {
    std::env::temp_dir().join(format!("netdrop-ctd-{node}"))
}

/// Removes `dir` and the directories under it, if no file is left in them.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// containerd on `dir`'s configuration in namespace `node`, its log
/// appended to `dir/containerd.log`. nsenter, not `ip netns exec`: that
/// remounts /sys, hiding the cgroups runc needs. In a process group of its
/// own: a Ctrl-C at the terminal goes to the demo, which stops the pods
/// and then the daemon, not to the daemon first.
fn spawn_daemon(node: &str, dir: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))?;
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .args(["containerd", "--config"])
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting containerd")
}

/// Unmounts everything mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).output();
    }
}

/// The pause image, as an OCI layout tarball (`image/pause.tar`): one
/// layer holding a static `/pause` built here from a few lines of C.
fn build_pause_image(dir: &Path) -> anyhow::Result<()> {
    let sha256_hex = |bytes: &[u8]| -> anyhow::Result<String> {
        use sha2::Digest as _;
        Ok(sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    };
    let src = dir.join("pause.c");
    std::fs::write(
        &src,
        "#include <signal.h>\n#include <unistd.h>\nstatic void bye(int s) { (void)s; _exit(0); }\nint main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }\n",
    )?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(rootfs.join("pause"))
        .arg(&src)
        .output()
        .context("running cc (gcc and libc6-dev build the pause binary)")?;
    if !out.status.success() {
        bail!("building pause: {}", String::from_utf8_lossy(&out.stderr));
    }
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let tar = |out: &Path, cwd: &Path, files: &[&str]| -> anyhow::Result<()> {
        let o = Command::new("tar")
            .arg("-cf")
            .arg(out)
            .arg("-C")
            .arg(cwd)
            .args(["--owner=0", "--group=0", "--numeric-owner"])
            // The same bytes every build: an image's digests do not
            // depend on when it was built.
            .args(["--mtime=@0", "--sort=name"])
            .args(files)
            .output()?;
        if !o.status.success() {
            bail!("tar: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    let blob = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let digest = sha256_hex(bytes)?;
        std::fs::write(blobs.join(&digest), bytes)?;
        Ok((digest, bytes.len()))
    };
    let layer_tar = dir.join("layer.tar");
    tar(&layer_tar, &rootfs, &["pause"])?;
    let (layer, layer_size) = blob(&std::fs::read(&layer_tar)?)?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/pause"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer}"]}}}}"#
    );
    let (config, config_size) = blob(config.as_bytes())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":{layer_size}}}]}}"#
    );
    let (manifest, manifest_size) = blob(manifest.as_bytes())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{PAUSE_IMAGE}"}}}}]}}"#
        ),
    )?;
    tar(
        &dir.join("pause.tar"),
        &layout,
        &["oci-layout", "index.json", "blobs"],
    )
}
