//! The tests' reader of `netdrop watch --output json` fails a test on any
//! line that is not a JSON record, instead of losing it in a thread: shown
//! here with a stand-in for netdrop (a shell script), no privileges needed.

use std::{io::Write as _, os::unix::fs::PermissionsExt as _};

use netdrop_tests::Watch;

#[test]
fn a_line_that_is_not_a_record_fails_the_watch() {
    let dir = std::env::temp_dir().join(format!("netdrop-reader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("fake-netdrop");
    let mut f = std::fs::File::create(&script).unwrap();
    writeln!(
        f,
        "#!/bin/sh\ntrap 'kill $!; exit 0' TERM\n\
         echo 'netdrop: watching drops on x; metrics on http://127.0.0.1:1/metrics' >&2\n\
         echo '{{\"kind\":\"drop\",\"packets\":1}}'\n\
         echo 'thread main panicked'\n\
         sleep 30 >/dev/null 2>&1 &\nwait"
    )
    .unwrap();
    drop(f);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let w = Watch::start_via(&[script.to_str().unwrap()], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    let w = w.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = w.stop().unwrap_err().to_string();
    assert!(
        err.contains("not JSON records") && err.contains("thread main panicked"),
        "{err}"
    );
}
