//! Namespaces a killed run left behind (and what still runs in them) are
//! swept at the start of the next privileged run; a live lab is not.

use std::{process::Command, time::Duration};

use netdrop_tests::{Lab, require_root};

#[test]
fn leftovers_of_a_dead_run_are_swept_and_live_labs_kept() {
    require_root!();
    // A lab namespace whose owner pid cannot exist (above any pid_max).
    let dead = "ndsw.4294967x0-node";
    let mut live_lab = Lab::new("swl");
    let live_ns = live_lab.netns("node").unwrap();
    let st = Command::new("ip")
        .args(["netns", "add", dead])
        .status()
        .unwrap();
    assert!(st.success());
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", dead, "sleep", "300"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // What the dead run's containerd on that node left: a mount and files.
    let ctd_dir = std::env::temp_dir().join(format!("netdrop-ctd-{dead}"));
    let mnt = ctd_dir.join("state/shm");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );

    let swept = Lab::sweep_leftovers();
    let ctd_left = ctd_dir.exists();
    if ctd_left {
        let _ = Command::new("umount").arg(&mnt).status();
        let _ = std::fs::remove_dir_all(&ctd_dir);
    }

    let list = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // Clean up before asserting, whatever happened.
    let _ = Command::new("ip").args(["netns", "del", dead]).status();
    let exited = (0..50).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        sleeper.try_wait().unwrap()
    });
    if exited.is_none() {
        let _ = sleeper.kill();
    }
    assert_eq!(swept, [dead.to_owned()], "{list}");
    assert!(!list.lines().any(|l| l.starts_with(dead)), "{list}");
    assert!(list.lines().any(|l| l.starts_with(&live_ns)), "{list}");
    assert!(
        exited.is_some(),
        "the process left in the namespace was stopped"
    );
    assert!(!ctd_left, "the dead run's containerd files were removed");
}
