//! The panic policy (`corebus_broker::panic_policy`): a panic on any thread of the process
//! logs one line naming the thread, the place and the message, and aborts the whole process
//! (a shard that died must not leave the node up and "ready"). Runs itself as a child process,
//! since the parent would abort too.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

const CHILD: &str = "COREBUS_PANIC_POLICY_CHILD";
const SIGABRT: i32 = 6;

#[test]
fn a_panic_on_any_thread_aborts_the_process_after_one_log_line() {
    if std::env::var_os(CHILD).is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        corebus_broker::panic_policy::install();
        let _ = std::thread::Builder::new()
            .name("shard-1".into())
            .spawn(|| panic!("a deliberate bug"))
            .map(|t| t.join());
        // Never reached: the hook aborted the process while the thread panicked.
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_on_any_thread_aborts_the_process_after_one_log_line",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{:?}\n{stderr}",
        out.status
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("stops at once"))
        .unwrap_or_else(|| panic!("no log line about the panic in:\n{stderr}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("shard-1"), "{line}");
    assert!(line.contains("a deliberate bug"), "{line}");
    assert!(line.contains("panic_policy.rs"), "the place: {line}");
}
