//! Debian's real dockerd for tests, in a lab namespace: its own
//! directories and socket, stopped as systemd stops it.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::Lab;

/// dockerd's own directories, removed on drop (after the lab, which stops
/// dockerd, is dropped: declare it first).
pub struct DockerDirs(pub PathBuf);

impl Drop for DockerDirs {
    fn drop(&mut self) {
        // dockerd makes its data root a mount point of its own: unmount
        // whatever is under the directory (deepest first), then remove it.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&*self.0.to_string_lossy()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let Ok(c) = std::ffi::CString::new(p) else {
                continue;
            };
            // SAFETY: umount2 of a path this test's dockerd mounted.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dockerd, stopped politely (SIGTERM, as systemd would) when dropped.
pub struct Dockerd {
    child: std::process::Child,
    /// Its API socket.
    pub socket: String,
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the dockerd this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts dockerd in namespace `node` (through `nsenter --net`, which
/// keeps the host's /sys and cgroups that `ip netns exec` would hide),
/// with its own root, state, socket and pid file, and `docker0` on a
/// TEST-NET range. Waits until it has set up its iptables rules.
pub fn start_dockerd(lab: &Lab, node: &str, dirs: &DockerDirs) -> Dockerd {
    let d = |p: &str| dirs.0.join(p).to_string_lossy().into_owned();
    std::fs::create_dir_all(&dirs.0).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{node}"))
        .args([
            "dockerd",
            "--data-root",
            &d("data"),
            "--exec-root",
            &d("exec"),
            "--pidfile",
            &d("docker.pid"),
            "-H",
            &format!("unix://{}", d("docker.sock")),
            "--bip",
            "198.51.100.1/24",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dockerd (installed by cargo xtask setup)");
    // Stopped if it never gets ready, too.
    let child = Dockerd {
        child,
        socket: d("docker.sock"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = lab.iptables_save(node).unwrap_or_default();
        if rules.contains(":FORWARD DROP")
            && rules.contains("-A FORWARD -j DOCKER-USER")
            && child.cli(&["info"]).is_ok_and(|o| o.status.success())
        {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "dockerd did not set up its rules:\n{rules}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Dockerd {
    /// `docker ARGS` against this dockerd.
    pub fn cli(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket))
            .args(args)
            .output()
    }
}
