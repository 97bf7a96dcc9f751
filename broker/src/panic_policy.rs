//! What a panic does in the corebus process: a panic is a bug, and a node that goes on with one
//! shard (or its consensus node) dead would keep its listener open and `/ready` answering 200
//! while every request for that shard's partitions fails. So any panic, on any thread, ends
//! the process at once, after one log line naming the thread, the place and the message; the
//! supervisor (systemd, Kubernetes: see deploy/) restarts it and recovery replays the logs.
//! Nothing acknowledged is lost by stopping this way: an acknowledgment is only sent once the
//! data is as durable as `acks` asked (the same guarantee SIGKILL relies on).
//!
//! Owns the panic hook only. Never: tries to carry on after a panic; runs anything but the log
//! line and the abort in the hook (the process is in an unknown state).

use std::panic::PanicHookInfo;

/// Installs the hook; call once, after logging is set up. A supervisor then sees the process
/// end by SIGABRT.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let (thread, at, message) = describe(info);
        tracing::error!(
            thread,
            at,
            panic = message,
            "corebus hit a bug (a panic) and stops at once; a supervisor restarts it and \
             recovery replays the logs (nothing acknowledged is lost)"
        );
        // The line above is already written: logging writes to stderr synchronously.
        std::process::abort();
    }));
}

/// The panicking thread's name, the source location and the message of `info`.
fn describe(info: &PanicHookInfo<'_>) -> (String, String, String) {
    let thread = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    let at = info
        .location()
        .map_or_else(|| "an unknown place".to_string(), |l| l.to_string());
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    (thread, at, message)
}
