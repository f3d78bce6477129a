//! `files::remove_pending`, which the CLI's SIGINT/SIGTERM handler calls, in a test binary of its
//! own: it removes every temporary file of the process, so no other test may write beside it.

use sparkle_std::files::{remove_pending, write_atomic};

/// What a signal handler calls: the temporary file of a write in progress disappears, and that
/// write then fails without touching its target.
#[test]
fn pending_temporaries_are_removed_on_request() {
    let d = std::env::temp_dir().join(format!("sparkle-pending-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let target = d.join("out.bin");
    let (started, wait) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let t = {
        let target = target.clone();
        std::thread::spawn(move || {
            write_atomic(&target, |w| {
                w.write_all(b"half")?;
                started.0.send(()).unwrap();
                wait.1.recv().unwrap();
                w.write_all(b" and the rest")
            })
        })
    };
    started.1.recv().unwrap();
    let tmp: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
    assert_eq!(tmp.len(), 1, "one temporary file while writing");
    remove_pending();
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "remove_pending left the temporary file");
    wait.0.send(()).unwrap();
    assert!(t.join().unwrap().is_err(), "a write whose temporary file vanished must fail");
    assert!(!target.exists());
    std::fs::remove_dir_all(&d).unwrap();
}
